/// \file
/// mpx/nodes.hpp — many hosts: the coordinator's tcp:// endpoint, the nodes that joined it, and waiting for them.
/// A node is this same program started on another host with `--mpx-node ENDPOINT --mpx-keys DIR`; it serves as that
/// host's agent. framework/docs/distributed.md tells the whole story (keys, launching with Slurm or ssh, node loss).
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <mpx/detail/export.hpp>

namespace mpx {

/// One host of the session, as mpx::nodes() lists it.
struct NodeInfo {
  std::uint32_t id = 0;       ///< 0: the coordinator's host; others are numbered as they join, never reused
  std::string host;           ///< its host name
  std::uint32_t cpus = 0;     ///< its cpu count: what placement = spread starts there per node
  std::string state;          ///< "alive" or "lost"
  std::uint64_t processes = 0;  ///< processes of the session the coordinator watches there
};

/// The coordinator binds `endpoint` (tcp://host:port, tcp://0.0.0.0:port, or :* for any port) instead of its private
/// ipc socket, so that nodes can join. Root process only, before the coordinator starts (ProcessError otherwise). A
/// tcp endpoint needs keys (mpx/keys.hpp); without them it throws ValueError saying how to make them.
MPX_API void set_coordinator_endpoint(std::string endpoint);

/// Every node of the session, this host (node 0) first, the lost ones too.
MPX_API std::vector<NodeInfo> nodes();

/// Waits until at least `count` nodes besides this host are alive, and returns nodes(). Throws TimeoutError if they
/// are not there within `timeout`.
MPX_API std::vector<NodeInfo> wait_for_nodes(std::size_t count, std::chrono::duration<double> timeout);

}  // namespace mpx
