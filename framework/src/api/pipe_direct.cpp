// The direct path of Pipe ends: see api/pipe_direct.hpp and PROTOCOL.md ("Pipes: the direct path").
//
// On a connection: first the epoch (8 bytes, little-endian), then each message as a little-endian u32 length and its
// bytes. A writer sends a frame of at most `direct_frame_bytes` with one non-blocking sendmsg, which a unix stream
// socket takes whole or not at all; when the socket is full (the reader is behind) or a message is larger, the writer
// ends its epoch and relays, so send() never blocks, as on the relay path.
#include "api/pipe_direct.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>

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

bool read_exact(int fd, char* out, std::size_t size) {
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(fd, out + got, size - got);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      return false;
    } else if (errno == EAGAIN) {
      (void)wait_fd(fd, POLLIN, -1, poll_failed);
    }
  }
  return true;
}

void post_end(std::uint64_t end, std::uint64_t epoch, bool listening) {
  post(wire::make(wire::Kind::pipe_direct_end, end, 0, std::make_tuple(epoch, listening)));
}

// Frames complete messages from the buffer into s.unread; how many.
std::size_t frame(ConnectionState& s) {
  auto& r = *s.in;
  std::size_t n = 0;
  while (r.end - r.start >= 4) {
    const auto size = static_cast<std::size_t>(load_le(r.buffer.data() + r.start, 4));
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

// The connection ended (the writer closed it, handed its end on, gave up, or died): after every byte it wrote.
void finish_epoch(ConnectionState& s, bool tell) {
  auto& r = *s.in;
  close_fd(r.conn_fd);
  r.reading = false;
  r.finished = std::max(r.finished, r.epoch);
  r.clear();  // a torn frame can only come from a writer killed while writing it: it was never sent
  if (tell) post_end(s.end, r.epoch, true);
}

// Reads once (waiting up to timeout_ms): false at the connection's end.
bool fill(ConnectionState& s, std::int64_t timeout_ms, bool& timed_out) {
  auto& r = *s.in;
  timed_out = false;
  if (r.buffer.size() < r.end + read_chunk) r.buffer.resize(r.end + read_chunk);
  ssize_t n;
  // Read first and wait only when nothing is there: a stream that keeps up costs one system call per read.
  for (bool waited = false;;) {
    n = ::recv(r.conn_fd, r.buffer.data() + r.end, read_chunk, MSG_DONTWAIT);
    if (n >= 0 || errno == EINTR) {
      if (n >= 0) break;
      continue;
    }
    if (errno != EAGAIN || waited) break;
    if (!wait_fd(r.conn_fd, POLLIN, timeout_ms, poll_failed)) {
      timed_out = true;
      return true;
    }
    waited = true;
  }
  r.end += static_cast<std::size_t>(std::max<ssize_t>(n, 0));
  if (n > 0) {
    // A length over the limit means the stream is not ours to trust: end it like a dead writer's.
    if (r.end - r.start >= 4 &&
        load_le(r.buffer.data() + r.start, 4) > static_cast<std::uint64_t>(wire::limits().max_message_bytes)) {
      return false;
    }
    return true;
  }
  if (n < 0 && errno == EAGAIN) return true;
  return false;
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
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  remove_files(path);  // a previous holder of this pid's name in this session has ended
  if (!r.control.open(services::direct::control_path(path), true)) return false;
  r.path = path;
  r.listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r.listen_fd < 0) return false;
  track(r.listen_fd);
  if (::bind(r.listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(r.listen_fd, listen_backlog) != 0) {
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
    if (read_exact(fd, hello, sizeof hello) && load_le(hello, 8) == epoch) {
      r.conn_fd = fd;
      break;
    }
    close_fd(fd);
  }
  r.reading = true;
  r.epoch = epoch;
  r.received = 0;
  r.clear();
}

DirectRead direct_read(ConnectionState& s, std::int64_t timeout_ms) {
  for (;;) {
    if (frame(s) > 0) return DirectRead::message;
    bool timed_out = false;
    if (!fill(s, timeout_ms, timed_out)) {
      finish_epoch(s, true);
      return DirectRead::ended;
    }
    if (timed_out) return DirectRead::timeout;
  }
}

void direct_unlisten(ConnectionState& s, bool drain) {
  if (!s.in) return;
  auto& r = *s.in;
  if (r.listen_fd < 0) {
    s.in.reset();
    return;
  }
  // Closing the word stops the writer before its next message and fixes how many it sent in its epoch.
  const auto word = r.control.revoke(0, true);
  std::uint64_t epoch = r.reading ? r.epoch : 0;
  if (drain) {
    if (!r.reading) {
      // What a relay batch left here goes back to the front; the epoch's messages go where the epoch began.
      give_back_unread(s);
      if (word.epoch() > r.finished && word.count() > 0) direct_enter(s, word.epoch());
    }
    if (r.reading && r.epoch == word.epoch()) {
      epoch = r.epoch;
      bool timed_out = false;
      while (r.received < word.count()) {
        frame(s);
        if (r.received >= word.count()) break;
        if (!fill(s, -1, timed_out)) break;  // the writer died before sending all it counted
      }
      frame(s);
    }
  }
  if (r.reading) finish_epoch(s, false);
  auto e = wire::make(wire::Kind::pipe_direct_end, s.end, 0, std::make_tuple(epoch, false));
  if (drain && !s.unread.empty()) {
    std::string packed;
    for (auto& message : s.unread) {
      char size[4];
      store_le(size, message.size(), 4);
      packed.append(size, sizeof size);
      packed.append(message);
    }
    e.body.emplace_back(packed.data(), packed.size());
  }
  s.unread.clear();
  close_fd(r.listen_fd);
  r.control.unmap();
  remove_files(r.path);
  r.path.clear();
  try {
    if (drain) {
      (void)call(std::move(e), 0);  // answered once the messages are back in the coordinator's inbox
    } else {
      post(std::move(e));
    }
  } catch (const EOFError&) {
    s.gone = true;
  }
  s.in.reset();
}

// ---- writer ----

namespace {

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
  sockaddr_un address{};
  if (path.size() < sizeof address.sun_path && w.control.open(services::direct::control_path(path), false) &&
      w.control.begin(epoch)) {
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    w.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (w.fd >= 0) {
      track(w.fd);
      const int sndbuf = 4 << 20;  // the kernel caps it; more room means fewer epochs ended by a slow reader
      (void)::setsockopt(w.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      char hello[8];
      store_le(hello, epoch, 8);
      int rc;
      do {
        rc = ::connect(w.fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
      } while (rc != 0 && errno == EINTR);
      up = rc == 0 && ::send(w.fd, hello, sizeof hello, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof hello);
    }
  }
  if (!up) {
    close_fd(w.fd);
    w.control.unmap();
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
  char header[4];
  store_le(header, message.size(), 4);
  iovec iov[2] = {{header, sizeof header}, {const_cast<char*>(message.data()), message.size()}};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  ssize_t n;
  do {
    n = ::sendmsg(w.fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  const std::size_t total = sizeof header + message.size();
  if (n == static_cast<ssize_t>(total)) return true;
  if (n <= 0) {
    // Full (the reader is behind) or gone: this epoch ends after what it carried, and the message is relayed. The
    // reader's drain, if any, stops at the connection's end, so the count taken for this message does not matter.
    direct_stop_writing(s);
    return false;
  }
  // Part of a frame went out: the rest must follow on this connection.
  std::size_t done = static_cast<std::size_t>(n);
  while (done < total) {
    const char* from = done < sizeof header ? header + done : message.data() + (done - sizeof header);
    const std::size_t size = done < sizeof header ? sizeof header - done : total - done;
    const ssize_t k = ::send(w.fd, from, size, MSG_NOSIGNAL);
    if (k > 0) {
      done += static_cast<std::size_t>(k);
    } else if (k < 0 && errno == EINTR) {
      continue;
    } else {
      direct_stop_writing(s);  // the reader died: what it would have read is lost with it
      return true;
    }
  }
  return true;
}

}  // namespace mpx::detail
