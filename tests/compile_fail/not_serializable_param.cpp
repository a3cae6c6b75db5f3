// expect: a parameter type of the target is not serializable
// A Process target whose parameter type has no MSGPACK_DEFINE (here a struct holding a raw pointer) is refused at
// compile time with a readable message, not a hang at run time.
#include <mpx/mpx.hpp>

struct Raw {
  int* pointer = nullptr;
};

static void target(Raw raw) { (void)raw; }

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Process p(target, Raw{});
  p.start();
  p.join();
}
