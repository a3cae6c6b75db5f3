// Processes on other nodes, from the side of whoever starts and waits for them (a Process, a topology supervisor):
// the requests of PROTOCOL.md's "Nodes" that a starter makes, through this thread's channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "runtime/launcher.hpp"
#include "wire/actor_id.hpp"

namespace mpx::runtime {

// Starts `spec` on `node` through its agent (the agent fills in what only its host knows); its actor id. Throws
// NodeLost for a lost node, ValueError for no such node or a start that failed there. `also_wait`: how much longer
// than an ordinary start the answer may take (an exec actor's, which comes once the program has joined).
std::uint64_t launch_on_node(std::uint32_t node, const LaunchSpec& spec,
                             std::chrono::milliseconds also_wait = std::chrono::milliseconds(0));
// A descriptor that becomes readable once the remote process ended (its sentinel): a thread asks the coordinator,
// which the node's agent tells, and writes the exit code into a pipe. read_remote_exit takes the code from it.
int watch_remote_end(std::uint64_t actor);
int read_remote_exit(int fd);
// Sends `signal` to the remote process (its agent signals it through its pidfd); nothing if it ended.
void signal_remote(std::uint64_t actor, int signal);
// Every node, node 0 (the coordinator's host) first, once at least `alive_at_least` besides node 0 are alive;
// TimeoutError if they are not within `timeout_ms` (0: at once).
std::vector<wire::NodeRow> list_nodes(std::uint64_t alive_at_least, std::int64_t timeout_ms);
// The nodes alive now, node 0 first.
std::vector<std::uint32_t> alive_nodes();

}  // namespace mpx::runtime
