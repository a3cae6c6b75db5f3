// What the conformance tests share: a start method as Process options, a child's failing check, and waiting on
// observable state with a deadline (CPython's assertReachesEventually / sleeping_retry).
#pragma once

#include <mpx/process.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

namespace mpx_conformance {

inline mpx::ProcessOptions with(mpx::StartMethod method) { return mpx::ProcessOptions{"", std::nullopt, method}; }

// A child's failed check: the exception ends it with exit code 1 (and prints `what` on its stderr).
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("child check failed: " + what);
}

// Polls `predicate` until it holds or `timeout` passes; returns its last value.
inline bool wait_until(const std::function<bool()>& predicate,
                       std::chrono::duration<double> timeout = std::chrono::seconds(30)) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  while (!predicate()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace mpx_conformance
