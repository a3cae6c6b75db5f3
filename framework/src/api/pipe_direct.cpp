// The direct path of Pipe ends: see api/pipe_direct.hpp and PROTOCOL.md ("Pipes: the direct path").
//
// On a connection: first the epoch (8 bytes, little-endian) with the epoch's ring attached (SCM_RIGHTS; none if the
// writer could not make one), then frames: a little-endian u32 length and that many bytes. Messages go into the ring
// (shm/pipe_ring.hpp) with no system call; the connection carries a wake frame when the reader said it may block, and
// the messages that found the ring full, which the ring's `to_socket` record points to, until a `to_ring` frame sends
// the reader back to the ring. A message on the connection is one non-blocking sendmsg, which a unix stream socket
// takes whole or not at all; when the socket is full too (the reader is far behind) or a message is over
// `direct_frame_bytes`, the writer ends its epoch and relays, so send() never blocks, as on the relay path.
#include "api/pipe_direct.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <system_error>

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/call.hpp"
#include "api/connection.hpp"
#include "runtime/runtime.hpp"
#include "wire/limits.hpp"
#include "wire/little_endian.hpp"
#include "wire/stream_framing.hpp"
#include "wire/transport.hpp"

namespace mpx::detail {

namespace {

constexpr std::size_t direct_frame_bytes = 64 * 1024;
constexpr std::uint32_t max_ask_every = 1024;
constexpr std::size_t read_chunk = 64 * 1024;
constexpr int listen_backlog = 16;

// Every descriptor of the direct path this process owns. A forked child closes its copies at once (pthread_atfork):
// a writer's connection kept open in a child would hide the writer's end from the reader.
struct Descriptors {
  std::mutex mutex;
  std::set<int> fds;
  Descriptors() {
    ::pthread_atfork([] { registry().mutex.lock(); }, [] { registry().mutex.unlock(); },
                     [] {
                       for (int fd : registry().fds) ::close(fd);
                       registry().fds.clear();
                       registry().mutex.unlock();
                     });
  }
  static Descriptors& registry() {
    static Descriptors* d = new Descriptors();  // never destroyed: fork handlers may run during exit
    return *d;
  }
};

void track(int fd) {
  auto& r = Descriptors::registry();
  std::lock_guard lock(r.mutex);
  r.fds.insert(fd);
}

void close_fd(int& fd) {
  if (fd < 0) return;
  {
    auto& r = Descriptors::registry();
    std::lock_guard lock(r.mutex);
    r.fds.erase(fd);
  }
  ::close(fd);
  fd = -1;
}

bool local_session() {
  const auto& endpoint = runtime::state().session.coordinator_endpoint;
  return endpoint.starts_with("ipc://") && !runtime::state().session.directory.empty();
}

using wire::load_le;
using wire::store_le;

constexpr const char* poll_failed = "mpx: pipe: poll";

using wire::to_ring_frame;
using wire::wake_frame;

bool too_long(std::uint64_t size) { return size > static_cast<std::uint64_t>(wire::limits().max_message_bytes); }

// Reads a connection's first 8 bytes (its epoch) and the ring passed with them: `ring` is its descriptor, or -1.
// `truncated`: the writer passed one and this process could not take it (out of descriptors).
bool read_hello(int fd, char (&hello)[8], int& ring, bool& truncated) {
  ring = -1;
  truncated = false;
  std::size_t got = 0;
  while (got < sizeof hello) {
    iovec iov{hello + got, sizeof hello - got};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
      truncated = truncated || (m.msg_flags & MSG_CTRUNC) != 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int passed;
          std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
          if (ring < 0) {
            ring = passed;
          } else {
            ::close(passed);
          }
        }
      }
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      break;
    } else if (errno == EAGAIN) {
      (void)wait_fd(fd, POLLIN, -1, poll_failed);
    }
  }
  if (got == sizeof hello) return true;
  if (ring >= 0) ::close(ring);
  ring = -1;
  return false;
}

void post_end(std::uint64_t end, std::uint64_t epoch, bool listening) {
  post(wire::make(wire::Kind::pipe_direct_end, end, 0, std::make_tuple(epoch, listening)));
}

// Frames complete messages from the connection's buffer into s.unread; how many. Wake frames are dropped wherever
// they are; messages are taken only while the ring has sent the reader to the connection (they come after its
// `to_socket` record), up to a `to_ring` frame.
std::size_t frame(ConnectionState& s) {
  auto& r = *s.in;
  std::size_t n = 0;
  while (r.end - r.start >= 4) {
    const std::size_t size = wire::load_record_length(r.buffer.data() + r.start);
    if (size == wake_frame) {
      r.start += 4;
      continue;
    }
    if (!r.on_socket) break;
    if (size == to_ring_frame) {
      r.start += 4;
      r.on_socket = false;
      if (!r.ring.mapped()) r.broken = true;  // no writer of ours says this without a ring
      break;
    }
    // A length over the limit means the stream is not ours to trust: end it like a dead writer's.
    if (too_long(size)) {
      r.broken = true;
      break;
    }
    if (r.end - r.start - 4 < size) break;
    s.unread.emplace_back(r.buffer.data() + r.start + 4, size);
    r.start += 4 + size;
    ++r.received;
    ++n;
  }
  if (r.start == r.end) {
    r.clear();
  } else if (r.start > r.end / 2) {
    std::memmove(r.buffer.data(), r.buffer.data() + r.start, r.end - r.start);
    r.end -= r.start;
    r.start = 0;
  }
  return n;
}

// Takes the ring's records into s.unread, up to its end or a `to_socket` record; how many messages. The room goes
// back to the writer once per batch.
std::size_t from_ring(ConnectionState& s) {
  auto& r = *s.in;
  auto& ring = r.ring;
  std::uint64_t left = ring.available();
  if (left > ring.capacity()) {
    r.broken = true;
    return 0;
  }
  std::size_t n = 0;
  // At most an eighth of the ring per batch: the room goes back to the writer that much sooner, so a writer that runs
  // ahead finds the ring full (and goes on the connection, a system call per message) less often.
  const std::uint64_t batch = ring.capacity() / 8, before = left;
  while (left >= 4 && before - left < batch) {
    const std::uint32_t size = ring.peek_length();
    if (size == shm::PipeRing::to_socket) {
      ring.skip(4);
      r.on_socket = true;
      break;
    }
    if (size > left - 4 || too_long(size)) {
      r.broken = true;  // the writer publishes whole records only
      break;
    }
    ring.take(s.unread.emplace_back(size, '\0').data(), size);
    left -= 4 + size;
    ++r.received;
    ++n;
  }
  if (!r.on_socket && left != 0 && left < 4) r.broken = true;  // the writer publishes whole records only
  ring.publish();
  return n;
}

// Takes every message that has arrived, in the writer's order, moving between the ring and the connection as it
// says; how many.
std::size_t take(ConnectionState& s) {
  auto& r = *s.in;
  std::size_t n = 0;
  while (!r.broken) {
    const bool on_socket = r.on_socket;
    n += on_socket ? frame(s) : from_ring(s);
    if (r.on_socket == on_socket) {
      if (!on_socket) (void)frame(s);  // only drops wake frames, so the buffer does not grow with them
      break;
    }
  }
  return n;
}

// The connection ended (the writer closed it, handed its end on, gave up, or died): after every byte it wrote.
void finish_epoch(ConnectionState& s, bool tell) {
  auto& r = *s.in;
  close_fd(r.conn_fd);
  r.ring.unmap();
  r.reading = r.on_socket = r.ended = r.broken = false;
  r.finished = std::max(r.finished, r.epoch);
  r.clear();  // a torn frame can only come from a writer killed while writing it: it was never sent
  if (tell) post_end(s.end, r.epoch, true);
}

// Waits up to timeout_ms (-1: no limit) for something from the writer, and reads what the connection has; false at
// the deadline. Sets `ended` at the connection's end.
bool fill(ConnectionState& s, std::int64_t timeout_ms) {
  auto& r = *s.in;
  if (r.buffer.size() < r.end + read_chunk) r.buffer.resize(r.end + read_chunk);
  bool waited = false;
  if (!r.on_socket) {
    // Reading the ring: the writer sends a wake frame only once the reader has said it may block, so say it, look at
    // the ring once more, and only then wait.
    if (r.ring.sleep_unless_available()) return true;
    const bool ready = wait_fd(r.conn_fd, POLLIN, timeout_ms, poll_failed);
    r.ring.awake();
    if (!ready) return false;
    waited = true;
  }
  // On the connection, read first and wait only when nothing is there: a stream that keeps up costs one system call
  // per read.
  for (;;) {
    const ssize_t n = ::recv(r.conn_fd, r.buffer.data() + r.end, read_chunk, MSG_DONTWAIT);
    if (n > 0) {
      r.end += static_cast<std::size_t>(n);
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || errno != EAGAIN) {
      r.ended = true;
      return true;
    }
    if (waited) return true;
    if (!wait_fd(r.conn_fd, POLLIN, timeout_ms, poll_failed)) return false;
    waited = true;
  }
}

void remove_files(const std::string& path) {
  ::unlink(path.c_str());
  ::unlink(services::direct::control_path(path).c_str());
}

}  // namespace

DirectReader::DirectReader() : owner(runtime::self_pid()) {}

DirectReader::~DirectReader() {
  if (owner != runtime::self_pid()) return;  // a forked child's copy: the parent's descriptors and files
  close_fd(conn_fd);
  close_fd(listen_fd);
  if (!path.empty()) remove_files(path);
}

void DirectReader::forget() {
  conn_fd = listen_fd = -1;
  path.clear();
  owner = runtime::self_pid();
}

DirectWriter::DirectWriter() : owner(runtime::self_pid()) {}

DirectWriter::~DirectWriter() {
  if (owner == runtime::self_pid()) close_fd(fd);
}

void DirectWriter::forget() {
  fd = -1;
  owner = runtime::self_pid();
}

// ---- reader ----

bool direct_listen(ConnectionState& s) {
  if (s.in) return s.in->listen_fd >= 0;
  if (!s.readable || s.readiness || s.gone || !local_session()) return false;
  if (s.listen_skip > 0) {
    --s.listen_skip;  // refused lately (tracing was on, say): ask again later, less and less often
    return false;
  }
  s.in = std::make_unique<DirectReader>();
  auto& r = *s.in;
  const std::string path =
      services::direct::socket_path(runtime::state().session.directory, s.end, static_cast<std::uint64_t>(runtime::self_pid()));
  const auto address = wire::unix_address(path);
  if (!address) return false;
  remove_files(path);  // a previous holder of this pid's name in this session has ended
  if (!r.control.open(services::direct::control_path(path), true)) return false;
  r.path = path;
  r.listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r.listen_fd < 0) return false;
  track(r.listen_fd);
  if (!wire::listen_unix(r.listen_fd, *address, listen_backlog)) {
    close_fd(r.listen_fd);
    return false;
  }
  bool accepted = false;
  try {
    auto reply = call(wire::make(wire::Kind::pipe_listen, s.end, 0, Object{}), 0);
    accepted = std::get<0>(reply.body_as<std::tuple<bool>>());
  } catch (const EOFError&) {
    s.gone = true;
  }
  if (!accepted) {
    close_fd(r.listen_fd);
    r.control.unmap();
    remove_files(path);
    s.in.reset();
    s.listen_backoff = std::min<std::uint32_t>(std::max<std::uint32_t>(1, s.listen_backoff * 2), max_ask_every);
    s.listen_skip = s.listen_backoff;
  }
  return accepted;
}

void direct_enter(ConnectionState& s, std::uint64_t epoch) {
  auto& r = *s.in;
  if (r.listen_fd < 0) throw ProtocolError("mpx: pipe end " + std::to_string(s.end) + ": told to read directly, but it does not listen");
  close_fd(r.conn_fd);
  r.ring.unmap();
  // The writer connected and wrote the epoch before it told the coordinator, so its connection is queued already;
  // connections of earlier epochs whose writers gave up are closed on the way.
  for (;;) {
    (void)wait_fd(r.listen_fd, POLLIN, -1, poll_failed);
    int fd = ::accept4(r.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      throw std::system_error(errno, std::generic_category(), "mpx: pipe: accept");
    }
    track(fd);
    char hello[8];
    int ring = -1;
    bool truncated = false;
    if (read_hello(fd, hello, ring, truncated) && load_le(hello, 8) == epoch) {
      r.conn_fd = fd;
      // The writer may have stored messages in the ring already: a ring that cannot be taken or mapped here would
      // lose them, so it is an error, never a silent loss.
      if (truncated) {
        if (ring >= 0) ::close(ring);
        throw std::system_error(EMFILE, std::generic_category(), "mpx: pipe: cannot receive the writer's ring");
      }
      const bool mapped = ring < 0 || r.ring.attach(ring);
      if (ring >= 0) ::close(ring);
      if (!mapped) throw std::system_error(ENOMEM, std::generic_category(), "mpx: pipe: cannot map the writer's ring");
      break;
    }
    if (ring >= 0) ::close(ring);
    close_fd(fd);
  }
  r.reading = true;
  r.epoch = epoch;
  r.received = 0;
  r.on_socket = !r.ring.mapped();  // a writer without a ring sends everything on the connection
  r.ended = r.broken = false;
  r.clear();
}

DirectRead direct_read(ConnectionState& s, std::int64_t timeout_ms) {
  auto& r = *s.in;
  for (;;) {
    if (take(s) > 0) return DirectRead::message;
    // At the connection's end everything the writer stored in the ring is there too: it stored before it closed.
    if (r.ended || r.broken) {
      finish_epoch(s, true);
      return DirectRead::ended;
    }
    if (!fill(s, timeout_ms)) return DirectRead::timeout;
  }
}

void direct_unlisten(ConnectionState& s) {
  if (!s.in) return;
  auto& r = *s.in;
  if (r.listen_fd < 0) {
    s.in.reset();
    return;
  }
  // Closing the word stops the writer before its next message and fixes how many it sent in its epoch.
  const auto word = r.control.revoke(0, true);
  std::uint64_t epoch = r.reading ? r.epoch : 0;
  if (!r.reading) {
    // What a relay batch left here goes back to the front; the epoch's messages go where the epoch began.
    give_back_unread(s);
    if (word.epoch() > r.finished && word.count() > 0) direct_enter(s, word.epoch());
  }
  if (r.reading && r.epoch == word.epoch()) {
    epoch = r.epoch;
    while (r.received < word.count()) {
      if (take(s) > 0) continue;
      if (r.ended || r.broken) break;  // the writer died before sending all it counted
      (void)fill(s, -1);
    }
    (void)take(s);
  }
  if (r.reading) finish_epoch(s, false);
  auto e = wire::make(wire::Kind::pipe_direct_end, s.end, 0, std::make_tuple(epoch, false));
  if (!s.unread.empty()) {
    std::string packed;
    for (auto& message : s.unread) wire::append_record(packed, message);
    e.body.emplace_back(packed.data(), packed.size());
  }
  s.unread.clear();
  close_fd(r.listen_fd);
  r.control.unmap();
  remove_files(r.path);
  r.path.clear();
  try {
    (void)call(std::move(e), 0);  // answered once the messages are back in the coordinator's inbox
  } catch (const EOFError&) {
    s.gone = true;
  }
  s.in.reset();
}

// ---- writer ----

namespace {

// Writes the epoch on the new connection with a fresh ring attached; without a ring (none could be made) the epoch
// still runs, every message on the connection.
bool send_hello(DirectWriter& w, std::uint64_t epoch) {
  char hello[8];
  store_le(hello, epoch, 8);
  iovec iov{hello, sizeof hello};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))]{};
  const int ring = w.ring.create();
  if (ring >= 0) {
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &ring, sizeof ring);
  }
  ssize_t n;
  do {
    n = ::sendmsg(w.fd, &m, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (ring >= 0) ::close(ring);  // the mapping stays, and the socket holds the reader's reference until it is read
  w.on_socket = ring < 0;
  return n == static_cast<ssize_t>(sizeof hello);
}

enum class Sent { whole, none, lost };

// Sends one frame with one non-blocking sendmsg, which a unix stream socket takes whole or not at all: `none` when
// the socket is full or broken. If only part went out, the rest must follow on this connection, so it does, blocking;
// `lost` if the reader died meanwhile (what it would have read is lost with it).
Sent send_frame(int fd, std::uint32_t length, const char* data, std::size_t size) {
  char header[wire::record_length_bytes];
  wire::store_record_length(header, length);
  iovec iov[2] = {{header, sizeof header}, {const_cast<char*>(data), size}};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = size > 0 ? 2 : 1;
  ssize_t n;
  do {
    n = ::sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  const std::size_t total = sizeof header + size;
  if (n == static_cast<ssize_t>(total)) return Sent::whole;
  if (n <= 0) return Sent::none;
  std::size_t done = static_cast<std::size_t>(n);
  while (done < total) {
    const char* from = done < sizeof header ? header + done : data + (done - sizeof header);
    const std::size_t part = done < sizeof header ? sizeof header - done : total - done;
    const ssize_t k = ::send(fd, from, part, MSG_NOSIGNAL);
    if (k > 0) {
      done += static_cast<std::size_t>(k);
    } else if (k < 0 && errno == EINTR) {
      continue;
    } else {
      return Sent::lost;
    }
  }
  return Sent::whole;
}

// After publishing in the ring: a reader that said it may block in poll gets a wake frame. If the socket is full the
// reader has unread bytes there and wakes anyway; if it is broken the reader is gone.
void wake_reader(DirectWriter& w) {
  if (w.ring.reader_sleeping()) (void)send_frame(w.fd, wake_frame, nullptr, 0);
}

bool start_epoch(ConnectionState& s) {
  auto& w = *s.out;
  wire::Envelope reply;
  try {
    reply = call(wire::make(wire::Kind::pipe_connect, s.end, 0, Object{}), 0);
  } catch (const EOFError&) {
    s.gone = true;  // the relayed send is dropped by the coordinator, as any send to an ended pipe
    return false;
  }
  if (reply.body.empty() || decode<Object>(std::string_view(static_cast<const char*>(reply.body[0].data()),
                                                             reply.body[0].size())).is_none()) {
    return false;
  }
  auto [path, epoch] = reply.body_as<std::tuple<std::string, std::uint64_t>>();
  bool up = false;
  const auto address = wire::unix_address(path);
  if (address && w.control.open(services::direct::control_path(path), false) && w.control.begin(epoch)) {
    w.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (w.fd >= 0) {
      track(w.fd);
      const int sndbuf = 4 << 20;  // the kernel caps it; more room means fewer epochs ended by a slow reader
      (void)::setsockopt(w.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      up = wire::connect_unix(w.fd, *address) && send_hello(w, epoch);
    }
  }
  if (!up) {
    close_fd(w.fd);
    w.control.unmap();
    w.ring.unmap();
  } else {
    w.epoch = epoch;
  }
  post(wire::make(wire::Kind::pipe_connected, s.end, 0, std::make_tuple(epoch, up)));
  return up;
}

}  // namespace

void direct_stop_writing(ConnectionState& s) {
  if (!s.out) return;
  close_fd(s.out->fd);
  s.out->control.unmap();
  s.out->ring.unmap();
  s.out->on_socket = false;
}

void direct_note_relayed(ConnectionState& s) {
  if (!s.out) return;
  s.out->relayed = true;
  s.out->relay_thread = std::this_thread::get_id();
}

bool direct_send(ConnectionState& s, const std::string& message) {
  if (!s.out) {
    if (!local_session()) return false;
    s.out = std::make_unique<DirectWriter>();
  }
  auto& w = *s.out;
  if (message.size() > direct_frame_bytes) {
    direct_stop_writing(s);  // a large message goes through the coordinator, as a zero-copy frame, after the rest
    return false;
  }
  if (w.fd < 0) {
    if (++w.since_ask < w.ask_every) return false;
    if (w.relayed && w.relay_thread != std::this_thread::get_id()) return false;
    w.since_ask = 0;
    if (!start_epoch(s)) {
      w.ask_every = std::min(w.ask_every * 2, max_ask_every);
      return false;
    }
    w.ask_every = 1;
  }
  if (!w.control.count(w.epoch)) {
    direct_stop_writing(s);  // revoked: the reader or the coordinator wants this epoch over
    return false;
  }
  if (w.on_socket && w.ring.mapped()) {
    // The reader has made room: back to the ring, once the connection says so (after the messages put there). An
    // eighth of the ring is room for many messages, and a switch costs one system call, as one message here does.
    const std::size_t room = w.ring.room();
    if (room >= w.ring.capacity() / 8 && room >= message.size() + 8 &&
        send_frame(w.fd, to_ring_frame, nullptr, 0) == Sent::whole) {
      w.on_socket = false;
    }
  }
  if (!w.on_socket) {
    const auto size = static_cast<std::uint32_t>(message.size());
    const bool stored = w.ring.put(size, message.data(), message.size(), 4);
    if (!stored) {
      // Full: the reader is behind. Point it at the connection (room for that record is always kept) and go on there.
      const char none = 0;
      (void)w.ring.put(shm::PipeRing::to_socket, &none, 0, 0);
      w.on_socket = true;
    }
    wake_reader(w);
    if (stored) return true;
  }
  switch (send_frame(w.fd, static_cast<std::uint32_t>(message.size()), message.data(), message.size())) {
    case Sent::whole:
      return true;
    case Sent::none:
      // Full (the reader is far behind) or gone: this epoch ends after what it carried, and the message is relayed.
      // The reader's drain, if any, stops at the connection's end, so the count taken for this message does not
      // matter.
      direct_stop_writing(s);
      return false;
    case Sent::lost:
      direct_stop_writing(s);  // the reader died: what it would have read is lost with it
      return true;
  }
  return true;
}

}  // namespace mpx::detail
