// expect: the target's return type is not serializable
// A Process target whose return type cannot be encoded is refused at compile time.
#include <mpx/mpx.hpp>

struct Handle {
  void* native = nullptr;
};

static Handle target(int x) {
  (void)x;
  return Handle{};
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Process p(target, 1);
  p.start();
  p.join();
}
