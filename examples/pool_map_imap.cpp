// Seed 000 (map_async): map, imap_unordered, apply_async(f, 10).get(timeout=1) and apply_async(sleep, 10).get(timeout=1),
// which raises TimeoutError.
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <ranges>
#include <thread>

int f(int x) { return x * x; }

void sleep_seconds(int seconds) { std::this_thread::sleep_for(std::chrono::seconds(seconds)); }

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  using namespace std::chrono_literals;

  mpx::Pool pool(4);  // start 4 worker processes
  std::cout << "map:  [";
  const auto squares = pool.map(f, std::views::iota(0, 10));
  for (std::size_t i = 0; i < squares.size(); ++i) std::cout << (i ? ", " : "") << squares[i];
  std::cout << "]\n";
  std::cout << "imap:\n";
  for (int i : pool.imap_unordered(f, std::views::iota(0, 10))) std::cout << i << "\n";

  auto res = pool.apply_async(f, 10);  // evaluate "f(10)" asynchronously
  std::cout << "apply: " << res.get(1s) << "\n";  // prints "100"

  auto nap = pool.apply_async(sleep_seconds, 10);  // make worker sleep for 10 secs
  try {
    nap.get(1s);  // raises mpx::TimeoutError
  } catch (const mpx::TimeoutError& e) {
    std::cout << "TimeoutError: " << e.what() << "\n";
  }
  // Leaving the scope terminates the pool, as Python's `with Pool()` does: the sleeping worker does not hold us up.
}
