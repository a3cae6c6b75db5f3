// Seed 000 (MapReduce): is_prime over PRIMES with ProcessPoolExecutor.map, then the same with Pool.map, which also
// shows a progress bar through map's progress callback (what tqdm users expect).
#include <mpx/mpx.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <vector>

const std::vector<std::int64_t> PRIMES = {112272535095293, 112582705942171, 112272535095293,
                                          115280095190773, 115797848077099, 1099726899285419};

bool is_prime(std::int64_t n) {
  if (n % 2 == 0) return false;
  const auto sqrt_n = static_cast<std::int64_t>(std::floor(std::sqrt(static_cast<double>(n))));
  for (std::int64_t i = 3; i < sqrt_n + 1; i += 2) {
    if (n % i == 0) return false;
  }
  return true;
}

void print(const std::vector<bool>& values) {
  std::cout << "[";
  for (std::size_t i = 0; i < values.size(); ++i) std::cout << (i ? ", " : "") << (values[i] ? "True" : "False");
  std::cout << "]\n";
}

std::vector<bool> process_pool_prime(int workers = 4) {
  mpx::ProcessPoolExecutor executor(workers);
  std::vector<bool> total;
  for (bool prime : executor.map(is_prime, PRIMES)) total.push_back(prime);
  return total;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  print(process_pool_prime());

  mpx::Pool pool(4);
  auto bar = [](std::size_t done, std::size_t total) {
    std::fprintf(stderr, "\r[%-*s] %zu/%zu", static_cast<int>(total), std::string(done, '#').c_str(), done, total);
    if (done == total) std::fprintf(stderr, "\n");
  };
  auto primes = pool.map(is_prime, PRIMES, 1, bar);
  print(std::vector<bool>(primes.begin(), primes.end()));
}
