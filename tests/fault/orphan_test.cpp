// No child outlives a dead parent: SIGKILL a parent and every child it started, under every start method, exits.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

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
