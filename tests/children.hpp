// Test helper shared by the integration tests that start several processes.
#pragma once

#include <catch2/catch.hpp>
#include <mpx/process.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <spawn.h>
#include <unistd.h>

extern char** environ;

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

// Runs this test binary again as a root session of its own (its own coordinator), running only the hidden test case
// `test_name`: with this environment minus its MPX_* variables, plus `env`; `close_fd` (if not -1) is closed in it.
inline pid_t spawn_session(std::string test_name, const std::vector<std::string>& env, int close_fd) {
  std::vector<std::string> vars;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "MPX_", 4) != 0) vars.emplace_back(*e);
  }
  vars.insert(vars.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<char*> argv{exe.data(), test_name.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (close_fd != -1) posix_spawn_file_actions_addclose(&actions, close_fd);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

// Sets an environment variable for the scope (for the coordinator's or a Listener's reading of it).
struct ScopedEnv {
  std::string name;
  ScopedEnv(std::string n, const std::string& value) : name(std::move(n)) { ::setenv(name.c_str(), value.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
};

}  // namespace mpx_test
