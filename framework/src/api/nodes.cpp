// mpx::nodes and friends: a node_list request to the coordinator, whose nodes table (runtime/nodes.cpp) knows them.
#include <mpx/nodes.hpp>

#include <tuple>

#include "runtime/remote_process.hpp"
#include "runtime/runtime.hpp"

namespace mpx {

namespace {
std::vector<NodeInfo> list_nodes(std::size_t alive_at_least, std::int64_t wait_ms) {
  runtime::ensure_coordinator();
  std::vector<NodeInfo> nodes;
  for (auto& [id, host, cpus, state, processes] : runtime::list_nodes(alive_at_least, wait_ms)) {
    nodes.push_back(NodeInfo{id, std::move(host), cpus, std::move(state), processes});
  }
  return nodes;
}
}  // namespace

void set_coordinator_endpoint(std::string endpoint) { runtime::set_coordinator_endpoint(std::move(endpoint)); }

std::vector<NodeInfo> nodes() { return list_nodes(0, 0); }

std::vector<NodeInfo> wait_for_nodes(std::size_t count, std::chrono::duration<double> timeout) {
  if (timeout.count() < 0) throw ValueError("mpx: wait_for_nodes: the timeout is negative");
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  return list_nodes(count, static_cast<std::int64_t>(ms));
}

}  // namespace mpx
