// expect: T needs a default constructor
// A ProcessClass<T> without a default constructor cannot be rebuilt in a spawned or forkserved child.
#include <mpx/mpx.hpp>

struct Worker : mpx::ProcessClass<Worker> {
  explicit Worker(int c) : count(c) {}
  int count;
  void run() override {}
  MSGPACK_DEFINE(count);
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  Worker w(3);
  w.start();
  w.join();
}
