#include "runtime/coordinator.hpp"

#include <cerrno>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "trace/bus.hpp"
#include "wire/transport.hpp"

namespace mpx::runtime {

namespace {
constexpr std::size_t batch = 256;  // messages handled per wake-up before timers and deaths get a turn
// An unqueried error report is kept this long, then forgotten, so the table stays bounded.
constexpr auto error_report_lifetime = std::chrono::seconds(300);

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
}  // namespace

Coordinator::Coordinator(zmq::context_t& context, std::string endpoint)
    : context_(context),
      endpoint_(std::move(endpoint)),
      control_endpoint_("inproc://mpx-coordinator-control-" + std::to_string(reinterpret_cast<std::uintptr_t>(this))),
      local_endpoint_("inproc://mpx-coordinator-" + std::to_string(reinterpret_cast<std::uintptr_t>(this))),
      router_(context, zmq::socket_type::router),
      control_(context, zmq::socket_type::pair) {
  // Replies to a live peer must never be dropped: a peer has few replies outstanding, and a ROUTER drops on a full
  // pipe. Messages to a peer that is gone are still dropped, which is what keeps a dead waiter from blocking us.
  router_.set(zmq::sockopt::sndhwm, 0);
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

void Coordinator::start() {
  if (running_) return;
  running_ = true;
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
  for (auto& [pid, fd] : watched_) ::close(fd);
  watched_.clear();
}

CoordinatorStats Coordinator::stats() const noexcept {
  return CoordinatorStats{received_.load(), malformed_.load(), actors_.load()};
}

void Coordinator::reply(const Peer& peer, wire::Envelope& reply) {
  MPX_TRACE_RECORD(trace::Direction::out, reply, trace::coordinator_actor, peer.actor);
  // A ROUTER drops a message to a peer that is gone or full: a dead waiter can never block the coordinator.
  wire::send(router_, reply, 0, &peer.routing, true);
}

void Coordinator::reply_error(const Peer& peer, const wire::Header& request, wire::ErrorCode code,
                              std::string_view message) {
  auto e = wire::make_error(request, code, message);
  reply(peer, e);
}

bool Coordinator::watch(pid_t pid) {
  if (watched_.count(pid)) return true;
  const int fd = pidfd_open(pid);
  if (fd < 0) return false;
  watched_.emplace(pid, fd);
  actors_.store(watched_.size());
  return true;
}

bool Coordinator::has_exited(pid_t pid) const {
  auto it = watched_.find(pid);
  if (it == watched_.end()) return false;
  pollfd exited{it->second, POLLIN, 0};
  return ::poll(&exited, 1, 0) == 1;
}

void Coordinator::reap(pid_t pid) {
  auto it = watched_.find(pid);
  if (it == watched_.end()) return;
  ::close(it->second);
  watched_.erase(it);
  actors_.store(watched_.size());
  for (auto& hook : death_hooks_) hook(pid);
}

void Coordinator::run() {
  std::vector<zmq::pollitem_t> items;
  std::vector<pid_t> item_pids;
  for (;;) {
    items.clear();
    item_pids.clear();
    items.push_back({router_.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({control_.handle(), 0, ZMQ_POLLIN, 0});
    for (const auto& [pid, fd] : watched_) {
      items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
      item_pids.push_back(pid);
    }
    const long timeout = timers_.next_timeout_ms(TimerWheel::Clock::now());
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[1].revents & ZMQ_POLLIN) return;
    if (items[0].revents & ZMQ_POLLIN) {
      for (std::size_t i = 0; i < batch; ++i) {
        Peer peer;
        std::optional<wire::Envelope> request;
        try {
          request = wire::recv(router_, &peer.routing, true);
        } catch (const ProtocolError&) {
          malformed_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if (!request) break;
        peer.actor = request->header.sender;
        // A hello is recorded once its actor is known (handle_runtime), so the trace names it from its first message.
        if (request->header.kind != wire::Kind::hello) {
          MPX_TRACE_RECORD(trace::Direction::in, *request, peer.actor, trace::coordinator_actor);
        }
        dispatch(peer, *request);
      }
    }
    for (std::size_t i = 0; i < item_pids.size(); ++i) {
      if (items[i + 2].revents & ZMQ_POLLIN) reap(item_pids[i]);
    }
    timers_.advance(TimerWheel::Clock::now());
  }
}

void Coordinator::dispatch(Peer& peer, wire::Envelope& request) {
  try {
    const auto kind = request.header.kind;
    if (kind == wire::Kind::hello || kind == wire::Kind::ping || kind == wire::Kind::stats ||
        kind == wire::Kind::process_error || kind == wire::Kind::process_error_query) {
      handle_runtime(peer, request);
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
  } catch (const ProtocolError& e) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    reply_error(peer, request.header, wire::ErrorCode::malformed, e.what());
  } catch (const SerializationError& e) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    reply_error(peer, request.header, wire::ErrorCode::malformed, e.what());
  }
}

void Coordinator::handle_runtime(Peer& peer, wire::Envelope& request) {
  const auto& h = request.header;
  switch (h.kind) {
    case wire::Kind::hello: {
      auto [pid, parent, name] = request.body_as<std::tuple<std::int64_t, std::int64_t, std::string>>();
      (void)parent;
      (void)name;
      if (pid <= 0) throw ProtocolError("mpx: hello with pid " + std::to_string(pid));
      watch(static_cast<pid_t>(pid));
      MPX_TRACE_ACTOR(static_cast<std::uint64_t>(pid), pid, name);
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
    case wire::Kind::process_error: {
      auto [pid, type, message, host] =
          request.body_as<std::tuple<std::int64_t, std::string, std::string, std::string>>();
      if (pid <= 0) throw ProtocolError("mpx: process_error with pid " + std::to_string(pid));
      const auto key = static_cast<pid_t>(pid);
      if (auto old = errors_.find(key); old != errors_.end()) timers_.cancel(old->second.expiry);
      auto expiry = timers_.schedule(TimerWheel::Clock::now() + error_report_lifetime, [this, key] { errors_.erase(key); });
      errors_[key] = ErrorReport{std::move(type), std::move(message), std::move(host), expiry};
      auto r = wire::make_reply(h, wire::Kind::ok, encode(Object{}));
      reply(peer, r);
      return;
    }
    case wire::Kind::process_error_query: {
      auto [pid] = request.body_as<std::tuple<std::int64_t>>();
      auto it = errors_.find(static_cast<pid_t>(pid));
      std::string body;
      if (it == errors_.end()) {
        body = encode(std::make_tuple(false, std::string(), std::string(), pid, std::string()));
      } else {
        body = encode(std::make_tuple(true, it->second.type, it->second.message, pid, it->second.host));
        timers_.cancel(it->second.expiry);
        errors_.erase(it);
      }
      auto r = wire::make_reply(h, wire::Kind::ok, std::move(body));
      reply(peer, r);
      return;
    }
    default:
      throw ProtocolError("mpx: not a runtime kind");
  }
}

}  // namespace mpx::runtime
