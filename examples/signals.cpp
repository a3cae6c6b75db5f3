// Seed 000 (使用Unix信号管理子进程): five daemon workers wait for SIGCONT; the parent wakes one of them.
#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <iostream>
#include <iterator>
#include <map>
#include <random>
#include <thread>
#include <utility>

#include <pthread.h>
#include <signal.h>

void worker(int i) {
  // sigwait needs the signal blocked, or SIGCONT (whose default action is to continue) may be discarded on arrival.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCONT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::cout << "worker " << i << " waiting for SIGCONT" << std::endl;
  int signal = 0;
  sigwait(&set, &signal);
  std::cout << "end worker process " << i << std::endl;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::map<pid_t, mpx::Process> workers;
  for (int i = 0; i < 5; ++i) {
    mpx::Process p(worker, i);
    p.set_daemon(true);
    p.start();
    const pid_t pid = p.pid();
    workers.emplace(pid, std::move(p));
  }

  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::mt19937 rng{std::random_device{}()};
  auto chosen = std::next(workers.begin(), std::uniform_int_distribution<int>(0, 4)(rng));
  std::cout << "send to pid " << chosen->first << std::endl;
  chosen->second.send_signal(SIGCONT);
  chosen->second.join();
  std::cout << "closed" << std::endl;
  // The other four are daemons: they are terminated when the main process exits.
}
