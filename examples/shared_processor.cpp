// Seed 000 (共享内存): a Process subclass that keeps its result in a Value and exposes it through a property, so the
// parent can read what the child computes:
//   class Processor(Process):
//       def __init__(self, idx): self._v = Value('d', 0.0) ...
//       @property
//       def v(self): return self._v.value
// The seed loops forever (and ends with a KeyboardInterrupt traceback from each child); this one prints two rounds
// and then terminates the children, which are daemons here so that nothing is left behind.
#include <mpx/mpx.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "py_format.hpp"

struct Processor : mpx::ProcessClass<Processor> {
  mpx::Value<double> v_;  // travels to the child with the object (MSGPACK_DEFINE below)
  int idx = 0;

  Processor() = default;
  explicit Processor(int idx) : v_(0.0), idx(idx) { set_daemon(true); }

  double v() const { return v_.value(); }  // the @property

  void run_calcul() {
    static thread_local std::mt19937 random{std::random_device{}()};
    const int a = std::uniform_int_distribution<int>(2, 10)(random);
    const int b = std::uniform_int_distribution<int>(2, 12)(random);
    v_.set(std::pow(a, b));  // self._v.value = a**b
  }

  void run() override {
    for (;;) {
      run_calcul();
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }

  MSGPACK_DEFINE(v_, idx);
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::vector<Processor> processes;
  processes.reserve(5);
  for (int i = 0; i < 5; ++i) {
    processes.emplace_back(i);
    processes.back().start();
  }
  for (int round = 0; round < 2; ++round) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    for (auto& p : processes) std::printf("get v: %s\n", py_float(p.v()).c_str());
    std::fflush(stdout);
  }
  for (auto& p : processes) p.terminate();
  for (auto& p : processes) p.join();
}
