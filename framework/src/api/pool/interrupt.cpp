// Ctrl-C and mpx::Pool: while any thread waits on a pool (a WaitingCaller is alive), SIGINT writes to every pool's
// interrupt eventfd, and each pool's result thread stops its workers and fails its tasks with mpx::Interrupted. The
// handler only writes to eventfds (async-signal-safe); with nobody waiting, Ctrl-C means what it meant before the first
// pool.
#include <atomic>
#include <csignal>
#include <cstdint>
#include <mutex>

#include <unistd.h>

#include "api/pool/pool_core.hpp"

namespace mpx::detail {

namespace {

constexpr std::size_t max_pools = 256;
std::atomic<int> interrupt_fds[max_pools];  // each an eventfd + 1; 0: a free slot
std::atomic<int> waiting_callers{0};
struct sigaction previous_sigint {};
std::once_flag sigint_installed;

void on_sigint(int signal, siginfo_t* info, void* context) {
  if (waiting_callers.load() > 0) {
    const std::uint64_t one = 1;
    for (auto& fd : interrupt_fds) {
      const int f = fd.load();
      if (f > 0) (void)!::write(f - 1, &one, sizeof one);
    }
    return;
  }
  // Nobody waits on a pool: Ctrl-C means what it meant before the first pool.
  if (previous_sigint.sa_flags & SA_SIGINFO) {
    if (previous_sigint.sa_sigaction) previous_sigint.sa_sigaction(signal, info, context);
  } else if (previous_sigint.sa_handler == SIG_IGN) {
    return;
  } else if (previous_sigint.sa_handler == SIG_DFL) {
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
  } else {
    previous_sigint.sa_handler(signal);
  }
}

void install_sigint_handler() {
  std::call_once(sigint_installed, [] {
    struct sigaction action {};
    action.sa_sigaction = &on_sigint;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &previous_sigint);
  });
}

}  // namespace

int watch_interrupts(int fd) {
  install_sigint_handler();
  for (std::size_t i = 0; i < max_pools; ++i) {
    int expected = 0;
    if (interrupt_fds[i].compare_exchange_strong(expected, fd + 1)) return static_cast<int>(i);
  }
  return -1;  // more pools than slots: this one is not interrupted by Ctrl-C (documented limit)
}

void unwatch_interrupts(int slot) {
  if (slot >= 0) interrupt_fds[static_cast<std::size_t>(slot)].store(0);
}

WaitingCaller::WaitingCaller() { waiting_callers.fetch_add(1); }
WaitingCaller::~WaitingCaller() { waiting_callers.fetch_sub(1); }

}  // namespace mpx::detail
