#include "runtime/nodes.hpp"

#include <algorithm>

#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/start_method.hpp>

#include "runtime/launcher.hpp"
#include "runtime/runtime.hpp"

namespace mpx::runtime {

namespace {
constexpr std::size_t lost_nodes_kept = 1024;   // lost nodes remembered, so a late agent is told it was lost
constexpr std::size_t pending_launches = 4096;  // launches sent to agents and not answered yet
constexpr std::size_t exits_kept = 65536;       // how remote processes ended, for a join that comes late
constexpr std::size_t waiters_kept = 65536;     // joins parked on remote processes
constexpr std::size_t processes_per_node = 65536;  // processes watched on one node (a node's own hellos add to it)

std::int64_t milliseconds(std::chrono::milliseconds d) { return static_cast<std::int64_t>(d.count()); }
}  // namespace

std::string node_build_id() {
  return main_build_id() + "/" + build_id_of(reinterpret_cast<const void*>(&main_build_id));
}

Nodes::Nodes(Coordinator& coordinator) : coordinator_(coordinator), build_id_(node_build_id()) {}

bool Nodes::sender_allowed(const std::string& user, const wire::Envelope& request) const {
  if (user.empty()) return true;  // no CURVE on this connection: nothing binds it (ipc, or the insecure lab switch)
  if (request.header.kind == wire::Kind::node_hello) return true;  // the hello binds the key; hello() checks it
  const wire::NodeId node = wire::node_of(request.header.sender);
  if (node == wire::coordinator_node) return user == own_user_;
  const auto it = bound_.find(user);
  return it != bound_.end() && it->second == node;
}

Nodes::Node* Nodes::alive(wire::NodeId id) {
  auto it = nodes_.find(id);
  return it == nodes_.end() || it->second.lost ? nullptr : &it->second;
}

// Agents' own kinds come from the agent's connection only: one of its processes cannot report another's end.
Nodes::Node* Nodes::agent_of(const Coordinator::Peer& peer, const wire::Envelope& request) {
  Node* node = alive(wire::node_of(request.header.sender));
  if (node == nullptr || wire::pid_of(request.header.sender) != static_cast<std::uint32_t>(node->agent_pid) ||
      const_cast<zmq::message_t&>(peer.routing) != const_cast<zmq::message_t&>(node->agent.routing)) {
    return nullptr;
  }
  return node;
}

void Nodes::handle(Coordinator::Peer& peer, wire::Envelope& request, const std::string& user) {
  switch (request.header.kind) {
    case wire::Kind::node_hello: return hello(peer, request, user);
    case wire::Kind::node_heartbeat: {
      Node* node = agent_of(peer, request);
      if (node == nullptr) {
        const auto it = nodes_.find(wire::node_of(request.header.sender));
        if (it == nodes_.end()) throw ProtocolError("mpx: node_heartbeat from an actor that is no node's agent");
        return coordinator_.reply_error(peer, request.header, wire::ErrorCode::node_lost,
                                        "mpx: node " + std::to_string(it->first) + " (" + it->second.host +
                                            ") was declared lost; its processes were reported dead");
      }
      node->heard = std::chrono::steady_clock::now();
      auto ok = wire::make_reply(request.header, wire::Kind::ok, encode(Object{}));
      return coordinator_.reply(peer, ok);
    }
    case wire::Kind::node_launch: return launch(peer, request);
    case wire::Kind::node_launched: {
      Node* node = agent_of(peer, request);
      if (node == nullptr) throw ProtocolError("mpx: node_launched from an actor that is no live node's agent");
      return launched(request, *node);
    }
    case wire::Kind::node_exited: {
      Node* node = agent_of(peer, request);
      if (node == nullptr) throw ProtocolError("mpx: node_exited from an actor that is no live node's agent");
      auto [pid, code] = request.body_as<std::tuple<std::uint32_t, std::optional<std::int64_t>>>();
      // A process the agent did not start ends without a wait status anyone can read.
      return exited(wire::actor_id(node->id, pid), static_cast<int>(code.value_or(forkserver_lost_exitcode)));
    }
    case wire::Kind::node_wait: return wait(peer, request);
    case wire::Kind::node_list: return list(peer, request);
    case wire::Kind::node_signal: return signal(peer, request);
    default: throw ProtocolError("mpx: not a node kind");
  }
}

void Nodes::hello(Coordinator::Peer& peer, wire::Envelope& request, const std::string& user) {
  auto [host, cpus, build_id, agent_pid] =
      request.body_as<std::tuple<std::string, std::uint32_t, std::string, std::int64_t>>();
  if (agent_pid <= 0 || wire::pid_of(request.header.sender) != static_cast<std::uint32_t>(agent_pid)) {
    throw ProtocolError("mpx: node_hello whose agent pid is not its sender's");
  }
  if (!user.empty() && user == own_user_) {
    return coordinator_.reply_error(
        peer, request.header, wire::ErrorCode::value,
        "mpx: node '" + host + "' connects with the coordinator host's own key ('" + user +
            "'); give each node a key of its own: mpx-run keygen DIR --node NAME, then --mpx-keys DIR/nodes/NAME");
  }
  if (build_id != build_id_) {
    return coordinator_.reply_error(peer, request.header, wire::ErrorCode::value,
                                    "mpx: node '" + host + "' runs build " + build_id + ", the coordinator build " +
                                        build_id_ + ": every node must run the same build of the program");
  }
  if (!user.empty()) {
    if (auto it = bound_.find(user); it != bound_.end()) {
      declare_lost(nodes_.at(it->second), "its key said hello again from a new agent");
    }
  }
  Node node;
  node.id = next_node_++;
  node.user = user;
  node.host = std::move(host);
  node.cpus = cpus;
  node.agent_pid = agent_pid;
  node.agent = peer.copy();
  node.heard = std::chrono::steady_clock::now();
  if (!user.empty()) bound_[user] = node.id;
  const wire::NodeId id = node.id;
  nodes_.emplace(id, std::move(node));
  for (auto it = nodes_.begin(); nodes_.size() > lost_nodes_kept && it != nodes_.end();) {
    it = it->second.lost ? nodes_.erase(it) : std::next(it);
  }
  // Whoever waits for this many nodes has them now.
  const auto alive = alive_count();
  for (auto w = list_waiters_.begin(); w != list_waiters_.end() && w->first <= alive;) {
    coordinator_.timers().cancel(w->second.timer);
    answer_list(w->second.peer, w->second.request);
    w = list_waiters_.erase(w);
  }
  auto ok = wire::make_reply(request.header, wire::Kind::ok,
                             encode(std::make_tuple(id, state().session.id, milliseconds(node_heartbeat_interval),
                                                    milliseconds(node_lost_after))));
  coordinator_.reply(peer, ok);
  if (!checking_) {
    checking_ = true;
    coordinator_.timers().schedule(std::chrono::steady_clock::now() + node_heartbeat_interval,
                                   [this] { check_heartbeats(); });
  }
}

void Nodes::check_heartbeats() {
  const auto now = std::chrono::steady_clock::now();
  bool any = false;
  for (auto& [id, node] : nodes_) {
    if (node.lost) continue;
    if (now - node.heard > node_lost_after) {
      declare_lost(node, "no heartbeat for " + std::to_string(milliseconds(node_lost_after)) + " ms");
    } else {
      any = true;
    }
  }
  checking_ = any;
  if (any) coordinator_.timers().schedule(now + node_heartbeat_interval, [this] { check_heartbeats(); });
}

void Nodes::declare_lost(Node& node, const std::string& why) {
  if (node.lost) return;
  node.lost = true;
  if (auto it = bound_.find(node.user); it != bound_.end() && it->second == node.id) bound_.erase(it);
  const std::string message =
      "mpx: node " + std::to_string(node.id) + " (" + node.host + ") was lost: " + why;
  for (auto it = launches_.begin(); it != launches_.end();) {
    if (it->second.node != node.id) {
      ++it;
      continue;
    }
    coordinator_.reply_error(it->second.requester, it->second.request, wire::ErrorCode::node_lost, message);
    it = launches_.erase(it);
  }
  const auto processes = std::move(node.processes);
  node.processes.clear();
  for (const auto pid : processes) {
    const auto actor = wire::actor_id(node.id, pid);
    coordinator_.keep_error(actor, Coordinator::ErrorReport{"mpx::NodeLost", message, node.host});
    exited(actor, node_lost_exitcode);
  }
}

void Nodes::launch(Coordinator::Peer& peer, wire::Envelope& request) {
  auto [node_id, ticket] = request.body_as<std::tuple<wire::NodeId, std::uint64_t>>();
  (void)ticket;
  if (request.body.size() != 2) throw ProtocolError("mpx: node_launch carries its launch spec in a second frame");
  Node* node = alive(node_id);
  if (node == nullptr) {
    const bool known = nodes_.count(node_id) != 0;
    return coordinator_.reply_error(peer, request.header, known ? wire::ErrorCode::node_lost : wire::ErrorCode::value,
                                    "mpx: node " + std::to_string(node_id) +
                                        (known ? " was lost" : " is not a node of this session (see mpx::nodes())"));
  }
  if (launches_.size() >= pending_launches) {
    throw ProtocolError("mpx: more than " + std::to_string(pending_launches) + " launches wait for their nodes");
  }
  const std::uint64_t id = next_ticket_++;
  launches_.emplace(id, Launch{peer.copy(), request.header, node_id});
  wire::Envelope push;
  push.header.kind = wire::Kind::node_launch;
  push.body.emplace_back(encode(std::make_tuple(node_id, id)));
  push.body.push_back(std::move(request.body[1]));
  coordinator_.reply(node->agent, push);
}

void Nodes::launched(wire::Envelope& request, Node& node) {
  auto [ticket, pid, error] = request.body_as<std::tuple<std::uint64_t, std::uint32_t, std::string>>();
  auto it = launches_.find(ticket);
  if (it == launches_.end() || it->second.node != node.id) throw ProtocolError("mpx: node_launched for no launch");
  auto launch = std::move(it->second);
  launches_.erase(it);
  if (pid == 0) {
    return coordinator_.reply_error(launch.requester, launch.request, wire::ErrorCode::value,
                                    "mpx: node " + std::to_string(node.id) + " (" + node.host +
                                        ") could not start the process: " + error);
  }
  node.processes.insert(pid);
  auto ok = wire::make_reply(launch.request, wire::Kind::ok, encode(std::make_tuple(wire::actor_id(node.id, pid))));
  coordinator_.reply(launch.requester, ok);
}

void Nodes::remember_exit(wire::ActorId actor, int exitcode) {
  if (exits_.insert_or_assign(actor, exitcode).second) exit_order_.push_back(actor);
  while (exit_order_.size() > exits_kept) {
    exits_.erase(exit_order_.front());
    exit_order_.pop_front();
  }
}

void Nodes::exited(wire::ActorId actor, int exitcode) {
  remember_exit(actor, exitcode);
  if (auto it = nodes_.find(wire::node_of(actor)); it != nodes_.end()) it->second.processes.erase(wire::pid_of(actor));
  coordinator_.actor_died(actor);
  const auto [first, last] = waiters_.equal_range(actor);
  for (auto it = first; it != last; ++it) {
    coordinator_.timers().cancel(it->second.timer);
    auto ok = wire::make_reply(it->second.request, wire::Kind::ok, encode(std::make_tuple(exitcode)));
    coordinator_.reply(it->second.peer, ok);
  }
  waiters_.erase(first, last);
}

void Nodes::wait(Coordinator::Peer& peer, wire::Envelope& request) {
  auto [actor, timeout_ms] = request.body_as<std::tuple<wire::ActorId, std::int64_t>>();
  auto answer = [&](int code) {
    auto ok = wire::make_reply(request.header, wire::Kind::ok, encode(std::make_tuple(code)));
    coordinator_.reply(peer, ok);
  };
  if (auto it = exits_.find(actor); it != exits_.end()) return answer(it->second);
  const auto node = nodes_.find(wire::node_of(actor));
  if (node == nodes_.end() || node->second.lost) return answer(node_lost_exitcode);
  if (!node->second.processes.count(wire::pid_of(actor))) {
    throw ProtocolError("mpx: node_wait for " + wire::actor_name(actor) + ", which the coordinator does not watch");
  }
  if (timeout_ms == 0) {
    return coordinator_.reply_error(peer, request.header, wire::ErrorCode::timeout, "mpx: the process is running");
  }
  park(waiters_, actor, peer, request.header, timeout_ms, [] { return std::string("mpx: the process is still running"); });
}

template <class Key>
void Nodes::park(std::multimap<Key, Waiter>& waiters, Key key, Coordinator::Peer& peer, const wire::Header& request,
                 std::int64_t timeout_ms, std::function<std::string()> timeout_message) {
  if (waiters.size() >= waiters_kept) throw ProtocolError("mpx: too many requests wait on nodes");
  auto it = waiters.emplace(key, Waiter{peer.copy(), request, 0});
  if (timeout_ms < 0) return;
  it->second.timer = coordinator_.timers().schedule(
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms),
      [this, &waiters, key, request, timeout_message = std::move(timeout_message)] {
        const auto [first, last] = waiters.equal_range(key);
        for (auto w = first; w != last; ++w) {
          if (w->second.request.correlation != request.correlation || w->second.request.sender != request.sender) continue;
          coordinator_.reply_error(w->second.peer, w->second.request, wire::ErrorCode::timeout, timeout_message());
          waiters.erase(w);
          return;
        }
      });
}

void Nodes::list(Coordinator::Peer& peer, wire::Envelope& request) {
  auto [at_least, timeout_ms] = request.body_as<std::tuple<std::uint64_t, std::int64_t>>();
  if (alive_count() >= at_least) return answer_list(peer, request.header);
  if (timeout_ms == 0) {
    return coordinator_.reply_error(peer, request.header, wire::ErrorCode::timeout,
                                    "mpx: " + std::to_string(alive_count()) + " of the " + std::to_string(at_least) +
                                        " nodes waited for are alive");
  }
  park(list_waiters_, at_least, peer, request.header, timeout_ms, [this, at_least] {
    return "mpx: " + std::to_string(alive_count()) + " of the " + std::to_string(at_least) + " nodes waited for are alive";
  });
}

std::uint64_t Nodes::alive_count() const {
  return static_cast<std::uint64_t>(
      std::count_if(nodes_.begin(), nodes_.end(), [](const auto& entry) { return !entry.second.lost; }));
}

void Nodes::answer_list(const Coordinator::Peer& peer, const wire::Header& request) {
  std::vector<wire::NodeRow> rows;
  rows.emplace_back(wire::coordinator_node, host_name(), static_cast<std::uint32_t>(cpu_count()), "alive",
                    coordinator_.stats().actors - watched());
  for (const auto& [id, node] : nodes_) {
    rows.emplace_back(id, node.host, node.cpus, node.lost ? "lost" : "alive", node.processes.size());
  }
  auto ok = wire::make_reply(request, wire::Kind::ok, encode(rows));
  coordinator_.reply(peer, ok);
}

void Nodes::signal(Coordinator::Peer& peer, wire::Envelope& request) {
  auto [actor, number] = request.body_as<std::tuple<wire::ActorId, std::int32_t>>();
  if (Node* node = alive(wire::node_of(actor)); node != nullptr && node->processes.count(wire::pid_of(actor))) {
    wire::Envelope push;
    push.header.kind = wire::Kind::node_signal;
    push.body.emplace_back(encode(std::make_tuple(wire::pid_of(actor), number)));
    coordinator_.reply(node->agent, push);
  }
  auto ok = wire::make_reply(request.header, wire::Kind::ok, encode(Object{}));
  coordinator_.reply(peer, ok);
}

bool Nodes::watch(wire::ActorId actor) {
  Node* node = alive(wire::node_of(actor));
  if (node == nullptr || exits_.count(actor) || node->processes.size() >= processes_per_node) return false;
  if (node->processes.insert(wire::pid_of(actor)).second) {
    wire::Envelope push;
    push.header.kind = wire::Kind::node_watch;
    push.body.emplace_back(encode(std::make_tuple(wire::pid_of(actor))));
    coordinator_.reply(node->agent, push);
  }
  return true;
}

void Nodes::shutdown(zmq::socket_ref router, std::chrono::milliseconds limit) {
  std::set<std::uint64_t> waiting;
  for (auto& [id, node] : nodes_) {
    if (node.lost) continue;
    wire::Envelope push;
    push.header.kind = wire::Kind::node_shutdown;
    push.header.correlation = id;
    push.body.emplace_back(encode(Object{}));
    coordinator_.reply(node.agent, push);
    waiting.insert(id);
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!waiting.empty()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, left) == 0) break;
    } catch (const zmq::error_t&) {
      break;
    }
    zmq::message_t routing;
    std::optional<wire::Envelope> message;
    try {
      message = wire::recv(router, &routing, true);
    } catch (const ProtocolError&) {
      continue;
    }
    if (message && message->header.kind == wire::Kind::ok) waiting.erase(message->header.correlation);
  }
}

std::size_t Nodes::watched() const {
  std::size_t n = 0;
  for (const auto& [id, node] : nodes_) n += node.processes.size();
  return n;
}

}  // namespace mpx::runtime
