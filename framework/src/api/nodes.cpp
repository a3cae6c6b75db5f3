// mpx::nodes and friends: a node_list request to the coordinator, whose nodes table (runtime/nodes.cpp) knows them.
#include <mpx/nodes.hpp>

#include <tuple>

#include "api/call.hpp"
#include "runtime/runtime.hpp"

namespace mpx {

namespace {
std::vector<NodeInfo> list_nodes(std::size_t alive_at_least, std::int64_t wait_ms) {
  runtime::ensure_coordinator();
  auto reply = detail::call(
      wire::make(wire::Kind::node_list, 0, 0, std::make_tuple(static_cast<std::uint64_t>(alive_at_least), wait_ms)),
      wait_ms);
  using Row = std::tuple<std::uint32_t, std::string, std::uint32_t, std::string, std::uint64_t>;
  std::vector<NodeInfo> nodes;
  for (auto& [id, host, cpus, state, processes] : reply.body_as<std::vector<Row>>()) {
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
