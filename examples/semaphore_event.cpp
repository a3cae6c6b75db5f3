// Seed 004: Semaphore with get_value, and an Event set in one process and waited for in another.
#include <mpx/mpx.hpp>

#include <cstdio>

void waiter(mpx::Event e, mpx::Semaphore sem) {
  std::printf("child: waiting for the event\n");
  std::fflush(stdout);
  e.wait();  // Block until the internal flag is True.
  std::printf("child: event is set: %s\n", e.is_set() ? "True" : "False");
  std::fflush(stdout);
  sem.release();  // tell the parent
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line, so parent and child lines interleave as they happen
  mpx::Semaphore sem(1);
  sem.acquire();  // the value decrements by one
  std::printf("sem.get_value() after acquire: %zu\n", sem.get_value());
  sem.release();  // the value increments by one
  std::printf("sem.get_value() after release: %zu\n", sem.get_value());

  mpx::Event e;  // internal flag defaults to False
  std::printf("e.is_set(): %s\n", e.is_set() ? "True" : "False");
  mpx::Semaphore done(0);
  mpx::Process p(waiter, e, done);
  p.start();
  e.set();
  done.acquire();  // the child saw the event
  e.clear();
  std::printf("e.is_set() after clear: %s\n", e.is_set() ? "True" : "False");
  p.join();
}
