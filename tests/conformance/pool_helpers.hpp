// Helpers shared by the Pool and ProcessPoolExecutor conformance tests (pool_test.cpp, executor_test.cpp).
#pragma once

#include "../children.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>

namespace conformance {

// Polls `done` until it holds or `timeout` passes; the result of the last poll.
template <class Pred>
bool wait_until(Pred done, std::chrono::duration<double> timeout = std::chrono::seconds(60)) {
  using Clock = std::chrono::steady_clock;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  while (!done()) {
    if (Clock::now() >= end) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Runs the hidden test case `test_name` of this binary as a program of its own (a root session, with `env` added)
// and waits for it to end: its wait status, or nullopt if it did not end within `timeout` (then it is killed).
// CPython's assert_python_ok('-c', ...) for what happens when a program ends.
inline std::optional<int> run_program(const std::string& test_name, const std::vector<std::string>& env,
                                      std::chrono::duration<double> timeout) {
  const pid_t pid = mpx_test::spawn_session(test_name, env, -1);
  int status = 0;
  if (!wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return std::nullopt;
  }
  return status;
}

}  // namespace conformance
