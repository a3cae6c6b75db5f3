// mpx-run: runs an actor topology described in a TOML file.
//   mpx-run topology.toml                 start it, supervise it, stop it on SIGINT/SIGTERM
//   mpx-run --check topology.toml         validate it and print the plan
//   mpx-run --status-every 1 topology.toml
//   mpx-run keygen DIR [--node NAME...]   make the CURVE keys a tcp:// coordinator and its nodes need
//                                         (docs/distributed.md)
// Its actors are `exec` programs (any program that links mpx); an application with registered `task` functions
// offers the same command line through mpx::run_main. Exit status: see mpx::TopologyExit.
#include <filesystem>
#include <iostream>
#include <vector>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <mpx/mpx.hpp>

namespace {

// `mpx-run keygen DIR`, a command of mpx-run's own: mpx::run_main, which applications share, runs topologies only.
// It starts no session.
int keygen(int argc, char** argv) {
  CLI::App app{"Makes a key directory for a tcp:// coordinator: czmq CURVE certificates of the coordinator and of its "
               "clients, and the allow list of the clients it admits",
               "mpx-run keygen"};
  std::string directory;
  std::vector<std::string> nodes;
  app.add_option("directory", directory, "the directory to make (it must not hold keys yet)")->required();
  app.add_option("--node", nodes,
                 "also (or, when DIR holds keys already, only) make a key of its own for node NAME: DIR/nodes/NAME/ "
                 "is what that host passes as --mpx-keys")
      ->type_name("NAME");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const bool made_before = !nodes.empty() && std::filesystem::exists(std::filesystem::path(directory) / "coordinator.key");
  try {
    if (!made_before) mpx::make_keys(directory);
    for (const auto& node : nodes) mpx::make_node_keys(directory, node);
  } catch (const mpx::Error& e) {
    std::cerr << "mpx-run keygen: " << e.what() << "\n";
    return 2;
  }
  if (!made_before) {
    std::cout << "mpx-run keygen: made " << directory
              << "/: coordinator.key, coordinator.key_secret, client.key, client.key_secret, allowed/client.key\n"
              << "Run with MPX_KEYS=" << directory << " (or [coordinator] keys = \"" << directory
              << "\" in a topology file).\n";
  }
  for (const auto& node : nodes) {
    std::cout << "mpx-run keygen: made " << directory << "/nodes/" << node << "/ and " << directory << "/allowed/"
              << node << ".key; on that host run: ./app --mpx-node tcp://COORDINATOR:PORT --mpx-keys "
              << directory << "/nodes/" << node << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "keygen") return keygen(argc - 1, argv + 1);
  mpx::init(argc, argv);
  return mpx::run_main(argc, argv);
}
