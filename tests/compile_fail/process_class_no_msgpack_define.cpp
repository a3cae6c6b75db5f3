// expect: T must list the members the child needs with MSGPACK_DEFINE
// A ProcessClass<T> must say which members the child needs, so that spawn and forkserver can rebuild it.
#include <mpx/mpx.hpp>

struct Worker : mpx::ProcessClass<Worker> {
  int count = 3;
  void run() override {}
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  Worker w;
  w.start();
  w.join();
}
