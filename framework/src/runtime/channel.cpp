#include "runtime/channel.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <cstring>
#include <mutex>
#include <vector>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/coordinator.hpp"
#include "runtime/runtime.hpp"
#include "wire/interrupted.hpp"
#include "wire/limits.hpp"
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

struct ThreadChannel {
  pid_t owner = 0;
  Channel* channel = nullptr;  // owned; abandoned (never closed) in a forked child, whose context is not its own
  ~ThreadChannel() {
    if (owner == self_pid() && channel != nullptr) {
      std::vector<void (*)()> hooks;
      {
        std::lock_guard lock(thread_exit_hooks_mutex);
        hooks = thread_exit_hooks;
      }
      for (auto* hook : hooks) hook();
      delete channel;
      channel_count.remove();
    }
  }
};
thread_local ThreadChannel this_thread;
}  // namespace

void add_thread_exit_hook(void (*hook)()) {
  std::lock_guard lock(thread_exit_hooks_mutex);
  if (std::find(thread_exit_hooks.begin(), thread_exit_hooks.end(), hook) == thread_exit_hooks.end()) {
    thread_exit_hooks.push_back(hook);
  }
}

bool Channel::sole_in_process() { return channel_count.at_most_one(); }

Channel::Channel(zmq::context_t& context, const std::string& endpoint)
    : socket_(context, zmq::socket_type::dealer), actor_id_(static_cast<std::uint64_t>(::getpid())), endpoint_(endpoint) {
  wire::configure(socket_, endpoint);
  socket_.set(zmq::sockopt::linger, 200);
  socket_.set(zmq::sockopt::rcvhwm, 0);  // replies (batches of queue items) are bounded by what this thread asked for
  socket_.connect(endpoint);
  const auto& self = state().self;
  wire::Envelope hello = wire::make(wire::Kind::hello, 0, 0,
                                    std::make_tuple(static_cast<std::int64_t>(::getpid()),
                                                    static_cast<std::int64_t>(self.parent_pid), self.name));
  wire::send(socket_, hello, actor_id_);
}

Channel& Channel::current() {
  const pid_t pid = self_pid();
  if (this_thread.owner != pid || this_thread.channel == nullptr) {
    require_initialized();
    ensure_coordinator();
    this_thread.owner = pid;
    // In the coordinator's own process, talk to it in memory; everyone else uses the session's endpoint.
    const Coordinator* local = coordinator_if_running();
    this_thread.channel =
        new Channel(context(), local ? local->local_endpoint() : state().session.coordinator_endpoint);
    channel_count.add();
  }
  return *this_thread.channel;
}

void Channel::post(wire::Envelope message) {
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

wire::Envelope Channel::request(wire::Envelope request, std::optional<std::chrono::milliseconds> timeout) {
  const std::uint64_t correlation = next_correlation_++;
  request.header.correlation = correlation;
  const auto kind = request.header.kind;
  wire::send(socket_, request, actor_id_);
  const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(std::chrono::milliseconds(0));
  for (;;) {
    auto left = std::chrono::milliseconds(-1);
    if (timeout) {
      left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) left = std::chrono::milliseconds(0);
    }
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (wire::poll(&item, 1, left.count()) == 0) {
      throw TimeoutError("mpx: no reply to '" + std::string(wire::kind_name(kind)) + "' from the coordinator at " +
                         endpoint_ + " within " + std::to_string(timeout->count()) + " ms");
    }
    std::optional<wire::Envelope> reply;
    try {
      reply = wire::recv(socket_, nullptr, true);
    } catch (const ProtocolError&) {
      continue;  // a malformed reply is dropped; the real one may still come
    }
    if (!reply) continue;
    if (reply->header.correlation != correlation) continue;  // a late reply to an earlier, timed-out request
    unconfirmed_posts_ = false;
    return std::move(*reply);
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

SideChannel::SideChannel() : actor_id_(static_cast<std::uint64_t>(self_pid())) {
  const std::string path = side_door_path();
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof address.sun_path) return;
  ensure_known();
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

SideChannel::~SideChannel() {
  if (fd_ >= 0) ::close(fd_);
}

void SideChannel::write_all(wire::Envelope& message) {
  std::string packet;
  wire::append_packet(packet, message, actor_id_);
  std::size_t sent = 0;
  while (sent < packet.size()) {
    const ssize_t n = ::send(fd_, packet.data() + sent, packet.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      throw ProtocolError("mpx: the coordinator's side door closed");
    }
  }
}

void SideChannel::post(wire::Envelope message) { write_all(message); }

wire::Envelope SideChannel::request(wire::Envelope request) {
  const std::uint64_t correlation = next_correlation_++;
  request.header.correlation = correlation;
  write_all(request);
  const auto max_bytes = static_cast<std::size_t>(wire::limits().max_message_bytes);
  for (;;) {
    std::size_t start = 0;
    while (auto reply = wire::take_packet(in_, start, max_bytes)) {
      if (reply->header.correlation != correlation) continue;  // an error reply to a post: dropped, as a channel does
      in_.erase(0, start);
      return std::move(*reply);
    }
    in_.erase(0, start);
    char chunk[64 * 1024];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      in_.append(chunk, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      throw ProtocolError("mpx: the coordinator's side door closed");
    }
  }
}

wire::Envelope& expect_ok(wire::Envelope& reply) {
  if (reply.header.kind == wire::Kind::error) {
    auto [code, message] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
    if (static_cast<wire::ErrorCode>(code) == wire::ErrorCode::timeout) throw TimeoutError(message);
    throw ProtocolError(message);
  }
  return reply;
}

}  // namespace mpx::runtime
