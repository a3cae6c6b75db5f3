// An `exec` actor for tests/integration/topology_test.cpp. Roles (argv[1]):
//   wait [CODE]            runs until SIGTERM (exit 0) or SIGUSR1 (exit CODE, default 0)
//   stubborn               ignores SIGTERM: only SIGKILL ends it
//   exit CODE              exits with CODE at once
//   relay                  gets a list from queue "mid", appends "exec", puts it on queue "out", exits 0
//   where CODE             puts [its node, its pid] on queue "out", exits CODE
//   chatter COUNT          prints whether stdout is a terminal, then COUNT numbered lines to stdout, about 20 ms
//                          apart (and one to stderr); exits 0
//   late                   as wait, the first time; started again (after a restart), it hangs before mpx::init
//   pool                   applies a function of this program on the topology pool "p", which runs another
//                          program; puts [error message, 0, false] (or ["no error", ...]) on queue "results"
// Every role first appends "LABEL PID" to the file named by $TOPOLOGY_TEST_LOG, before mpx::init: that is before
// the actor is ready, so the file shows the order in which the supervisor started the actors.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <mpx/mpx.hpp>

namespace {
long negate(int x) { return -x; }

// Long enough that a status line drawn over it would show.
std::string chatter_line(const std::string& name, int i) {
  return "chatter " + name + " line " + std::to_string(i) + " " + std::string(50, static_cast<char>('a' + i % 26));
}
}  // namespace

int main(int argc, char** argv) {
  if (const char* log = std::getenv("TOPOLOGY_TEST_LOG")) {
    const int fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
      const std::string line = std::string(argc > 2 ? argv[2] : "-") + " " + std::to_string(::getpid()) + "\n";
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
  }
  // Blocked before mpx::init creates any thread, so that every thread inherits the mask and sigwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  const std::string role = argc > 1 ? argv[1] : "";
  if (role == "late") {
    // The first start leaves a mark beside the log; a restart finds it and never becomes ready.
    const std::string mark = std::string(std::getenv("TOPOLOGY_TEST_LOG")) + ".late";
    if (::access(mark.c_str(), F_OK) == 0) {
      for (;;) ::pause();
    }
    ::close(::open(mark.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  }
  if (role == "wait" || role == "late") ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  if (role == "stubborn") std::signal(SIGTERM, SIG_IGN);
  mpx::init(argc, argv);
  if (role == "wait" || role == "late") {
    int sig = 0;
    ::sigwait(&set, &sig);
    return sig == SIGUSR1 && argc > 3 ? std::atoi(argv[3]) : 0;
  }
  if (role == "stubborn") {
    for (;;) ::pause();
  }
  if (role == "exit") return argc > 3 ? std::atoi(argv[3]) : 0;
  if (role == "busy") {
    // Talks to the coordinator without pause (each acquire and release is a message) until SIGTERM ends it.
    mpx::Lock lock;
    for (;;) {
      lock.acquire();
      lock.release();
    }
  }
  if (role == "chatter") {
    const int count = argc > 3 ? std::atoi(argv[3]) : 10;
    std::printf("chatter stdout is a terminal: %s\n", ::isatty(STDOUT_FILENO) ? "yes" : "no");
    for (int i = 0; i < count; ++i) {
      std::printf("%s\n", chatter_line(argc > 2 ? argv[2] : "-", i).c_str());
      std::fflush(stdout);
      // Paced so that the status line is redrawn between the lines: that is what the test looks at.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::fprintf(stderr, "%s on stderr\n", chatter_line(argc > 2 ? argv[2] : "-", count).c_str());
    return 0;
  }
  if (role == "relay") {
    auto mid = mpx::this_actor().queue<std::vector<std::string>>("mid");
    auto out = mpx::this_actor().queue<std::vector<std::string>>("out");
    auto items = mid.get();
    items.push_back("exec");
    out.put(items);
    return 0;
  }
  if (role == "where") {
    mpx::this_actor().queue<std::vector<std::int64_t>>("out").put(
        {static_cast<std::int64_t>(mpx::current_process().node()), static_cast<std::int64_t>(::getpid())});
    return argc > 3 ? std::atoi(argv[3]) : 0;
  }
  if (role == "pool") {
    auto pool = mpx::this_actor().pool("p");
    auto results = mpx::this_actor().queue<std::tuple<std::string, long, bool>>("results");
    try {
      results.put({"no error", pool.apply(negate, 3), false});
    } catch (const mpx::ProtocolError& e) {
      results.put({e.what(), 0, false});
    }
    return 0;
  }
  std::fprintf(stderr, "topology_actor: unknown role '%s'\n", role.c_str());
  return 2;
}
