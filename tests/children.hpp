// Test helper shared by the integration tests that start several processes.
#pragma once

#include <catch2/catch.hpp>
#include <mpx/process.hpp>

#include <chrono>
#include <deque>
#include <utility>

namespace mpx_test {

// Every process a test starts, killed and joined when the test ends, on failure paths too: a child left blocked would
// otherwise be joined at exit.
struct Children {
  std::deque<mpx::Process> procs;  // a deque: start() returns references that later starts keep valid

  template <class... A>
  mpx::Process& start(A&&... args) {
    procs.emplace_back(std::forward<A>(args)...);
    procs.back().start();
    return procs.back();
  }
  // Joins every child and checks that each exited with `code`.
  void join_all(int code = 0) {
    for (auto& p : procs) {
      REQUIRE(p.join(std::chrono::seconds(60)));
      CHECK(p.exitcode() == code);
    }
  }
  ~Children() {
    for (auto& p : procs) {
      if (p.pid() == 0) continue;
      if (p.is_alive()) p.kill();
      p.join();
    }
  }
};

}  // namespace mpx_test
