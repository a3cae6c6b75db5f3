// expect: a target must be a plain function or a captureless lambda
// A lambda that captures state has no portable identity: it is refused unless passed as mpx::closure (fork only).
#include <mpx/mpx.hpp>

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  int captured = 42;
  mpx::Process p([captured](int x) { (void)(captured + x); }, 1);
  p.start();
  p.join();
}
