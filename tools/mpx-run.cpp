// mpx-run: runs an actor topology described in a TOML file.
//   mpx-run topology.toml                 start it, supervise it, stop it on SIGINT/SIGTERM
//   mpx-run --check topology.toml         validate it and print the plan
//   mpx-run --status-every 1 topology.toml
// Its actors are `exec` programs (any program that links mpx); an application with registered `task` functions
// offers the same command line through mpx::run_main. Exit status: see mpx::TopologyExit.
#include <mpx/mpx.hpp>

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  return mpx::run_main(argc, argv);
}
