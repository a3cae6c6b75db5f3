// Seed 001 and 004: a Lock around a shared counter, with the lock used as Python's `with lock:`.
// Until Value arrives, the counter is a one-slot Queue used as a mailbox: take it, add one, put it back. Without the
// lock the take-add-put would still be safe here (the mailbox itself serializes), so the lock guards a second,
// honest critical section: a read-modify-write of a file that both processes share.
#include <mpx/mpx.hpp>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>

#include <unistd.h>

namespace {
int read_counter(const std::string& path) {
  std::ifstream in(path);
  int value = 0;
  in >> value;
  return value;
}
void write_counter(const std::string& path, int value) {
  std::ofstream out(path, std::ios::trunc);
  out << value;
}
}  // namespace

void add_100(std::string path, mpx::Lock lock) {
  for (int i = 0; i < 100; ++i) {
    std::lock_guard guard(lock);  // with lock:
    write_counter(path, read_counter(path) + 1);
  }
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  const std::string path = "/tmp/mpx-lock-counter-" + std::to_string(getpid());
  write_counter(path, 0);
  mpx::Lock lock;
  std::printf("Value at beginning is %d\n", read_counter(path));
  mpx::Process p1(add_100, path, lock);
  mpx::Process p2(add_100, path, lock);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  std::printf("Value at end is %d\n", read_counter(path));  // 200: the lock made each increment whole
  std::remove(path.c_str());
}
