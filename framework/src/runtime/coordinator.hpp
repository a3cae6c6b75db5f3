// The coordinator: one ROUTER socket and one poll loop that owns every shared object's state. It handles messages,
// fires deadlines from a timer wheel, and watches actor deaths through pidfds, all on one thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <sys/types.h>
#include <zmq.hpp>

#include <mpx/metrics_snapshot.hpp>

#include "runtime/timer_wheel.hpp"
#include "wire/actor_id.hpp"
#include "wire/curve.hpp"
#include "wire/envelope.hpp"

namespace mpx::runtime {

class Nodes;

struct CoordinatorStats {
  std::uint64_t received = 0;   // well-formed messages handled
  std::uint64_t malformed = 0;  // messages rejected (bad envelope, unknown kind, bad body)
  std::uint64_t actors = 0;     // processes currently watched
  std::uint64_t denied = 0;           // connections ZAP refused (a CURVE key not in the allow list, or none)
  std::uint64_t unauthenticated = 0;  // state-changing messages refused: their connection has no User-Id
  std::uint64_t forged = 0;  // messages refused: their sender is not an actor of the node their key is bound to
};

class Coordinator {
 public:
  // The peer a request came from; replies go back through it.
  struct Peer {
    zmq::message_t routing;
    std::uint64_t actor = 0;
    std::uint64_t side = 0;  // nonzero: the side-door connection it came through; replies go back on it

    // Another handle on the same peer, to answer it later (or again).
    Peer copy() const {
      Peer p;
      p.routing.copy(const_cast<zmq::message_t&>(routing));
      p.actor = actor;
      p.side = side;
      return p;
    }
  };
  // A service's handler for one kind. It may reply now, or keep the peer and reply later (a blocked waiter).
  // Throwing ProtocolError or SerializationError counts the message as malformed and sends an error reply.
  using Handler = std::function<void(Peer& peer, wire::Envelope& request)>;
  using DeathHook = std::function<void(wire::ActorId actor)>;
  // A service's part of a metrics snapshot: it appends its objects. Runs on the coordinator thread.
  using MetricsCollector = std::function<void(mpx::Metrics& snapshot)>;

  // With `curve`, a tcp endpoint is a CURVE server that admits only the keys of its allow list, through a ZAP handler
  // this coordinator serves in its loop (PROTOCOL.md, "Security").
  Coordinator(zmq::context_t& context, std::string endpoint, std::optional<wire::CurveServer> curve = std::nullopt);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Registration happens before start().
  void handle(wire::Kind kind, Handler handler);
  // The side door: a unix stream socket at `path` for processes of this host, which carries all of a thread's traffic
  // and makes a post durable once written (PROTOCOL.md, "The side door"). Before start(); false if it cannot be opened
  // (then there is none).
  bool open_side_door(const std::string& path);
  void on_death(DeathHook hook);
  void on_metrics(MetricsCollector collector);

  void start();
  void stop();
  const std::string& endpoint() const noexcept { return endpoint_; }
  // The same ROUTER, for threads of the coordinator's own process: inproc skips the kernel.
  const std::string& local_endpoint() const noexcept { return local_endpoint_; }
  CoordinatorStats stats() const noexcept;

  // Coordinator thread only:
  void reply(const Peer& peer, wire::Envelope& reply);
  void reply_error(const Peer& peer, const wire::Header& request, wire::ErrorCode code, std::string_view message);
  TimerWheel& timers() noexcept { return timers_; }
  // A request a service rejected itself (an unknown object) counts as malformed, as one that threw ProtocolError does.
  void count_malformed() noexcept { malformed_.fetch_add(1, std::memory_order_relaxed); }
  // A new id for a shared object, unique across services for the session.
  std::uint64_t allocate_object_id() noexcept { return next_object_id_++; }
  // Watches a process: death hooks run when it exits. Returns false if it is already gone. A process of another node
  // is watched by its agent (nodes.hpp).
  bool watch(wire::ActorId actor);
  // True if a watched process has exited but its death hooks have not run yet (they run after the messages of the
  // loop's current turn). A service about to hand something to a waiter asks, so nothing goes to the dead.
  bool has_exited(wire::ActorId actor) const;
  // A service found a watched process already reaped (its parent joined it) before the loop saw it exit: handles its
  // death now, as the loop would, its side-door messages first (a post that returned is never undone), then the death
  // hooks. They run inside the caller's handler: the caller looks its objects up again afterwards.
  void reaped(wire::ActorId actor) {
    if (wire::node_of(actor) == wire::coordinator_node) reap(static_cast<pid_t>(actor));
  }
  // The counters of the coordinator and its actors, and every service's objects (the `metrics` message).
  mpx::Metrics metrics_snapshot();
  // Any thread: a supervisor of this process (mpx-run, Topology) tells the state of a process it started, one of
  // mpx::actor_states. It knows more than the coordinator does: that a process is not ready yet, that it replaces
  // one that ended, that it is being stopped, and how it ended. Snapshots show its word over the coordinator's.
  void supervised_state(pid_t pid, std::string name, std::string_view state);

 private:
  friend class Nodes;
  void run();
  // A CURVE coordinator refuses a state-changing message whose connection ZAP did not authenticate: true if refused.
  // Answers the ZAP requests waiting and counts the handshakes that failed before them: both are denials.
  void serve_security();
  bool refuse_unauthenticated(const Peer& peer, const wire::Envelope& request, const wire::Credentials& credentials);
  void dispatch(Peer& peer, wire::Envelope& request);
  void dispatch_one(Peer& peer, wire::Envelope& request);
  void handle_runtime(Peer& peer, wire::Envelope& request);
  void reap(pid_t pid);
  void actor_hello(wire::ActorId actor, std::string name);
  void actor_exited(wire::ActorId actor);
  // An actor ended (a local one reaped, or one its node's agent reported): its counters, then the death hooks.
  void actor_died(wire::ActorId actor);
  // Earlier actors named `name` that exited: the restart count of a new one of that name.
  std::uint64_t restarts_before(const std::string& name) const;
  // Replaces the snapshot's states with the supervisors' and adds the supervised processes not seen yet.
  void apply_supervised_states(mpx::Metrics& snapshot);
  struct SideConnection {
    int fd = -1;
    pid_t pid = 0;       // SO_PEERCRED: every message on it must name this sender
    std::string in;      // bytes read and not framed yet
    std::string out;     // bytes to write once the socket takes them
    bool watching_out = false;  // registered for EPOLLOUT while `out` waits
    bool overflowed = false;    // its peer left more unread replies than the bound: to be closed
  };
  void side_accept();
  // Reads what the connection has (all of it when `to_end`, else a turn's share) and handles every whole packet.
  bool side_read(std::uint64_t serial, SideConnection& c, bool to_end = false);  // false: closed or broken
  void side_drain(pid_t pid);
  bool side_flush(SideConnection& c);                       // false: broken
  void side_send(std::uint64_t serial, wire::Envelope& envelope);
  void side_watch_out(SideConnection& c, std::uint64_t serial);
  void side_drop(std::map<std::uint64_t, SideConnection>::iterator it);
  void side_events();
  void close_side_door();

  // Replies a ROUTER peer's pipe had no room for (it does not read), kept in order until it does, within bounds.
  struct Unread {
    std::deque<wire::Envelope> replies;
    std::size_t bytes = 0;
  };
  bool router_send(const zmq::message_t& routing, wire::Envelope& envelope);  // false: its pipe is full
  void keep_unread(std::string routing, wire::Envelope& envelope);
  void flush_unread();
  bool is_cut_off(const zmq::message_t& routing) const;

  struct ErrorReport {
    std::string type, message, host;
    TimerWheel::Id expiry = 0;
    std::uint64_t order = 0;  // when it came: the oldest is forgotten first when the store is full
    std::size_t bytes() const noexcept { return type.capacity() + message.capacity() + host.capacity(); }
  };
  void keep_error(wire::ActorId actor, ErrorReport report);
  void forget_error(std::unordered_map<wire::ActorId, ErrorReport>::iterator it);

  zmq::context_t& context_;
  std::string endpoint_;
  std::string control_endpoint_;
  std::string local_endpoint_;
  zmq::socket_t router_;
  zmq::socket_t control_;
  std::optional<wire::CurveServer> curve_;
  zmq::socket_t zap_;         // the ZAP handler (REP), when curve_ is set
  zmq::socket_t handshakes_;  // the ROUTER's monitor of failed handshakes (PAIR), when curve_ is set
  std::thread thread_;
  TimerWheel timers_;
  std::unordered_map<std::uint16_t, Handler> handlers_;
  std::vector<DeathHook> death_hooks_;
  std::map<pid_t, int> watched_;  // pid -> pidfd
  std::unordered_map<wire::ActorId, ErrorReport> errors_;
  std::map<std::uint64_t, wire::ActorId> error_order_;  // ErrorReport::order -> actor
  std::unique_ptr<Nodes> nodes_;
  const std::string* dispatching_user_ = nullptr;  // the User-Id of the ROUTER message being dispatched
  std::size_t error_bytes_ = 0;
  std::uint64_t next_error_order_ = 1;
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> malformed_{0};
  std::atomic<std::uint64_t> actors_{0};
  std::atomic<std::uint64_t> denied_{0};
  std::atomic<std::uint64_t> unauthenticated_{0};
  std::atomic<std::uint64_t> forged_{0};
  // Metrics: plain integers, touched by the coordinator thread only, and nothing allocated per message.
  struct KindCounter {
    std::uint64_t count = 0;
    std::uint64_t nanoseconds = 0;
    std::array<std::uint64_t, mpx::kind_latency_bounds.size()> buckets{};  // not cumulative: the snapshot sums them
  };
  std::array<KindCounter, 256> kind_counters_{};  // by kind number (all are below 256)
  struct ActorCounters {
    std::string name;
    std::uint64_t in = 0, out = 0, restarts = 0;
    bool raised = false;  // it sent process_error (its target raised): it ends "failed"
  };
  std::unordered_map<std::uint64_t, ActorCounters> actor_counters_;  // live actors: those watched, and the root
  std::deque<mpx::ActorMetrics> dead_actors_;                         // the last few that exited, newest last
  std::vector<MetricsCollector> metrics_collectors_;
  struct Supervised {
    std::string name;
    std::string_view state;  // one of mpx::actor_states
  };
  std::mutex supervised_mutex_;
  std::map<pid_t, Supervised> supervised_;  // bounded: pruned by each snapshot to the actors it shows
  int side_listen_ = -1;
  int side_epoll_ = -1;  // the door and its connections: one item in the poll, however many workers connect
  std::string side_path_;
  std::map<std::uint64_t, SideConnection> sides_;
  std::uint64_t next_side_ = 1;
  std::unordered_map<std::string, Unread> unread_;  // by routing id
  std::unordered_set<std::string> cut_off_;         // routing ids of peers that left too much unread
  std::deque<std::string> cut_off_order_;           // oldest first: the set is bounded
  std::vector<char> side_scratch_;  // what a recv reads into
  bool running_ = false;
  std::uint64_t next_object_id_ = 1;
};

}  // namespace mpx::runtime
