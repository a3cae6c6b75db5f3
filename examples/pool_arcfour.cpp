// Seed 000 (concurrent.futures): arcfour (RC4) encryption of 12 jobs with ProcessPoolExecutor and as_completed, with
// 1, 2 and 4 workers, printing each job's size as it completes and the elapsed time for each worker count.
#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using Bytes = std::vector<std::uint8_t>;

// rc4算法
Bytes arcfour(const std::string& key, const Bytes& in_bytes, int loops = 20) {
  std::uint8_t kbox[256];  // create key box
  for (std::size_t i = 0; i < key.size(); ++i) kbox[i] = static_cast<std::uint8_t>(key[i]);
  for (std::size_t i = key.size(); i < 256; ++i) kbox[i] = kbox[i - key.size()];  // repeat until full
  std::uint8_t sbox[256];  // [1] initialize sbox
  for (int i = 0; i < 256; ++i) sbox[i] = static_cast<std::uint8_t>(i);
  // repeat sbox mixing loop, as recommended in CipherSaber-2
  unsigned j = 0;
  for (int k = 0; k < loops; ++k) {
    for (int i = 0; i < 256; ++i) {
      j = (j + sbox[i] + kbox[i]) % 256;
      std::swap(sbox[i], sbox[j]);
    }
  }
  // main loop
  unsigned i = 0;
  j = 0;
  Bytes out_bytes;
  out_bytes.reserve(in_bytes.size());
  for (std::uint8_t car : in_bytes) {
    i = (i + 1) % 256;
    j = (j + sbox[i]) % 256;  // [2] shuffle sbox
    std::swap(sbox[i], sbox[j]);
    const unsigned t = (sbox[i] + sbox[j]) % 256u;  // [3] compute t
    out_bytes.push_back(static_cast<std::uint8_t>(car ^ sbox[t]));
  }
  return out_bytes;
}

int crypto_process(int size, std::string key) {
  std::mt19937 random(static_cast<unsigned>(size));
  Bytes in_text(static_cast<std::size_t>(size));
  for (auto& b : in_text) b = static_cast<std::uint8_t>(random() % 256);
  // The C++ arcfour is about 50 times faster than Python's: 40 rounds make each job long enough to measure.
  for (int round = 0; round < 40; ++round) {
    Bytes cypher_text = arcfour(key, in_text);
    Bytes out_text = arcfour(key, cypher_text);
    if (in_text != out_text) throw std::runtime_error("Failed arcfour_test");
  }
  return size;
}

void run(int workers) {
  const int jobs = 12;
  const int size = 1 << 18;
  const std::string key = "'Twas brillig, and the slithy toves\nDid gyre";
  const auto t0 = std::chrono::steady_clock::now();
  {
    mpx::ProcessPoolExecutor executor(workers);
    std::vector<mpx::Future<int>> to_do;
    for (int i = jobs; i > 0; --i) {
      const int job_size = size + static_cast<int>(size / double(jobs) * (i - jobs / 2.0));
      to_do.push_back(executor.submit(crypto_process, job_size, key));
    }
    for (const auto& future : mpx::as_completed(to_do)) {
      std::printf("%.1f KB\n", future.result() / 1024.0);
      std::fflush(stdout);
    }
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d workers, elapsed time: %.2fs\n", workers, elapsed);
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  for (int workers : {1, 2, 4}) run(workers);
}
