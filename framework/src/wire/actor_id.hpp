// An actor id names one process of a session across hosts (PROTOCOL.md, "Actor ids"): the node it runs on in the high
// 32 bits, its pid on that node's host in the low 32. Node 0 is the coordinator's host, so there an actor id is the
// pid itself, and every id a one-host session ever used keeps its meaning.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

namespace mpx::wire {

using ActorId = std::uint64_t;
using NodeId = std::uint32_t;

inline constexpr NodeId coordinator_node = 0;

constexpr ActorId actor_id(NodeId node, std::uint64_t pid) noexcept {
  return (static_cast<ActorId>(node) << 32) | (pid & 0xffff'ffffu);
}
constexpr NodeId node_of(ActorId actor) noexcept { return static_cast<NodeId>(actor >> 32); }
constexpr std::uint32_t pid_of(ActorId actor) noexcept { return static_cast<std::uint32_t>(actor & 0xffff'ffffu); }

// One row of node_list's answer (PROTOCOL.md, "Nodes"): [node, host, cpus, state ("alive" or "lost"), processes].
using NodeRow = std::tuple<NodeId, std::string, std::uint32_t, std::string, std::uint64_t>;

// "pid" on the coordinator's host, "node:pid" elsewhere: how messages and errors name an actor.
inline std::string actor_name(ActorId actor) {
  const auto node = node_of(actor);
  return node == coordinator_node ? std::to_string(pid_of(actor))
                                  : std::to_string(node) + ":" + std::to_string(pid_of(actor));
}

}  // namespace mpx::wire
