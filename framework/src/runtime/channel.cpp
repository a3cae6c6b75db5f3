#include "runtime/channel.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <system_error>
#include <atomic>
#include <memory>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/coordinator.hpp"
#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "wire/actor_id.hpp"
#include "wire/interrupted.hpp"
#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"
#include "wire/transport.hpp"

namespace mpx::runtime {

namespace {
// How many threads of process `pid` have a channel. A forked child inherits the parent's figures, so they count only
// while `pid` is the calling process. Changes are rare (a thread's first and last mpx call) and take the mutex; the
// read, on every Lock release, does not.
struct ChannelCount {
  std::mutex mutex;
  std::atomic<pid_t> pid{0};
  std::atomic<int> live{0};

  void add() {
    std::lock_guard guard(mutex);
    if (pid.load() != self_pid()) {
      live.store(0);
      pid.store(self_pid());
    }
    live.fetch_add(1);
  }
  void remove() {
    std::lock_guard guard(mutex);
    if (pid.load() == self_pid()) live.fetch_sub(1);
  }
  bool at_most_one() const { return pid.load() != self_pid() || live.load() <= 1; }
};
ChannelCount channel_count;

std::mutex thread_exit_hooks_mutex;
std::vector<void (*)()> thread_exit_hooks;  // guarded by thread_exit_hooks_mutex

// The thread's channel. Trivially destructible, so it can still be read while the thread's thread_local objects are
// destroyed (and, on the main thread, by static destructors after them): a static Pool or Executor still alive when
// main returns shuts down through it.
struct ThreadChannel {
  pid_t owner = 0;
  Channel* channel = nullptr;  // owned; abandoned (never closed) in a forked child, whose context is not its own
  bool closed = false;         // the thread is ending and its closer ran: a channel made now is never closed
};
constinit thread_local ThreadChannel this_thread;

// Closes the thread's channel when the thread ends (or, on the main thread, when main returns), after the exit hooks.
struct ThreadChannelCloser {
  ~ThreadChannelCloser() {
    if (this_thread.owner == self_pid() && this_thread.channel != nullptr) {
      std::vector<void (*)()> hooks;
      {
        std::lock_guard lock(thread_exit_hooks_mutex);
        hooks = thread_exit_hooks;
      }
      for (auto* hook : hooks) hook();
      delete std::exchange(this_thread.channel, nullptr);
      channel_count.remove();
    }
    this_thread.closed = true;
  }
};
thread_local ThreadChannelCloser this_thread_closer;
}  // namespace

void add_thread_exit_hook(void (*hook)()) {
  std::lock_guard lock(thread_exit_hooks_mutex);
  if (std::find(thread_exit_hooks.begin(), thread_exit_hooks.end(), hook) == thread_exit_hooks.end()) {
    thread_exit_hooks.push_back(hook);
  }
}

bool Channel::sole_in_process() { return channel_count.at_most_one(); }

namespace {
// How long a post through ZeroMQ waits for the coordinator's acknowledgement before it gives up on the coordinator.
constexpr auto post_acknowledge_timeout = std::chrono::seconds(60);

// What a hello says: this process, its parent and its name.
wire::Envelope make_hello() {
  const auto& self = state().self;
  return wire::make(wire::Kind::hello, 0, 0,
                    std::make_tuple(static_cast<std::int64_t>(::getpid()),
                                    static_cast<std::int64_t>(self.parent_pid), self.name));
}

std::optional<std::chrono::milliseconds> time_left(std::optional<std::chrono::steady_clock::time_point> deadline) {
  if (!deadline) return std::nullopt;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

std::optional<std::chrono::steady_clock::time_point> deadline_after(std::optional<std::chrono::milliseconds> timeout) {
  if (!timeout) return std::nullopt;
  return std::chrono::steady_clock::now() + *timeout;
}
}  // namespace

Channel::Channel(zmq::context_t& context, const std::string& endpoint) : Channel(context, endpoint, Posts::sent) {}

Channel::Channel(zmq::context_t& context, const std::string& endpoint, Posts posts, bool hello)
    : socket_(context, zmq::socket_type::dealer),
      actor_id_(self_actor()),
      endpoint_(endpoint),
      posts_(posts) {
  configure_connection(socket_, endpoint);
  socket_.set(zmq::sockopt::linger, 200);
  // Replies (batches of queue items) are bounded by what this thread asked for, and pushes answer its own
  // submissions: never drop one.
  socket_.set(zmq::sockopt::rcvhwm, 0);
  socket_.connect(endpoint);
  if (!hello) return;
  wire::Envelope message = make_hello();
  wire::send(socket_, message, actor_id_);
}

std::unique_ptr<Channel> Channel::for_pushes(zmq::context_t& context, const std::string& endpoint) {
  return std::unique_ptr<Channel>(new Channel(context, endpoint, Posts::sent, false));
}

bool Channel::wait_for_push(std::span<zmq::pollitem_t> others, std::optional<std::chrono::milliseconds> timeout) {
  wait_items_.clear();
  wait_items_.push_back({socket_.handle(), 0, ZMQ_POLLIN, 0});
  wait_items_.insert(wait_items_.end(), others.begin(), others.end());
  (void)wire::poll(wait_items_.data(), wait_items_.size(), timeout.value_or(std::chrono::milliseconds(-1)).count());
  for (std::size_t i = 0; i < others.size(); ++i) others[i].revents = wait_items_[i + 1].revents;
  return (wait_items_[0].revents & ZMQ_POLLIN) != 0;
}

std::optional<wire::Envelope> Channel::next_push() { return wire::recv(socket_, nullptr, true); }

Channel::Channel() : actor_id_(self_actor()) {}

Channel::~Channel() {
  if (side_fd_ >= 0) ::close(side_fd_);
}

bool Channel::open_side_door(const std::string& path) {
  const auto address = wire::unix_address(path);
  if (!address) return false;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  if (!wire::connect_unix(fd, *address)) {
    ::close(fd);
    return false;
  }
  side_fd_ = fd;
  endpoint_ = "unix:" + path;
  // The hello goes first on the connection, so the coordinator watches this process before anything else it sends.
  wire::Envelope hello = make_hello();
  side_write(hello);
  return true;
}

Channel& Channel::current() {
  const pid_t pid = self_pid();
  if (this_thread.owner != pid || this_thread.channel == nullptr) {
    require_initialized();
    ensure_coordinator();
    this_thread.owner = pid;
    // A channel made after the closer ran (a static Pool shutting down after main returned) lives as long as the
    // process: the context is never destroyed, so a socket left open holds nothing up.
    if (!this_thread.closed) (void)&this_thread_closer;
    // In the coordinator's own process, talk to it in memory; everyone else uses the side door when the session has
    // one, else the session's endpoint, where posts wait for their acknowledgement.
    const Coordinator* local = coordinator_if_running();
    if (local != nullptr) {
      this_thread.channel = new Channel(context(), local->local_endpoint(), Posts::sent);
    } else {
      auto channel = std::unique_ptr<Channel>(new Channel());
      if (!channel->open_side_door(side_door_path())) {
        channel.reset(new Channel(context(), state().session.coordinator_endpoint, Posts::acknowledged));
      }
      this_thread.channel = channel.release();
    }
    channel_count.add();
  }
  return *this_thread.channel;
}

void Channel::post(wire::Envelope message) {
  if (side_fd_ >= 0) {
    side_write(message);  // in the coordinator's socket buffer once written: it outlives this process
    return;
  }
  if (posts_ == Posts::acknowledged) {
    message.header.flags |= static_cast<std::uint32_t>(wire::Flag::acknowledge);
    (void)request(std::move(message), post_acknowledge_timeout);  // an error reply to a post is dropped, as ever
    return;
  }
  wire::send(socket_, message, actor_id_);
  unconfirmed_posts_ = true;
}

void Channel::flush(std::chrono::milliseconds timeout) {
  if (!unconfirmed_posts_) return;
  // Replies come in order on one connection: the pong proves every earlier post arrived.
  (void)request(wire::make(wire::Kind::ping, 0, 0, Object{}), timeout);
}

void Channel::flush_current(std::chrono::milliseconds timeout) {
  if (this_thread.owner == self_pid() && this_thread.channel) this_thread.channel->flush(timeout);
}

void Channel::leave_node_relay() {
  if (state().session.node == wire::coordinator_node) return;
  Channel& relayed = current();
  if (relayed.side_fd_ < 0) return;
  // The pong comes after everything sent before it was handled: nothing the thread sends directly can overtake it.
  auto pong = relayed.request(wire::make(wire::Kind::ping, 0, 0, Object{}), std::chrono::seconds(30));
  expect_ok(pong);
  auto direct = std::unique_ptr<Channel>(
      new Channel(context(), state().session.coordinator_endpoint, Posts::acknowledged, false));
  delete std::exchange(this_thread.channel, direct.release());
}

wire::Envelope Channel::request(wire::Envelope request, std::optional<std::chrono::milliseconds> timeout) {
  const std::uint64_t correlation = next_correlation_++;
  request.header.correlation = correlation;
  const auto kind = request.header.kind;
  if (side_fd_ >= 0) {
    side_write(request);
    return side_wait(correlation, kind, timeout);
  }
  wire::send(socket_, request, actor_id_);
  auto reply = zmq_wait(correlation, kind, timeout);
  unconfirmed_posts_ = false;
  return reply;
}

void Channel::no_reply(wire::Kind kind, std::chrono::milliseconds timeout) const {
  throw TimeoutError("mpx: no reply to '" + std::string(wire::kind_name(kind)) + "' from the coordinator at " +
                     endpoint_ + " within " + std::to_string(timeout.count()) + " ms");
}

wire::Envelope Channel::zmq_wait(std::uint64_t correlation, wire::Kind kind,
                                 std::optional<std::chrono::milliseconds> timeout) {
  const auto deadline = deadline_after(timeout);
  for (;;) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    const int ready = wire::poll(&item, 1, time_left(deadline).value_or(std::chrono::milliseconds(-1)).count());
    if (ready == 0) no_reply(kind, *timeout);
    std::optional<wire::Envelope> reply;
    try {
      reply = wire::recv(socket_, nullptr, true);
    } catch (const ProtocolError&) {
      continue;  // a malformed reply is dropped; the real one may still come
    }
    if (!reply) continue;
    if (reply->header.correlation != correlation) continue;  // a late reply to an earlier, timed-out request
    return std::move(*reply);
  }
}

void Channel::side_closed() const {
  // On a node the side door is the agent's relay: it closes when the agent ends, which ends this node's processes too.
  throw ProtocolError("mpx: the side door to the coordinator (" + endpoint_.substr(5) + ") closed" +
                      (state().session.node != wire::coordinator_node ? ": the node's agent ended" : ""));
}

void Channel::side_write(wire::Envelope& message) {
  std::string packet;
  wire::append_packet(packet, message, actor_id_);
  std::size_t sent = 0;
  while (sent < packet.size()) {
    const ssize_t n = ::send(side_fd_, packet.data() + sent, packet.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      side_closed();
    }
  }
}

wire::Envelope Channel::side_wait(std::uint64_t correlation, wire::Kind kind,
                                  std::optional<std::chrono::milliseconds> timeout) {
  const auto deadline = deadline_after(timeout);
  const auto max_bytes = static_cast<std::size_t>(wire::limits().max_message_bytes);
  for (;;) {
    std::size_t start = 0;
    while (auto reply = wire::take_packet(side_in_, start, max_bytes)) {
      if (reply->header.correlation != correlation) continue;  // a late reply to an earlier, timed-out request
      side_in_.erase(0, start);
      return std::move(*reply);
    }
    side_in_.erase(0, start);
    pollfd readable{side_fd_, POLLIN, 0};
    const int ready = wire::poll(&readable, 1, time_left(deadline).value_or(std::chrono::milliseconds(-1)).count(),
                                 "mpx: poll on the coordinator's side door");
    if (ready == 0) no_reply(kind, *timeout);
    char chunk[64 * 1024];
    const ssize_t n = ::recv(side_fd_, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      side_in_.append(chunk, static_cast<std::size_t>(n));
    } else if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
      continue;
    } else {
      side_closed();
    }
  }
}

namespace {
std::atomic<pid_t> known_pid{0};  // the process (not a forked copy of it) whose hello the coordinator has handled
}  // namespace

void ensure_known() {
  const pid_t me = self_pid();
  if (known_pid.load(std::memory_order_acquire) == me) return;
  auto pong = Channel::current().request(wire::make(wire::Kind::ping, 0, 0, Object{}), std::chrono::seconds(30));
  expect_ok(pong);
  known_pid.store(me, std::memory_order_release);
}

wire::Envelope& expect_ok(wire::Envelope& reply) {
  if (reply.header.kind == wire::Kind::error) {
    auto [code, message] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
    switch (static_cast<wire::ErrorCode>(code)) {
      case wire::ErrorCode::timeout: throw TimeoutError(message);
      case wire::ErrorCode::node_lost: throw NodeLost(message);
      case wire::ErrorCode::value: throw ValueError(message);
      default: throw ProtocolError(message);
    }
  }
  return reply;
}

}  // namespace mpx::runtime
