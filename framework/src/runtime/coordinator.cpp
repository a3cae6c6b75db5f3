#include "runtime/coordinator.hpp"

#include <algorithm>
#include <cerrno>
#include <numeric>
#include <set>
#include <cstring>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/nodes.hpp"
#include "runtime/runtime.hpp"
#include "trace/bus.hpp"
#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"
#include "wire/transport.hpp"

namespace mpx::runtime {

namespace {
// How soon the loop tries again to hand replies to a peer that had no room for them (ZeroMQ does not say when).
constexpr long unread_retry_ms = 2;
constexpr std::size_t batch = 256;  // messages handled per wake-up before timers and deaths get a turn
constexpr std::size_t side_read_chunk = 64 * 1024;
// How long the session's end waits for the node agents to confirm they were told to stop.
constexpr auto node_shutdown_wait = std::chrono::milliseconds(1000);
constexpr int side_backlog = 128;
// An unqueried error report is kept this long, then forgotten, so the table stays bounded.
constexpr auto error_report_lifetime = std::chrono::seconds(300);
// Dead actors whose counters a snapshot still shows (and whose names a restarted actor's restart count comes from).
constexpr std::size_t dead_actors_kept = 64;
// Supervised states kept between two snapshots: past this, those of ended processes go (a snapshot prunes them too).
constexpr std::size_t supervised_kept = 1024;
// mpx::kind_latency_bounds in nanoseconds, the unit a handler is timed in.
constexpr auto kind_latency_bound_ns = [] {
  std::array<std::uint64_t, mpx::kind_latency_bounds.size()> ns{};
  for (std::size_t i = 0; i < ns.size(); ++i) ns[i] = static_cast<std::uint64_t>(mpx::kind_latency_bounds[i] * 1e9 + 0.5);
  return ns;
}();

// What a reply kept for a peer that does not read costs the coordinator.
std::size_t kept_bytes(const mpx::wire::Envelope& envelope) {
  std::size_t bytes = sizeof(envelope);
  for (const auto& frame : envelope.body) bytes += sizeof(zmq::message_t) + frame.size();
  return bytes;
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
}  // namespace

Coordinator::Coordinator(zmq::context_t& context, std::string endpoint, std::optional<wire::CurveServer> curve)
    : context_(context),
      endpoint_(std::move(endpoint)),
      control_endpoint_("inproc://mpx-coordinator-control-" + std::to_string(reinterpret_cast<std::uintptr_t>(this))),
      local_endpoint_("inproc://mpx-coordinator-" + std::to_string(reinterpret_cast<std::uintptr_t>(this))),
      router_(context, zmq::socket_type::router),
      control_(context, zmq::socket_type::pair),
      curve_(std::move(curve)),
      nodes_(std::make_unique<Nodes>(*this)) {
  if (curve_) {
    nodes_->set_own_user(curve_->own_user);
    // Bound before the ROUTER, so that no connection comes before the handler that admits it.
    zap_ = zmq::socket_t(context, zmq::socket_type::rep);
    zap_.set(zmq::sockopt::linger, 0);
    zap_.bind(wire::zap_endpoint);
    wire::make_curve_server(router_, *curve_);
    const std::string monitor =
        "inproc://mpx-coordinator-handshakes-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
    wire::monitor_handshake_failures(router_, monitor);
    handshakes_ = zmq::socket_t(context, zmq::socket_type::pair);
    handshakes_.set(zmq::sockopt::linger, 0);
    handshakes_.connect(monitor);
  }
  // A full pipe to a peer reports EAGAIN instead of dropping the reply (which a ROUTER would do), and a peer that is
  // gone reports EHOSTUNREACH: replies to a live peer are never dropped, and a dead one never blocks us ("Bounds").
  router_.set(zmq::sockopt::sndhwm, wire::store_bounds.router_pipe_replies);
  router_.set(zmq::sockopt::router_mandatory, 1);
  endpoint_ = wire::bind(router_, endpoint_);
  router_.bind(local_endpoint_);
  router_.set(zmq::sockopt::linger, 0);
  control_.bind(control_endpoint_);
}

Coordinator::~Coordinator() { stop(); }

void Coordinator::handle(wire::Kind kind, Handler handler) {
  handlers_[static_cast<std::uint16_t>(kind)] = std::move(handler);
}

void Coordinator::on_death(DeathHook hook) { death_hooks_.push_back(std::move(hook)); }

void Coordinator::on_metrics(MetricsCollector collector) { metrics_collectors_.push_back(std::move(collector)); }

bool Coordinator::open_side_door(const std::string& path) {
  if (running_ || side_listen_ >= 0) return false;
  const int fd = wire::listen_unix_at(path, side_backlog);
  if (fd < 0) return false;
  side_epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = 0;  // the door itself; connections are numbered from 1
  if (side_epoll_ < 0 || ::epoll_ctl(side_epoll_, EPOLL_CTL_ADD, fd, &event) != 0) {
    if (side_epoll_ >= 0) ::close(side_epoll_);
    side_epoll_ = -1;
    ::close(fd);
    ::unlink(path.c_str());
    return false;
  }
  side_listen_ = fd;
  side_path_ = path;
  return true;
}

void Coordinator::close_side_door() {
  while (!sides_.empty()) side_drop(sides_.begin());
  if (side_listen_ >= 0) {
    ::close(side_listen_);
    ::unlink(side_path_.c_str());
  }
  if (side_epoll_ >= 0) ::close(side_epoll_);
  side_listen_ = side_epoll_ = -1;
}

// Out of the epoll set explicitly: a forked child may hold a copy of the descriptor, which would keep it there.
void Coordinator::side_drop(std::map<std::uint64_t, SideConnection>::iterator it) {
  ::epoll_ctl(side_epoll_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  ::close(it->second.fd);
  sides_.erase(it);
}

void Coordinator::side_watch_out(SideConnection& c, std::uint64_t serial) {
  const bool want = !c.out.empty();
  if (want == c.watching_out) return;
  epoll_event event{};
  event.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  event.data.u64 = serial;
  if (::epoll_ctl(side_epoll_, EPOLL_CTL_MOD, c.fd, &event) == 0) c.watching_out = want;
}

void Coordinator::side_events() {
  epoll_event events[64];
  const int n = ::epoll_wait(side_epoll_, events, 64, 0);
  for (int i = 0; i < n; ++i) {
    const std::uint64_t serial = events[i].data.u64;
    if (serial == 0) {
      side_accept();
      continue;
    }
    auto it = sides_.find(serial);
    if (it == sides_.end()) continue;
    bool open = true;
    if (events[i].events & EPOLLOUT) open = side_flush(it->second);
    if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) open = side_read(serial, it->second) && open;
    if (it->second.overflowed) {
      malformed_.fetch_add(1, std::memory_order_relaxed);
      open = false;
    }
    if (!open) {
      side_drop(it);
    } else {
      side_watch_out(it->second, serial);
    }
  }
}

void Coordinator::side_accept() {
  pid_t peer = 0;
  for (int fd; (fd = wire::accept_unix_peer(side_listen_, peer)) >= 0;) {
    const std::uint64_t serial = next_side_++;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = serial;
    if (::epoll_ctl(side_epoll_, EPOLL_CTL_ADD, fd, &event) != 0) {
      ::close(fd);
      continue;
    }
    sides_.emplace(serial, SideConnection{fd, peer, {}, {}, false, false});
  }
}

// Reads what the connection has and handles every whole packet, like messages from the ROUTER. A malformed packet
// breaks the stream's framing: it is counted and the connection closed (the process learns it at its next read).
bool Coordinator::side_read(std::uint64_t serial, SideConnection& c, bool to_end) {
  bool open = true;
  side_scratch_.resize(side_read_chunk);
  for (std::size_t round = 0; to_end || round < batch; ++round) {
    const ssize_t n = ::recv(c.fd, side_scratch_.data(), side_scratch_.size(), MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(side_scratch_.data(), static_cast<std::size_t>(n));
      if (!to_end && static_cast<std::size_t>(n) < side_scratch_.size()) break;  // drained: no recv to learn EAGAIN
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    open = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    break;
  }
  std::size_t start = 0;
  const auto max_bytes = static_cast<std::size_t>(wire::limits().max_message_bytes);
  while (!c.overflowed) {
    std::optional<wire::Envelope> request;
    try {
      request = wire::take_packet(c.in, start, max_bytes);
    } catch (const ProtocolError&) {
      malformed_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (!request) break;
    if (request->header.sender != static_cast<std::uint64_t>(c.pid)) {
      malformed_.fetch_add(1, std::memory_order_relaxed);  // no one speaks for another process
      continue;
    }
    Peer peer;
    const std::string routing = "side:" + std::to_string(serial);  // never a ROUTER peer's: a stray reply is dropped
    peer.routing.rebuild(routing.data(), routing.size());
    peer.actor = request->header.sender;
    peer.side = serial;
    // A hello is recorded once its actor is known (handle_runtime), so the trace names it from its first message.
    if (request->header.kind != wire::Kind::hello) {
      MPX_TRACE_RECORD(trace::Direction::in, *request, peer.actor, trace::coordinator_actor);
    }
    dispatch(peer, *request);
  }
  c.in.erase(0, start);
  return open;
}

bool Coordinator::side_flush(SideConnection& c) { return wire::write_pending(c.fd, c.out); }

// A reply through the side door is written at once if the socket takes it, else kept in order until it does: the
// coordinator never blocks on a peer, and a peer that is gone loses its replies, as a ROUTER peer does.
void Coordinator::side_send(std::uint64_t serial, wire::Envelope& envelope) {
  auto it = sides_.find(serial);
  if (it == sides_.end()) return;
  auto& c = it->second;
  // A post (correlation 0) has nobody waiting for an answer: an error about it would only pile up unread.
  if (envelope.header.correlation == 0 && envelope.header.kind == wire::Kind::error) return;
  // A peer that leaves more than the bound unread is not reading: it is closed (once its turn ends), not buffered for.
  if (c.overflowed || c.out.size() > wire::store_bounds.side_unread_bytes) {
    c.overflowed = true;
    return;
  }
  const bool idle = c.out.empty();
  wire::append_packet(c.out, envelope, 0);
  if (idle) (void)side_flush(c);  // a broken one is closed when its reading end reports it
  side_watch_out(c, serial);
}

void Coordinator::start() {
  if (running_) return;
  running_ = true;
  // The root process sends no hello (its threads talk to the coordinator from inside): it is an actor from the start.
  if (const auto& st = state(); st.root_pid > 0) {
    actor_counters_[static_cast<std::uint64_t>(st.root_pid)].name = st.self.name;
  }
  thread_ = std::thread([this] { run(); });
}

void Coordinator::stop() {
  if (!running_) return;
  running_ = false;
  {
    zmq::socket_t poke(context_, zmq::socket_type::pair);
    poke.connect(control_endpoint_);
    poke.send(zmq::str_buffer("stop"), zmq::send_flags::none);
  }
  if (thread_.joinable()) thread_.join();
  close_side_door();
  for (auto& [pid, fd] : watched_) ::close(fd);
  watched_.clear();
}

CoordinatorStats Coordinator::stats() const noexcept {
  return CoordinatorStats{received_.load(), malformed_.load(), actors_.load(), denied_.load(), unauthenticated_.load(),
                          forged_.load()};
}

void Coordinator::reply(const Peer& peer, wire::Envelope& reply) {
  MPX_TRACE_RECORD(trace::Direction::out, reply, trace::coordinator_actor, peer.actor);
  if (auto it = actor_counters_.find(peer.actor); it != actor_counters_.end()) ++it->second.out;
  if (peer.side != 0) {
    side_send(peer.side, reply);
    return;
  }
  const auto routing = [&] { return std::string(peer.routing.data<char>(), peer.routing.size()); };
  if (!unread_.empty() && unread_.count(routing())) {
    keep_unread(routing(), reply);  // behind the replies it has not taken yet
    return;
  }
  if (!router_send(peer.routing, reply)) keep_unread(routing(), reply);
}

bool Coordinator::router_send(const zmq::message_t& routing, wire::Envelope& envelope) {
  try {
    return wire::send(router_, envelope, 0, &routing, true);
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return true;  // the peer is gone: nobody is left to read it
    throw;
  }
}

// A peer whose pipe is full is not reading. Its replies wait here, in order, until it does; past the bound it is cut
// off (its replies dropped, its messages refused and counted), as the side door closes such a connection.
void Coordinator::keep_unread(std::string routing, wire::Envelope& envelope) {
  // A post (correlation 0) has nobody waiting for an answer: an error about it would only pile up unread.
  if (envelope.header.correlation == 0 && envelope.header.kind == wire::Kind::error) return;
  if (cut_off_.count(routing)) return;
  auto& unread = unread_[routing];
  const std::size_t bytes = kept_bytes(envelope);
  if (unread.replies.size() >= wire::store_bounds.router_unread_replies ||
      unread.bytes + bytes > wire::store_bounds.router_unread_bytes) {
    unread_.erase(routing);
    malformed_.fetch_add(1, std::memory_order_relaxed);
    if (cut_off_order_.size() >= wire::store_bounds.router_cut_off_kept) {
      cut_off_.erase(cut_off_order_.front());
      cut_off_order_.pop_front();
    }
    cut_off_.insert(routing);
    cut_off_order_.push_back(std::move(routing));
    return;
  }
  unread.bytes += bytes;
  unread.replies.push_back(std::move(envelope));
}

// ZeroMQ says when a socket can send to some peer, not to which: the loop retries each waiting peer a little later.
void Coordinator::flush_unread() {
  for (auto it = unread_.begin(); it != unread_.end();) {
    auto& unread = it->second;
    const zmq::message_t routing(it->first.data(), it->first.size());
    while (!unread.replies.empty()) {
      auto& front = unread.replies.front();
      const std::size_t bytes = kept_bytes(front);
      if (!router_send(routing, front)) break;
      unread.bytes -= bytes;
      unread.replies.pop_front();
    }
    it = unread.replies.empty() ? unread_.erase(it) : std::next(it);
  }
}

bool Coordinator::is_cut_off(const zmq::message_t& routing) const {
  return !cut_off_.empty() && cut_off_.count(std::string(routing.data<char>(), routing.size())) != 0;
}

void Coordinator::reply_error(const Peer& peer, const wire::Header& request, wire::ErrorCode code,
                              std::string_view message) {
  auto e = wire::make_error(request, code, message);
  reply(peer, e);
}

bool Coordinator::watch(wire::ActorId actor) {
  if (wire::node_of(actor) != wire::coordinator_node) {
    const bool watching = nodes_->watch(actor);
    actors_.store(watched_.size() + nodes_->watched());
    return watching;
  }
  const auto pid = static_cast<pid_t>(actor);
  if (watched_.count(pid)) return true;
  const int fd = pidfd_open(pid);
  if (fd < 0) return false;
  watched_.emplace(pid, fd);
  actors_.store(watched_.size() + nodes_->watched());
  return true;
}

bool Coordinator::has_exited(wire::ActorId actor) const {
  if (wire::node_of(actor) != wire::coordinator_node) return nodes_->has_exited(actor);
  auto it = watched_.find(static_cast<pid_t>(actor));
  if (it == watched_.end()) return false;
  pollfd exited{it->second, POLLIN, 0};
  return ::poll(&exited, 1, 0) == 1;
}

// What a dead process wrote to its side-door connections before it died is in their socket buffers: it is handled
// before the death hooks run, so a post that returned (a put, a release) is never undone by its sender's death.
void Coordinator::side_drain(pid_t pid) {
  for (auto it = sides_.begin(); it != sides_.end();) {
    auto next = std::next(it);
    if (it->second.pid == pid) {
      bool open = side_read(it->first, it->second, true);
      if (it->second.overflowed) open = false;
      if (!open) {
        side_drop(it);
      } else {
        side_watch_out(it->second, it->first);
      }
    }
    it = next;
  }
}

void Coordinator::reap(pid_t pid) {
  auto it = watched_.find(pid);
  if (it == watched_.end()) return;
  side_drain(pid);
  ::close(it->second);
  watched_.erase(it);
  actors_.store(watched_.size() + nodes_->watched());
  actor_died(static_cast<wire::ActorId>(pid));
}

void Coordinator::actor_died(wire::ActorId actor) {
  actors_.store(watched_.size() + nodes_->watched());
  actor_exited(actor);
  for (auto& hook : death_hooks_) hook(actor);
}

void Coordinator::run() {
  std::vector<zmq::pollitem_t> items;
  std::vector<pid_t> item_pids;
  for (;;) {
    items.clear();
    item_pids.clear();
    items.push_back({router_.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({control_.handle(), 0, ZMQ_POLLIN, 0});
    const std::size_t side_item = items.size();
    if (side_epoll_ >= 0) items.push_back({nullptr, side_epoll_, ZMQ_POLLIN, 0});
    const std::size_t security_item = items.size();
    if (curve_) {
      items.push_back({zap_.handle(), 0, ZMQ_POLLIN, 0});
      items.push_back({handshakes_.handle(), 0, ZMQ_POLLIN, 0});
    }
    const std::size_t first_pid = items.size();
    for (const auto& [pid, fd] : watched_) {
      items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
      item_pids.push_back(pid);
    }
    long timeout = timers_.next_timeout_ms(TimerWheel::Clock::now());
    if (!unread_.empty()) timeout = timeout < 0 ? unread_retry_ms : std::min(timeout, unread_retry_ms);
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      nodes_->shutdown(router_, node_shutdown_wait);
      return;
    }
    // Side-door messages first: a process's last messages there were in the kernel before it exited, so before anything
    // the ROUTER has about its exit (a pool owner's pool_worker_exit); and, as the ROUTER's, before deaths.
    if (side_epoll_ >= 0 && (items[side_item].revents & ZMQ_POLLIN)) side_events();
    if (curve_ && ((items[security_item].revents | items[security_item + 1].revents) & ZMQ_POLLIN)) serve_security();
    if (items[0].revents & ZMQ_POLLIN) {
      for (std::size_t i = 0; i < batch; ++i) {
        Peer peer;
        std::optional<wire::Envelope> request;
        wire::Credentials credentials;
        try {
          request = wire::recv(router_, &peer.routing, true, &credentials);
        } catch (const ProtocolError&) {
          malformed_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if (!request) break;
        if (is_cut_off(peer.routing)) {
          malformed_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        peer.actor = request->header.sender;
        // A hello is recorded once its actor is known (handle_runtime), so the trace names it from its first message.
        if (request->header.kind != wire::Kind::hello) {
          MPX_TRACE_RECORD(trace::Direction::in, *request, peer.actor, trace::coordinator_actor);
        }
        if (refuse_unauthenticated(peer, *request, credentials)) continue;
        if (!nodes_->sender_allowed(credentials.user_id, *request)) {
          // A peer that speaks for an actor of another node than its key's: never executed (PROTOCOL.md, "Nodes").
          forged_.fetch_add(1, std::memory_order_relaxed);
          reply_error(peer, request->header, wire::ErrorCode::unauthenticated,
                      "mpx: sender " + wire::actor_name(request->header.sender) +
                          " is not an actor of the node this connection's key ('" + credentials.user_id +
                          "') belongs to");
          continue;
        }
        dispatching_user_ = &credentials.user_id;
        dispatch(peer, *request);
        dispatching_user_ = nullptr;
      }
    }
    for (std::size_t i = 0; i < item_pids.size(); ++i) {
      if (items[i + first_pid].revents & ZMQ_POLLIN) reap(item_pids[i]);
    }
    if (!unread_.empty()) flush_unread();
    timers_.advance(TimerWheel::Clock::now());
  }
}

void Coordinator::serve_security() {
  while (const auto admitted = wire::serve_zap(zap_, curve_->allowed)) {
    if (!*admitted) denied_.fetch_add(1, std::memory_order_relaxed);
  }
  denied_.fetch_add(wire::take_handshake_failures(handshakes_), std::memory_order_relaxed);
}

// With CURVE on, ZAP admits a tcp connection only with a User-Id, so this refuses nothing that a correct libzmq lets
// through; it is the rule itself, written where the messages are handled: no state changes for an unknown peer.
bool Coordinator::refuse_unauthenticated(const Peer& peer, const wire::Envelope& request,
                                         const wire::Credentials& credentials) {
  if (!curve_ || !credentials.network || !credentials.user_id.empty() ||
      wire::open_to_unauthenticated(request.header.kind)) {
    return false;
  }
  unauthenticated_.fetch_add(1, std::memory_order_relaxed);
  reply_error(peer, request.header, wire::ErrorCode::unauthenticated,
              "mpx: '" + std::string(wire::kind_name(request.header.kind)) +
                  "' needs a connection that the coordinator's ZAP handler authenticated");
  return true;
}

void Coordinator::dispatch(Peer& peer, wire::Envelope& request) {
  // A post sent as a request (PROTOCOL.md, "Durable posts"): answered `ok` once handled. A handler may take the peer.
  if (request.header.flags & static_cast<std::uint32_t>(wire::Flag::acknowledge)) {
    Peer acknowledge_to = peer.copy();
    const wire::Header header = request.header;
    dispatch_one(peer, request);
    auto ok = wire::make_reply(header, wire::Kind::ok, encode(Object{}));
    reply(acknowledge_to, ok);
    return;
  }
  dispatch_one(peer, request);
}

void Coordinator::dispatch_one(Peer& peer, wire::Envelope& request) {
  const auto started = std::chrono::steady_clock::now();
  const auto kind_number = static_cast<std::uint16_t>(request.header.kind);
  if (auto it = actor_counters_.find(peer.actor); it != actor_counters_.end()) ++it->second.in;
  try {
    const auto kind = request.header.kind;
    if (kind == wire::Kind::hello || kind == wire::Kind::ping || kind == wire::Kind::stats ||
        kind == wire::Kind::process_error || kind == wire::Kind::process_error_query || kind == wire::Kind::metrics) {
      handle_runtime(peer, request);
    } else if (wire::is_node_kind(kind)) {
      static const std::string no_user;
      nodes_->handle(peer, request, dispatching_user_ != nullptr ? *dispatching_user_ : no_user);
    } else if (auto it = handlers_.find(static_cast<std::uint16_t>(kind)); it != handlers_.end()) {
      it->second(peer, request);
    } else {
      // A kind this coordinator does not serve (a reply kind sent as a request, for instance).
      malformed_.fetch_add(1, std::memory_order_relaxed);
      reply_error(peer, request.header, wire::ErrorCode::unsupported,
                  "mpx: the coordinator does not serve '" + std::string(wire::kind_name(kind)) + "' requests");
      return;
    }
    received_.fetch_add(1, std::memory_order_relaxed);
    if (kind_number < kind_counters_.size()) {
      auto& counter = kind_counters_[kind_number];
      const auto nanoseconds = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
      ++counter.count;
      counter.nanoseconds += nanoseconds;
      const auto bucket = std::lower_bound(kind_latency_bound_ns.begin(), kind_latency_bound_ns.end(), nanoseconds);
      if (bucket != kind_latency_bound_ns.end()) ++counter.buckets[bucket - kind_latency_bound_ns.begin()];
    }
  } catch (const ProtocolError& e) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    reply_error(peer, request.header, wire::ErrorCode::malformed, e.what());
  } catch (const SerializationError& e) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    reply_error(peer, request.header, wire::ErrorCode::malformed, e.what());
  }
}

namespace {
void cut(std::string& field, std::size_t bound) {
  if (field.size() <= bound) return;
  constexpr std::string_view mark = " [cut by the coordinator]";
  field.resize(bound > mark.size() ? bound - mark.size() : 0);
  if (bound > mark.size()) field += mark;
  field.shrink_to_fit();  // what was decoded may be far larger than what is kept
}
}  // namespace

// Bounded in count and bytes (wire::store_bounds): a report is cut to size, and the oldest ones make room.
void Coordinator::keep_error(wire::ActorId pid, ErrorReport report) {
  const auto& bounds = wire::store_bounds;
  cut(report.type, bounds.error_name_bytes);
  cut(report.host, bounds.error_name_bytes);
  cut(report.message, bounds.error_field_bytes);
  if (auto old = errors_.find(pid); old != errors_.end()) forget_error(old);
  while (!errors_.empty() && (errors_.size() >= bounds.error_reports ||
                              error_bytes_ + report.bytes() > bounds.error_report_bytes)) {
    forget_error(errors_.find(error_order_.begin()->second));
  }
  report.order = next_error_order_++;
  report.expiry = timers_.schedule(TimerWheel::Clock::now() + error_report_lifetime, [this, pid] {
    if (auto it = errors_.find(pid); it != errors_.end()) forget_error(it);
  });
  error_bytes_ += report.bytes();
  error_order_.emplace(report.order, pid);
  errors_.emplace(pid, std::move(report));
}

void Coordinator::forget_error(std::unordered_map<wire::ActorId, ErrorReport>::iterator it) {
  timers_.cancel(it->second.expiry);
  error_bytes_ -= it->second.bytes();
  error_order_.erase(it->second.order);
  errors_.erase(it);
}

void Coordinator::handle_runtime(Peer& peer, wire::Envelope& request) {
  const auto& h = request.header;
  switch (h.kind) {
    case wire::Kind::hello: {
      auto [pid, parent, name] = request.body_as<std::tuple<std::int64_t, std::int64_t, std::string>>();
      (void)parent;
      (void)name;
      if (pid <= 0 || static_cast<std::uint64_t>(pid) != wire::pid_of(h.sender)) {
        throw ProtocolError("mpx: hello with pid " + std::to_string(pid) + " from actor " + wire::actor_name(h.sender));
      }
      if (watch(h.sender)) actor_hello(h.sender, name);
      MPX_TRACE_ACTOR(h.sender, pid, name);
      MPX_TRACE_RECORD(trace::Direction::in, request, peer.actor, trace::coordinator_actor);
      return;  // no reply: hello is posted, not requested
    }
    case wire::Kind::ping: {
      auto pong = wire::make_reply(h, wire::Kind::pong, encode(Object{}));
      reply(peer, pong);
      return;
    }
    case wire::Kind::stats: {
      const auto s = stats();
      auto r = wire::make_reply(h, wire::Kind::ok, encode(std::make_tuple(s.received, s.malformed, s.actors)));
      reply(peer, r);
      return;
    }
    case wire::Kind::metrics: {
      if (request.body.size() != 1 || !request.body_as<Object>().is_none()) {
        throw ProtocolError("mpx: 'metrics' takes a nil body");
      }
      auto r = wire::make_reply(h, wire::Kind::ok, encode(metrics_snapshot()));
      reply(peer, r);
      return;
    }
    case wire::Kind::process_error: {
      auto [pid, type, message, host] =
          request.body_as<std::tuple<std::int64_t, std::string, std::string, std::string>>();
      if (pid <= 0 || pid > 0xffff'ffffLL) throw ProtocolError("mpx: process_error with pid " + std::to_string(pid));
      // The pid is the reporter's on its own host: the sender's node makes it an actor id.
      const auto actor = wire::actor_id(wire::node_of(h.sender), static_cast<std::uint64_t>(pid));
      keep_error(actor, ErrorReport{std::move(type), std::move(message), std::move(host)});
      if (auto it = actor_counters_.find(actor); it != actor_counters_.end()) {
        it->second.raised = true;
      }
      auto r = wire::make_reply(h, wire::Kind::ok, encode(Object{}));
      reply(peer, r);
      return;
    }
    case wire::Kind::process_error_query: {
      auto [pid] = request.body_as<std::tuple<std::int64_t>>();
      auto it = errors_.find(static_cast<wire::ActorId>(pid));  // an actor id: the pid itself on this host
      std::string body;
      if (it == errors_.end()) {
        body = encode(std::make_tuple(false, std::string(), std::string(), pid, std::string()));
      } else {
        body = encode(std::make_tuple(true, it->second.type, it->second.message, pid, it->second.host));
        forget_error(it);
      }
      auto r = wire::make_reply(h, wire::Kind::ok, std::move(body));
      reply(peer, r);
      return;
    }
    default:
      throw ProtocolError("mpx: not a runtime kind");
  }
}

std::uint64_t Coordinator::restarts_before(const std::string& name) const {
  if (name.empty()) return 0;
  for (auto it = dead_actors_.rbegin(); it != dead_actors_.rend(); ++it) {
    if (it->name == name) return it->restarts + 1;
  }
  return 0;
}

void Coordinator::actor_hello(wire::ActorId actor, std::string name) {
  auto& counters = actor_counters_[actor];
  // A named actor that comes back (a supervisor restarted it) carries on the count of the one before it.
  if (counters.name != name) counters.restarts = restarts_before(name);
  counters.name = std::move(name);
}

void Coordinator::actor_exited(wire::ActorId actor) {
  auto it = actor_counters_.find(actor);
  if (it == actor_counters_.end()) return;
  auto& c = it->second;
  dead_actors_.push_back(mpx::ActorMetrics{static_cast<std::int64_t>(actor), std::move(c.name), false, c.in, c.out, c.restarts,
                                           std::string(c.raised ? "failed" : "exited")});
  actor_counters_.erase(it);
  if (dead_actors_.size() > dead_actors_kept) dead_actors_.pop_front();
}

void Coordinator::supervised_state(pid_t pid, std::string name, std::string_view state) {
  const auto known = std::find(mpx::actor_states.begin(), mpx::actor_states.end(), state);
  if (known == mpx::actor_states.end()) throw ValueError("mpx: '" + std::string(state) + "' is not an actor state");
  std::lock_guard lock(supervised_mutex_);
  supervised_[pid] = Supervised{std::move(name), *known};
  if (supervised_.size() > supervised_kept) {
    std::erase_if(supervised_, [](const auto& entry) {
      return entry.second.state == "exited" || entry.second.state == "failed";
    });
  }
}

void Coordinator::apply_supervised_states(mpx::Metrics& m) {
  std::lock_guard lock(supervised_mutex_);
  std::set<pid_t> shown;
  for (auto& actor : m.actors) {
    const auto pid = static_cast<pid_t>(actor.pid);
    if (auto it = supervised_.find(pid); it != supervised_.end()) {
      actor.state = it->second.state;
      shown.insert(pid);
    }
  }
  for (auto it = supervised_.begin(); it != supervised_.end();) {
    if (shown.count(it->first)) {
      ++it;
      continue;
    }
    const auto state = it->second.state;
    if (state == "starting" || state == "restarting") {
      // Started, and not said hello yet: the coordinator does not know it, its supervisor does.
      m.actors.push_back(mpx::ActorMetrics{it->first, it->second.name, true, 0, 0, restarts_before(it->second.name),
                                           std::string(state)});
      ++it;
    } else if (state == "running" || state == "stopping") {
      ++it;  // its hello is on its way
    } else {
      it = supervised_.erase(it);  // ended, and no longer among the actors a snapshot shows
    }
  }
}

mpx::Metrics Coordinator::metrics_snapshot() {
  mpx::Metrics m;
  m.messages = received_.load(std::memory_order_relaxed);
  m.malformed = malformed_.load(std::memory_order_relaxed);
  m.denied = denied_.load(std::memory_order_relaxed);
  m.unauthenticated = unauthenticated_.load(std::memory_order_relaxed);
  m.forged = forged_.load(std::memory_order_relaxed);
  for (const auto& info : wire::known_kinds) {
    const auto number = static_cast<std::uint16_t>(info.kind);
    if (number >= kind_counters_.size() || kind_counters_[number].count == 0) continue;
    const auto& counter = kind_counters_[number];
    std::vector<std::uint64_t> cumulative(counter.buckets.size());
    std::partial_sum(counter.buckets.begin(), counter.buckets.end(), cumulative.begin());
    m.kinds.push_back(mpx::KindLatency{std::string(info.name), counter.count,
                                       static_cast<double>(counter.nanoseconds) / 1e9, std::move(cumulative)});
  }
  for (const auto& [actor, c] : actor_counters_) {
    m.actors.push_back(
        mpx::ActorMetrics{static_cast<std::int64_t>(actor), c.name, true, c.in, c.out, c.restarts, "running"});
  }
  m.actors.insert(m.actors.end(), dead_actors_.begin(), dead_actors_.end());
  apply_supervised_states(m);
  for (auto& collect : metrics_collectors_) collect(m);
  return m;
}

}  // namespace mpx::runtime
