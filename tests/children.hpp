// Test helper shared by the integration tests that start several processes.
#pragma once

#include <catch2/catch.hpp>
#include <mpx/process.hpp>

#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
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
// With `own_process_group`, the session leads a process group of its own (its pid is the group's id), which a test can
// signal as a terminal's Ctrl-C does without reaching the test runner.
inline pid_t spawn_session(std::string test_name, const std::vector<std::string>& env, int close_fd,
                           bool own_process_group = false) {
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
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  if (own_process_group) {
    posix_spawnattr_setpgroup(&attributes, 0);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  }
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, &attributes, argv.data(), envp.data());
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

// Reads lines from `fd` until `count` have come or EOF (what a helper session reports), without their newlines.
inline std::vector<std::string> read_lines(int fd, std::size_t count) {
  std::vector<std::string> lines;
  std::string text;
  char buffer[512];
  while (lines.size() < count) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    for (std::size_t end; lines.size() < count && (end = text.find('\n')) != std::string::npos;) {
      lines.push_back(text.substr(0, end));
      text.erase(0, end + 1);
    }
  }
  return lines;
}

// Runs `test_name` as its own root session (spawn_session) with `fd_variable`=<a pipe's write end> in its environment,
// and reads the first `count` lines it writes there (fewer if it ends first).
struct SessionReport {
  pid_t pid = 0;
  std::vector<std::string> lines;
};
inline SessionReport spawn_reporting_session(const std::string& test_name, const std::string& fd_variable,
                                             std::size_t count) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  SessionReport report;
  report.pid = spawn_session(test_name, {fd_variable + "=" + std::to_string(fds[1])}, fds[0]);
  ::close(fds[1]);
  report.lines = read_lines(fds[0], count);
  ::close(fds[0]);
  return report;
}

// Sets an environment variable for the scope (for the coordinator's or a Listener's reading of it).
struct ScopedEnv {
  std::string name;
  ScopedEnv(std::string n, const std::string& value) : name(std::move(n)) { ::setenv(name.c_str(), value.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
};

// A plain stream socket connected to a Listener's address ("tcp://127.0.0.1:port" or "ipc:///path"), for a test that
// plays a client that breaks the rules (says nothing, claims a huge message). The caller closes it.
inline int raw_connect(const std::string& address) {
  int fd = -1;
  if (address.starts_with("ipc://")) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    const std::string path = address.substr(6);
    REQUIRE(path.size() < sizeof un.sun_path);
    std::memcpy(un.sun_path, path.c_str(), path.size() + 1);
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&un), sizeof un) == 0);
    return fd;
  }
  REQUIRE(address.starts_with("tcp://127.0.0.1:"));
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&in), sizeof in) == 0);
  return fd;
}

// Reads and discards what arrives on `fd` until EOF; false if the other end has not closed it within `limit`.
inline bool eof_within(int fd, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    using std::chrono::milliseconds;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char sink[4096];
    const ssize_t n = ::read(fd, sink, sizeof sink);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  }
}

}  // namespace mpx_test
