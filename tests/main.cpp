// The test runner: mpx::init must come first, so that spawned and forkserved workers of the test binary are caught
// here and never reach Catch2.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  return Catch::Session().run(argc, argv);
}
