// A program outside the mpx tree: init, one Process running a plain function under fork, join, check the exit code.
#include <mpx/mpx.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>

static void child(int expected) {
  if (expected != 42) std::exit(3);  // the argument did not arrive intact
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::ProcessOptions options;
  options.method = mpx::StartMethod::fork;
  mpx::Process p(options, child, 42);
  p.start();
  p.join();

  std::optional<int> code = p.exitcode();
  if (!code || *code != 0) {
    std::fprintf(stderr, "outside: child exit code %s%d, expected 0\n", code ? "" : "(none) ", code ? *code : 0);
    return 1;
  }
  std::puts("outside ok");
  return 0;
}
