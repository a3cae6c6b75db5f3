// Pipe, Connection and wait(). A Pipe end talks to the coordinator's pipe service (services/pipes.cpp) through the
// calling thread's channel; a direct connection reads and writes its socket (api/listener.cpp).
#include <mpx/pipe.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <poll.h>
#include <unistd.h>

#include "api/call.hpp"
#include "api/connection.hpp"
#include "api/pipe_direct.hpp"
#include "runtime/runtime.hpp"
#include "wire/interrupted.hpp"

namespace mpx {

namespace detail {

ConnectionState::ConnectionState() : owner(runtime::self_pid()) {}

ConnectionState::~ConnectionState() {
  if (kind == Kind::socket && fd >= 0) ::close(fd);
  // The last copy of an end in this process goes (a Process target returned, a scope ended): what this process took
  // from the end and did not read goes back to the coordinator, where the end's other holders can read it. A
  // destructor must not throw, and after the root's shutdown there is nobody to give it to.
  if (kind != Kind::pipe || closed || gone || owner != runtime::self_pid() || !runtime::state().initialized) return;
  if (!in && unread.empty()) return;
  try {
    give_back_all(*this);
  } catch (...) {
  }
}

void ConnectionState::refresh_after_fork() {
  if (owner == runtime::self_pid()) return;
  if (kind == Kind::pipe && inherited_from == 0) inherited_from = owner;
  owner = runtime::self_pid();
  readiness.reset();  // the parent's mirror: dropping this copy only closes the child's copy of its eventfd
  unread.clear();     // the parent took these messages; it reads them
  // The parent's direct path: its descriptors were closed in this child at fork, its files are the parent's.
  if (in) in->forget();
  in.reset();
  if (out) out->forget();
  out.reset();
}

// Gives the messages taken but not read back to the coordinator, so that whoever reads the end next (another process,
// or this one through a readiness mirror) sees them first.
void give_back_unread(ConnectionState& s) {
  if (s.unread.empty() || s.gone) return;
  auto e = wire::make(wire::Kind::pipe_unread, s.end, 0, Object{});
  for (auto& message : s.unread) e.body.emplace_back(message.data(), message.size());
  s.unread.clear();
  (void)call(std::move(e), 0);
}

// The direct paths end here: what is in flight to this process goes back to the coordinator with whatever it took and
// did not read, and this process's writes stop, so whoever reads or writes the end next comes after them.
void give_back_all(ConnectionState& s) {
  direct_stop_writing(s);
  direct_unlisten(s);
  give_back_unread(s);
}

}  // namespace detail

namespace {

using detail::ConnectionState;

// A fork child's first use of a copy of an end it inherited from its parent: it adopts the copy, as if its parent had
// handed it over (PROTOCOL.md, "Holders"). A copy the child only closes was never its own to release.
void claim_inherited(ConnectionState& s) {
  if (s.inherited_from == 0) return;
  const auto parent = static_cast<std::uint64_t>(s.inherited_from);
  s.inherited_from = 0;
  if (s.gone || s.closed) return;
  try {
    (void)detail::call(wire::make(wire::Kind::pipe_attach, s.end, 0, std::make_tuple(parent)), 0);
  } catch (const EOFError&) {
    s.gone = true;
  }
}

ConnectionState& use(const std::shared_ptr<ConnectionState>& s) {
  s->refresh_after_fork();
  claim_inherited(*s);
  return *s;
}

void check_open(const ConnectionState& s) {
  if (s.closed) throw ValueError("mpx: connection is closed");
}
void check_readable(const ConnectionState& s) {
  check_open(s);
  if (!s.readable) throw ValueError("mpx: connection is write-only");
}
void check_writable(const ConnectionState& s) {
  check_open(s);
  if (!s.writable) throw ValueError("mpx: connection is read-only");
}

[[noreturn]] void raise_gone(const ConnectionState& s) {
  throw EOFError("mpx: EOF: pipe end " + std::to_string(s.end) + " is gone (both ends were released)");
}

// How many messages one pipe_recv may take while nothing mirrors the end's readiness: each is a frame of the reply,
// after the state frame. (A pipe_unread gives back at most one fewer, also under the limit.)
constexpr std::uint32_t recv_batch = wire::max_body_frames - 1;

std::string text_of(const zmq::message_t& frame) {
  return std::string(static_cast<const char*>(frame.data()), frame.size());
}

// The next message: one taken earlier in a batch, or a pipe_recv. Without a readiness mirror (fileno() was never
// called here) the reply may carry a batch, which turns a stream of messages into one round trip per batch. The
// reply's state is merged into this process's readiness mirror.
std::string pop_unread(ConnectionState& s) {
  std::string message = std::move(s.unread.front());
  s.unread.pop_front();
  return message;
}

// Whether this end reads its direct connection now.
bool reading_direct(const ConnectionState& s) { return s.in && s.in->reading; }

std::string pipe_recv(ConnectionState& s) {
  if (!s.unread.empty()) return pop_unread(s);
  if (s.gone) raise_gone(s);
  const std::uint32_t max_items = s.readiness ? 1 : recv_batch;
  wire::Envelope reply;
  for (;;) {
    if (reading_direct(s)) {
      if (detail::direct_read(s, -1) == detail::DirectRead::message) return pop_unread(s);
      continue;  // that epoch is over: back to the coordinator, which knows what comes next
    }
    detail::direct_listen(s);
    reply =
        detail::call(wire::make(wire::Kind::pipe_recv, s.end, 0, std::make_tuple(std::int64_t{-1}, max_items)), -1);
    if (reply.header.kind != wire::Kind::pipe_direct) break;
    detail::direct_enter(s, std::get<0>(reply.body_as<std::tuple<std::uint64_t>>()));
  }
  if (reply.body.size() < 2 || reply.body.size() > 1 + max_items) {
    throw ProtocolError("mpx: a pipe_recv reply with " + std::to_string(reply.body.size() - 1) + " messages");
  }
  auto [ready, version] = reply.body_as<std::tuple<bool, std::uint64_t>>();
  detail::merge_readiness(s.end, ready, version);
  for (std::size_t i = 2; i < reply.body.size(); ++i) s.unread.push_back(text_of(reply.body[i]));
  return text_of(reply.body[1]);
}

bool pipe_poll(ConnectionState& s, std::int64_t wait) {
  if (!s.unread.empty()) return true;
  if (s.gone) return true;
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(wait, 0));
  const auto left = [&] {
    if (wait < 0) return std::int64_t{-1};
    return std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
  };
  try {
    for (;;) {
      if (reading_direct(s)) {
        const auto got = detail::direct_read(s, left());
        if (got == detail::DirectRead::message) return true;
        if (got == detail::DirectRead::timeout) return false;
        continue;
      }
      detail::direct_listen(s);
      const auto ms = left();
      auto reply = detail::call(wire::make(wire::Kind::pipe_poll, s.end, 0, std::make_tuple(ms)), ms);
      if (reply.header.kind == wire::Kind::pipe_direct) {
        detail::direct_enter(s, std::get<0>(reply.body_as<std::tuple<std::uint64_t>>()));
        continue;
      }
      auto [ready, version] = reply.body_as<std::tuple<bool, std::uint64_t>>();
      detail::merge_readiness(s.end, ready, version);
      return ready;
    }
  } catch (const EOFError&) {
    s.gone = true;
    return true;  // recv would raise EOFError at once
  }
}

std::string receive(ConnectionState& s, std::size_t maxlength) {
  check_readable(s);
  if (s.kind == ConnectionState::Kind::socket) return detail::socket_recv(s, maxlength);
  std::string message = pipe_recv(s);
  if (message.size() > maxlength) {
    throw ValueError("mpx: Connection.recv_bytes: a message of " + std::to_string(message.size()) +
                     " bytes is longer than maxlength " + std::to_string(maxlength) + "; it was discarded");
  }
  return message;
}

}  // namespace

Connection::Connection(std::shared_ptr<detail::ConnectionState> state) : state_(std::move(state)) {
  if (state_->kind == ConnectionState::Kind::pipe) ref_ = ObjectRef{state_->end, detail::coordinator_endpoint()};
}

Connection::Connection(adopt_t, ObjectRef ref) : Handle(std::move(ref)), state_(std::make_shared<ConnectionState>()) {
  state_->end = ref_.id;
  try {
    auto reply = detail::call(wire::make(wire::Kind::pipe_attach, ref_.id, 0, Object{}), 0);
    auto [readable, writable] = reply.body_as<std::tuple<bool, bool>>();
    state_->readable = readable;
    state_->writable = writable;
  } catch (const EOFError&) {
    state_->gone = true;  // adopted after the pipe ended: every operation raises EOFError
  }
}

ObjectRef Connection::hand_over() const {
  auto& s = use(state_);
  if (s.kind == ConnectionState::Kind::socket) {
    throw SerializationError(
        "mpx: a direct connection (from Listener::accept or Client) is a socket of this process and cannot be passed "
        "to another process; under the fork start method, capture it in a closure instead");
  }
  detail::give_back_all(s);
  // This process holds the end for the copy until a process adopts it (PROTOCOL.md, "Holders"): closing this copy
  // meanwhile does not release the end under the adopter.
  if (!s.gone) {
    try {
      (void)detail::call(wire::make(wire::Kind::pipe_hand_over, s.end, 0, Object{}), 0);
    } catch (const EOFError&) {
      s.gone = true;  // the copy decodes as an ended pipe: every operation raises EOFError
    }
  }
  return ref_;
}

void Connection::send_message(std::string message) {
  auto& s = use(state_);
  check_writable(s);
  if (s.kind == ConnectionState::Kind::socket) return detail::socket_send(s, message.data(), message.size());
  if (s.gone) raise_gone(s);
  if (detail::direct_send(s, message)) return;
  auto e = wire::make(wire::Kind::pipe_send, s.end, 0, Object{});
  e.body.push_back(wire::frame_of(std::move(message)));
  detail::post(std::move(e));
  detail::direct_note_relayed(s);
}

void Connection::send_bytes(std::string_view buf, std::size_t offset, std::size_t size) {
  if (offset > buf.size()) throw ValueError("mpx: Connection.send_bytes: buffer length < offset");
  if (size == npos) {
    size = buf.size() - offset;
  } else if (size > buf.size() - offset) {
    throw ValueError("mpx: Connection.send_bytes: buffer length < offset + size");
  }
  send_message(std::string(buf.substr(offset, size)));
}

void Connection::send_bytes(std::span<const std::byte> buf, std::size_t offset, std::size_t size) {
  send_bytes(std::string_view(reinterpret_cast<const char*>(buf.data()), buf.size()), offset, size);
}

std::string Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  return receive(use(state_), maxlength.value_or(npos));
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buffer, std::size_t offset) {
  auto& s = use(state_);
  check_readable(s);
  if (offset > buffer.size()) throw ValueError("mpx: Connection.recv_bytes_into: offset too large");
  std::string message = receive(s, npos);
  const std::size_t room = buffer.size() - offset;
  if (message.size() > room) {
    std::string what = "mpx: Connection.recv_bytes_into: a message of " + std::to_string(message.size()) +
                       " bytes does not fit in the " + std::to_string(room) + " bytes after offset " +
                       std::to_string(offset);
    throw BufferTooShort(std::move(what), std::move(message));
  }
  std::memcpy(buffer.data() + offset, message.data(), message.size());
  return message.size();
}

bool Connection::poll(const Timeout& timeout) {
  auto& s = use(state_);
  check_readable(s);
  const auto wait = wait_ms(true, timeout);
  if (s.kind == ConnectionState::Kind::socket) {
    return detail::wait_fd(s.fd, POLLIN, std::min<std::int64_t>(wait, INT32_MAX), "mpx: Connection.poll");
  }
  return pipe_poll(s, wait);
}

void Connection::close() {
  auto& s = *state_;
  s.refresh_after_fork();
  if (s.closed) return;
  s.closed = true;
  const bool never_used_here = s.inherited_from != 0;
  s.inherited_from = 0;
  s.readiness.reset();
  if (s.kind == ConnectionState::Kind::socket) {
    if (s.fd >= 0) ::close(s.fd);
    s.fd = -1;
    return;
  }
  if (s.gone || never_used_here) return;
  // What this process took and did not read stays in the pipe for the end's other holders, as the bytes in an OS
  // pipe's buffer outlive one closed descriptor of it.
  // The coordinator releases the end when this was its last holder; a copy handed on since this process last used it
  // is only closed here (Python's "close the parent's copy"): the coordinator knows (pipe_hand_over). Closed even when
  // giving back fails (a ring this process cannot map raises): this copy is closed either way.
  const auto release = [&s] { detail::post(wire::make(wire::Kind::pipe_close, s.end, 0, Object{})); };
  try {
    detail::give_back_all(s);
  } catch (...) {
    release();
    throw;
  }
  release();
}

bool Connection::closed() const { return state_->closed; }
bool Connection::readable() const { return state_->readable; }
bool Connection::writable() const { return state_->writable; }

int Connection::fileno() {
  auto& s = use(state_);
  check_open(s);
  if (s.kind == ConnectionState::Kind::socket) return s.fd;
  if (!s.readiness) {
    // The mirror reflects the coordinator's inbox, so nothing may wait here unseen: this end leaves the direct path.
    detail::direct_unlisten(s);
    detail::give_back_unread(s);
    s.readiness = s.gone ? detail::always_ready() : detail::watch_end(s.end);
  }
  return s.readiness->fd;
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  auto reply = detail::call(wire::make(wire::Kind::pipe_create, 0, 0, std::make_tuple(duplex)), 0);
  auto [first, second] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t>>();
  auto make_end = [](std::uint64_t id, bool readable, bool writable) {
    auto s = std::make_shared<ConnectionState>();
    s->end = id;
    s->readable = readable;
    s->writable = writable;
    return Connection(std::move(s));
  };
  return {make_end(first, true, duplex), make_end(second, duplex, true)};
}

// ---- wait ----

namespace {

// Whether a connection that fileno() reported is really ready: a Pipe end's mirror may lag by one round trip.
bool confirm(Connection& c) {
  auto& s = use(c.state());
  if (s.kind == ConnectionState::Kind::socket) return true;
  return pipe_poll(s, 0);
}

}  // namespace

std::vector<Waitable> wait(const std::vector<Waitable>& objects, const Timeout& timeout) {
  using Clock = std::chrono::steady_clock;
  const auto limit = wait_ms(true, timeout);
  const auto deadline = Clock::now() + std::chrono::milliseconds(limit < 0 ? 0 : limit);
  std::vector<Waitable> items = objects;  // handles: copies share their state
  for (bool first = true;; first = false) {
    std::vector<bool> ready(items.size(), false);
    bool any = false;
    std::vector<pollfd> fds;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (auto* c = std::get_if<Connection>(&items[i])) {
        const int fd = c->fileno();
        // First ask the coordinator about every Pipe end: the mirrors behind fileno() may not have heard of a message
        // this thread or another process has just sent.
        if (first && use(c->state()).kind == ConnectionState::Kind::pipe && confirm(*c)) {
          ready[i] = any = true;
          continue;
        }
        fds.push_back(pollfd{fd, POLLIN, 0});
        index.push_back(i);
      } else {
        auto& p = std::get<Process>(items[i]);
        const int fd = p.sentinel();
        if (fd >= 0) {
          fds.push_back(pollfd{fd, POLLIN, 0});
          index.push_back(i);
        } else if (p.exitcode()) {
          ready[i] = any = true;  // already reaped
        } else if (p.pid() == 0) {
          throw ValueError("mpx: wait: process '" + p.name() + "' has not been started");
        }
      }
    }
    long left = 0;
    if (!any) {
      if (limit < 0) {
        left = -1;
      } else {
        left = std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      }
    }
    int n = wire::poll(fds.data(), fds.size(), left, "mpx: wait: poll");
    for (std::size_t k = 0; k < fds.size() && n > 0; ++k) {
      if (fds[k].revents == 0) continue;
      const std::size_t i = index[k];
      if (auto* c = std::get_if<Connection>(&items[i])) {
        if (!confirm(*c)) continue;  // a stale mirror: confirm() has brought it up to date
      }
      ready[i] = any = true;
    }
    if (any || (limit >= 0 && Clock::now() >= deadline)) {
      std::vector<Waitable> out;
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (ready[i]) out.push_back(items[i]);
      }
      return out;
    }
  }
}

std::vector<Connection> wait(const std::vector<Connection>& connections, const Timeout& timeout) {
  std::vector<Waitable> objects(connections.begin(), connections.end());
  std::vector<Connection> out;
  for (auto& w : wait(objects, timeout)) out.push_back(std::get<Connection>(std::move(w)));
  return out;
}

}  // namespace mpx
