// The coordinator's nodes (PROTOCOL.md, "Nodes"): the agents of other hosts, the CURVE key each is bound to, the
// processes they started or watch for the coordinator, and the heartbeats that tell a lost node from a slow one.
// Part of the coordinator: it runs on the coordinator's thread and answers through it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "runtime/coordinator.hpp"
#include "runtime/timer_wheel.hpp"
#include "wire/actor_id.hpp"

namespace mpx::runtime {

// How often an agent says it is alive, and how long a silence makes its node lost: the agent stops its processes
// after the same silence, so that a node cut off from the coordinator never runs on beside their replacements.
inline constexpr auto node_heartbeat_interval = std::chrono::milliseconds(250);
inline constexpr auto node_lost_after = std::chrono::milliseconds(2000);

// What a node must share with the coordinator: the GNU build-ids of the executable and of the mpx library, as
// "executable/library" (a function travels as a build-id and an offset).
std::string node_build_id();

class Nodes {
 public:
  explicit Nodes(Coordinator& coordinator);

  // The handlers of the node kinds (wire/kinds.inc, 140-149); `user` is the User-Id ZAP gave the connection.
  void handle(Coordinator::Peer& peer, wire::Envelope& request, const std::string& user);
  // Whether a message may come on a connection whose key is `user` (empty: no CURVE): its sender must be an actor of
  // the node that key is bound to, and node 0's senders come with the coordinator host's own key.
  bool sender_allowed(const std::string& user, const wire::Envelope& request) const;
  // Coordinator::watch for an actor of another node: asks its agent to report its end. False if the node is lost.
  bool watch(wire::ActorId actor);
  bool has_exited(wire::ActorId actor) const { return exits_.count(actor) != 0; }
  std::size_t watched() const;
  // The session ends: tells every live agent to stop its processes and exit, and waits (at most `limit`) until each
  // has answered, so that the word is out before the coordinator's socket closes. Reads nothing else from `router`.
  void shutdown(zmq::socket_ref router, std::chrono::milliseconds limit);
  void set_own_user(std::string user) { own_user_ = std::move(user); }

 private:
  struct Node {
    wire::NodeId id = 0;
    std::string user;  // the User-Id of its key
    std::string host;
    std::uint32_t cpus = 0;
    std::int64_t agent_pid = 0;
    bool lost = false;
    Coordinator::Peer agent;
    std::chrono::steady_clock::time_point heard;
    std::set<std::uint32_t> processes;  // pids the coordinator watches there
  };
  struct Launch {
    Coordinator::Peer requester;
    wire::Header request;
    wire::NodeId node = 0;
  };
  struct Waiter {
    Coordinator::Peer peer;
    wire::Header request;
    TimerWheel::Id timer = 0;
  };

  void hello(Coordinator::Peer& peer, wire::Envelope& request, const std::string& user);
  void launch(Coordinator::Peer& peer, wire::Envelope& request);
  void launched(wire::Envelope& request, Node& node);
  void exited(wire::ActorId actor, int exitcode);
  void wait(Coordinator::Peer& peer, wire::Envelope& request);
  void list(Coordinator::Peer& peer, wire::Envelope& request);
  void answer_list(const Coordinator::Peer& peer, const wire::Header& request);
  std::uint64_t alive_count() const;
  void signal(Coordinator::Peer& peer, wire::Envelope& request);
  // Parks a request under `key` until it is answered, or answers it with a timeout error after `timeout_ms` (-1: never).
  template <class Key>
  void park(std::multimap<Key, Waiter>& waiters, Key key, Coordinator::Peer& peer, const wire::Header& request,
            std::int64_t timeout_ms, std::function<std::string()> timeout_message);
  void check_heartbeats();
  void declare_lost(Node& node, const std::string& why);
  void remember_exit(wire::ActorId actor, int exitcode);
  Node* agent_of(const Coordinator::Peer& peer, const wire::Envelope& request);
  Node* alive(wire::NodeId id);

  Coordinator& coordinator_;
  std::string own_user_;
  std::string build_id_;
  std::map<wire::NodeId, Node> nodes_;                  // the lost ones too, bounded (lost_nodes_kept)
  std::unordered_map<std::string, wire::NodeId> bound_;  // key User-Id -> its live node
  wire::NodeId next_node_ = 1;
  std::map<std::uint64_t, Launch> launches_;  // by ticket
  std::uint64_t next_ticket_ = 1;
  std::unordered_map<wire::ActorId, int> exits_;  // how remote actors ended, bounded (oldest first)
  std::deque<wire::ActorId> exit_order_;
  std::multimap<wire::ActorId, Waiter> waiters_;
  std::multimap<std::uint64_t, Waiter> list_waiters_;  // node_list requests parked until that many nodes are alive
  bool checking_ = false;
};

}  // namespace mpx::runtime
