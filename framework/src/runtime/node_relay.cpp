#include "runtime/node_relay.hpp"

#include <cerrno>
#include <cstdio>
#include <optional>
#include <string_view>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mpx/errors.hpp>

#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "wire/envelope.hpp"
#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"

namespace mpx::runtime {

namespace {
// The relay's own pings carry this bit in their correlation, which a process's requests (counted from 1) never reach.
constexpr std::uint64_t relay_ping_bit = std::uint64_t{1} << 63;
// What one turn reads from a connection at most, so that one busy process does not hold up the agent's beats.
constexpr std::size_t read_per_turn = 256 * 1024;
constexpr std::size_t read_chunk = 64 * 1024;
constexpr int backlog = 128;
}  // namespace

NodeRelay::NodeRelay(zmq::context_t& context, std::string endpoint)
    : context_(context), endpoint_(std::move(endpoint)) {}

NodeRelay::~NodeRelay() { close(); }

bool NodeRelay::open(const std::string& path, wire::NodeId node) {
  close();
  node_ = node;
  const int fd = wire::listen_unix_at(path, backlog);
  if (fd < 0) return false;
  listen_fd_ = fd;
  path_ = path;
  return true;
}

void NodeRelay::close() {
  for (auto& [serial, c] : connections_) {
    ::close(c.fd);
    c.dealer.set(zmq::sockopt::linger, 0);
  }
  connections_.clear();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(path_.c_str());
    listen_fd_ = -1;
  }
}

void NodeRelay::add_poll_items(std::vector<zmq::pollitem_t>& items) {
  first_item_ = items.size();
  if (listen_fd_ >= 0) items.push_back({nullptr, listen_fd_, ZMQ_POLLIN, 0});
  for (auto& [serial, c] : connections_) {
    short fd_events = 0;
    if (!c.held && !c.ended) fd_events |= ZMQ_POLLIN;
    if (!c.out.empty()) fd_events |= ZMQ_POLLOUT;
    c.fd_item = fd_events != 0 ? items.size() : no_item;
    if (fd_events != 0) items.push_back({nullptr, c.fd, fd_events, 0});
    short dealer_events = ZMQ_POLLIN;
    if (c.held || (c.ended && c.closing == 0)) dealer_events |= ZMQ_POLLOUT;
    c.dealer_item = items.size();
    items.push_back({c.dealer.handle(), 0, dealer_events, 0});
  }
}

void NodeRelay::serve(const std::vector<zmq::pollitem_t>& items) {
  // Only what the poll found ready, so that a turn costs nothing for the idle connections of a busy node.
  const auto ready = [&items](std::size_t item) { return item < items.size() && items[item].revents != 0; };
  if (listen_fd_ >= 0 && ready(first_item_)) accept_all();
  for (auto it = connections_.begin(); it != connections_.end();) {
    Connection& c = it->second;
    if (c.fd_item != no_item && !ready(c.fd_item) && !ready(c.dealer_item) && !c.dead) {
      ++it;
      continue;
    }
    if (serve(c)) {
      ++it;
    } else {
      ::close(it->second.fd);
      it->second.dealer.set(zmq::sockopt::linger, 0);
      it = connections_.erase(it);
    }
  }
}

void NodeRelay::drain(pid_t pid) {
  for (auto& [serial, c] : connections_) {
    if (c.pid == pid) c.dead = true;
  }
  serve({});
}

bool NodeRelay::drained(pid_t pid) const {
  for (const auto& [serial, c] : connections_) {
    if (c.pid == pid) return false;
  }
  return true;
}

void NodeRelay::accept_all() {
  pid_t peer = 0;
  for (int fd; (fd = wire::accept_unix_peer(listen_fd_, peer)) >= 0;) {
    Connection c;
    c.fd = fd;
    c.pid = peer;
    try {
      c.dealer = zmq::socket_t(context_, zmq::socket_type::dealer);
      configure_connection(c.dealer, endpoint_);
      c.dealer.set(zmq::sockopt::rcvhwm, 0);  // replies are bounded by the process's requests; pushes are its own
      c.dealer.connect(endpoint_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mpx: node agent: cannot relay process %d: %s\n", peer, e.what());
      ::close(fd);
      continue;
    }
    c.fd_item = no_item;  // served on the turn it was accepted
    connections_.emplace(next_serial_++, std::move(c));
  }
}

bool NodeRelay::serve(Connection& c) {
  if (!c.held && !c.ended) read(c);
  if (!forward(c)) return false;
  if (c.ended && !c.held && c.closing == 0) send_closing_ping(c);
  if (!take_replies(c)) return false;
  if (!wire::write_pending(c.fd, c.out)) {
    c.ended = true;  // what it wrote before is still forwarded and confirmed
  }
  return true;
}

void NodeRelay::read(Connection& c) {
  char chunk[read_chunk];
  std::size_t got = 0;
  while (c.dead || got < read_per_turn) {
    const ssize_t n = ::recv(c.fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(chunk, static_cast<std::size_t>(n));
      got += static_cast<std::size_t>(n);
      if (c.dead && c.in.size() >= read_per_turn) return;  // forwarded first; the rest on the next turn
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // A dead process wrote everything it will before it died: what is readable now is all of it (a forked copy may
    // still hold the descriptor open, so no end of stream need come).
    if (n == 0 || c.dead || !(errno == EAGAIN || errno == EWOULDBLOCK)) c.ended = true;
    return;
  }
}

bool NodeRelay::forward(Connection& c) {
  c.held = false;
  std::size_t start = 0;
  const auto max_bytes = static_cast<std::size_t>(wire::limits().max_message_bytes);
  const wire::ActorId sender = wire::actor_id(node_, static_cast<std::uint64_t>(c.pid));
  bool sound = true;
  for (;;) {
    const std::size_t at = start;
    std::optional<wire::Envelope> packet;
    try {
      packet = wire::take_packet(c.in, start, max_bytes);
    } catch (const ProtocolError& e) {
      std::fprintf(stderr, "mpx: node agent: process %d wrote a malformed packet (%s); its connection is closed\n",
                   c.pid, e.what());
      sound = false;
      break;
    }
    if (!packet) break;
    if (packet->header.sender != sender) {
      // As on the coordinator's side door, no process speaks for another: the stream is not to be trusted after it.
      std::fprintf(stderr, "mpx: node agent: process %d sent a message as actor %s; its connection is closed\n", c.pid,
                   wire::actor_name(packet->header.sender).c_str());
      sound = false;
      break;
    }
    if (!wire::send(c.dealer, *packet, sender, nullptr, true)) {
      start = at;  // ZeroMQ's pipe is full: this packet again once it has room, and nothing read meanwhile
      c.held = true;
      break;
    }
  }
  c.in.erase(0, start);
  return sound;
}

void NodeRelay::send_closing_ping(Connection& c) {
  const std::uint64_t correlation = relay_ping_bit | ++next_ping_;
  auto ping = wire::make(wire::Kind::ping, 0, correlation, Object{});
  if (wire::send(c.dealer, ping, wire::actor_id(node_, static_cast<std::uint64_t>(self_pid())), nullptr, true)) {
    c.closing = correlation;
  }
}

bool NodeRelay::take_replies(Connection& c) {
  for (;;) {
    std::optional<wire::Envelope> reply;
    try {
      reply = wire::recv(c.dealer, nullptr, true);
    } catch (const ProtocolError&) {
      continue;  // dropped, as a channel drops it
    }
    if (!reply) return true;
    if (c.closing != 0 && reply->header.correlation == c.closing) return false;  // all it wrote was handled
    if ((reply->header.correlation & relay_ping_bit) != 0) continue;
    if (c.ended || c.out.size() > wire::store_bounds.side_unread_bytes) {
      // Nobody reads them (it is gone), or it leaves them unread: as the coordinator's side door, stop talking to it.
      if (!c.ended) ::shutdown(c.fd, SHUT_RDWR);
      c.out.clear();
      continue;
    }
    wire::append_packet(c.out, *reply, reply->header.sender);
  }
}


}  // namespace mpx::runtime
