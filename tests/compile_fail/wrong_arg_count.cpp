// expect: wrong number of arguments for the target function
// Passing more arguments than the target takes is a compile-time error.
#include <mpx/mpx.hpp>

static void target(int x) { (void)x; }

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Process p(target, 1, 2);
  p.start();
  p.join();
}
