// What the conformance files share: waiting on observable state with a deadline (CPython's
// assertReachesEventually / sleeping_retry), timing a call, options for a start method, a child's failing check,
// whether a pid is gone, and running a hidden test case as a program of its own.
#pragma once

#include "../children.hpp"

#include <mpx/mpx.hpp>

#include <chrono>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

namespace conformance {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

// Polls `pred` until it holds or `timeout` passes; returns its last value. The pause between polls only paces the
// check: what is awaited is the predicate's state, never the time.
template <class Pred>
bool wait_until(Pred pred, Seconds timeout = Seconds(30)) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// Python's TimingWrapper: how long the last call took, in seconds.
class Stopwatch {
 public:
  Stopwatch() : begin_(Clock::now()) {}
  void restart() { begin_ = Clock::now(); }
  double seconds() const { return Seconds(Clock::now() - begin_).count(); }

 private:
  Clock::time_point begin_;
};

inline mpx::ProcessOptions with(mpx::StartMethod method, std::optional<bool> daemon = std::nullopt,
                                std::string name = {}) {
  return mpx::ProcessOptions{std::move(name), daemon, method};
}

// The process state letter from /proc/<pid>/stat ('R', 'S', 'Z'...), or nullopt once the pid is gone.
inline std::optional<char> process_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  const auto paren = line.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos || paren + 2 >= line.size()) return std::nullopt;
  return line[paren + 2];
}

// Dead: reaped, or a zombie nobody has reaped yet.
inline bool pid_gone(pid_t pid) {
  const auto state = process_state(pid);
  return !state || *state == 'Z' || *state == 'X';
}

// A child's failed check: the exception ends it with exit code 1 (and prints `what` on its stderr).
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("child check failed: " + what);
}

// Runs the hidden test case `test_name` of this binary as a program of its own (a root session, with `env` added)
// and waits for it to end: its wait status, or nullopt if it did not end within `timeout` (then it is killed).
// CPython's assert_python_ok('-c', ...) for what happens when a program ends.
inline std::optional<int> run_program(const std::string& test_name, const std::vector<std::string>& env,
                                      Seconds timeout) {
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
