// No child outlives a dead parent: SIGKILL a parent and every child it started, under every start method, exits.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "children.hpp"
#include "runtime/runtime.hpp"

using namespace std::chrono_literals;

namespace {

void sleep_forever() {
  for (;;) ::pause();
}

// Waits until `pid` has exited (not necessarily reaped by us); false if still alive after `limit`.
bool wait_gone(pid_t pid, std::chrono::seconds limit) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return true;  // already gone and reaped
  pollfd p{fd, POLLIN, 0};
  const int n = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(limit).count()));
  ::close(fd);
  return n == 1;
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

// The /dev/shm names that start with `prefix`.
std::vector<std::string> segments_named(const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix)) names.push_back(name);
  }
  return names;
}

}  // namespace

TEST_CASE("SIGKILL the parent: no child under any start method outlives it", "[fault]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mpx::ProcessOptions options;
  options.method = mpx::StartMethod::fork;
  options.name = "middle";
  mpx::Process middle(
      mpx::closure,
      [w = fds[1]] {
        std::vector<mpx::Process> kids;
        for (auto m : {mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn}) {
          mpx::Context ctx(m);
          kids.push_back(ctx.Process(sleep_forever));
          kids.back().start();
        }
        for (auto& k : kids) {
          const pid_t pid = k.pid();
          (void)!::write(w, &pid, sizeof pid);
        }
        sleep_forever();
      },
      options);
  middle.start();
  ::close(fds[1]);
  std::vector<pid_t> grandchildren(3);
  for (auto& pid : grandchildren) REQUIRE(::read(fds[0], &pid, sizeof pid) == sizeof pid);
  ::close(fds[0]);
  for (pid_t pid : grandchildren) CHECK(alive(pid));

  middle.kill();
  middle.join();
  CHECK(middle.exitcode() == -SIGKILL);
  for (pid_t pid : grandchildren) {
    INFO("grandchild " << pid);
    CHECK(wait_gone(pid, 30s));
  }
}

TEST_CASE("a daemon child is terminated when its parent exits; a non-daemon child is joined", "[fault]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mpx::ProcessOptions options;
  options.method = mpx::StartMethod::fork;
  mpx::Process parent(
      mpx::closure,
      [w = fds[1]] {
        mpx::ProcessOptions daemon_options;
        daemon_options.daemon = true;
        daemon_options.method = mpx::StartMethod::forkserver;
        mpx::Process daemon(daemon_options, sleep_forever);
        daemon.start();
        const pid_t pid = daemon.pid();
        (void)!::write(w, &pid, sizeof pid);
        // Returning ends this process: the runtime terminates the daemon child first, as Python does.
      },
      options);
  parent.start();
  ::close(fds[1]);
  pid_t daemon_pid = 0;
  REQUIRE(::read(fds[0], &daemon_pid, sizeof daemon_pid) == sizeof daemon_pid);
  ::close(fds[0]);
  CHECK(parent.join(60s));
  CHECK(parent.exitcode() == 0);
  CHECK(wait_gone(daemon_pid, 30s));
}

TEST_CASE("a daemonic process may not have children", "[fault]") {
  mpx::ProcessOptions options;
  options.daemon = true;
  options.method = mpx::StartMethod::fork;
  mpx::Process p(
      mpx::closure,
      [] {
        mpx::Process child(sleep_forever);
        try {
          child.start();
        } catch (const mpx::ProcessError&) {
          std::exit(3);
        }
        std::exit(4);
      },
      options);
  p.start();
  p.join();
  CHECK(p.exitcode() == 3);
}

// The helper, run only by name as its own root session: makes a Queue (its ring segment), a Value (a segment), and a
// tracked SharedMemory block with a chosen name (listed in the session directory), reports its session id, directory
// and the block's name, and waits to be killed.
TEST_CASE("session with files helper", "[.]") {
  const char* fd_text = std::getenv("MPX_ORPHAN_HELPER_FD");
  if (fd_text == nullptr) return;
  mpx::Queue<int> q(4);
  q.put(1);
  mpx::Value<std::int64_t> v(7);
  mpx::SharedMemory block("mpxtest-orphan-" + std::to_string(::getpid()), true, 4096);
  const auto& session = mpx::runtime::state().session;
  const std::string report = session.id + "\n" + session.directory + "\n" + block.name() + "\n";
  REQUIRE(::write(std::atoi(fd_text), report.data(), report.size()) == static_cast<ssize_t>(report.size()));
  sleep_forever();
}

TEST_CASE("SIGKILL a root: its session directory and shm segments are gone within moments", "[fault]") {
  const auto [root, lines] = mpx_test::spawn_reporting_session("session with files helper", "MPX_ORPHAN_HELPER_FD", 3);
  if (lines.size() < 3) ::kill(root, SIGKILL);
  ::waitpid(root, nullptr, lines.size() < 3 ? 0 : WNOHANG);
  REQUIRE(lines.size() == 3);
  const std::string& session_id = lines[0];
  const std::string& directory = lines[1];
  const std::string& block = lines[2];
  const std::string prefix = "mpx-" + session_id + "-";
  CHECK(std::filesystem::is_directory(directory));
  CHECK(segments_named(prefix).size() >= 2);  // the queue's ring and the Value's segment
  CHECK(std::filesystem::exists("/dev/shm/" + block));

  REQUIRE(::kill(root, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(root, &status, 0) == root);
  CHECK(WIFSIGNALED(status));
  // Nobody else starts an mpx program meanwhile; the files go within a second (2 s on a loaded machine).
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  auto gone = [&] {
    return !std::filesystem::exists(directory) && segments_named(prefix).empty() &&
           !std::filesystem::exists("/dev/shm/" + block);
  };
  while (!gone() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  CHECK_FALSE(std::filesystem::exists(directory));
  CHECK(segments_named(prefix).empty());
  CHECK_FALSE(std::filesystem::exists("/dev/shm/" + block));
  if (!gone()) {  // leave nothing behind even when the check failed
    ::shm_unlink(("/" + block).c_str());
    for (const auto& name : segments_named(prefix)) ::shm_unlink(("/" + name).c_str());
    std::filesystem::remove_all(directory);
  }
}
