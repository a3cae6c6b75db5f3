// Many hosts: a pool spread over every node of the session. Under Slurm (`MPX_KEYS=keys srun -N3 ./cluster_map`)
// task 0 runs main and the other tasks become nodes; by hand, start this same program on other hosts with
// `--mpx-node tcp://HOST:PORT --mpx-keys keys/nodes/NAME` and give main the number of nodes to wait for.
//   ./cluster_map [NODES [ENDPOINT]]
#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <unistd.h>

struct Answer {
  long square = 0;
  std::uint32_t node = 0;
  std::string host;
  MSGPACK_DEFINE(square, node, host);
};

Answer square_where(long x) {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  return Answer{x * x, mpx::current_process().node(), host};
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // a node (--mpx-node, or a Slurm task other than 0) serves its host from here on
  if (argc > 2) mpx::set_coordinator_endpoint(argv[2]);
  const std::size_t others = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 0;
  const auto nodes = mpx::wait_for_nodes(others, std::chrono::seconds(120));
  std::cout << nodes.size() << " nodes:";
  for (const auto& n : nodes) std::cout << " " << n.id << "=" << n.host << "(" << n.cpus << " cpus)";
  std::cout << "\n";

  mpx::PoolOptions options;
  options.placement = mpx::Placement::spread;
  options.processes = static_cast<int>(2 * nodes.size());
  mpx::Pool pool(options);
  std::vector<long> items(1000);
  for (long i = 0; i < 1000; ++i) items[static_cast<std::size_t>(i)] = i;
  const auto answers = pool.map(square_where, items, 1);
  pool.close();
  pool.join();

  bool right = answers.size() == items.size();
  std::map<std::string, std::size_t> per_host;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    right = right && answers[i].square == items[i] * items[i];
    ++per_host["node " + std::to_string(answers[i].node) + " (" + answers[i].host + ")"];
  }
  for (const auto& [where, count] : per_host) std::cout << where << ": " << count << " tasks\n";
  std::cout << (right ? "all 1000 squares right" : "WRONG squares") << "\n";
  return right ? 0 : 1;
}
