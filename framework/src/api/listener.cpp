// Listener and Client (Python's multiprocessing.connection) and the direct connections they make: a stream socket
// (unix or tcp) carrying Python's frames, a 4-byte big-endian signed length (or -1 and an 8-byte length for 2 GiB
// and more) before each message, and Python 3.12's HMAC challenge in both directions. So Python's Client and Listener
// can talk to mpx's with send_bytes/recv_bytes (send/recv carry msgpack, not pickle).
#include <mpx/pipe.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <system_error>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/connection.hpp"
#include "runtime/runtime.hpp"
#include "wire/auth.hpp"
#include "wire/interrupted.hpp"
#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"

namespace mpx {

namespace {

using detail::ConnectionState;

// ---- frames ----

[[noreturn]] void raise_os(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

void write_all(int fd, const char* header, std::size_t header_size, const char* data, std::size_t size) {
  iovec iov[2] = {{const_cast<char*>(header), header_size}, {const_cast<char*>(data), size}};
  int first = 0;
  while (first < 2) {
    msghdr m{};
    m.msg_iov = iov + first;
    m.msg_iovlen = static_cast<std::size_t>(2 - first);
    const ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) {
        throw EOFError("mpx: the other end of the connection is closed (broken pipe)");
      }
      raise_os("mpx: Connection.send_bytes");
    }
    auto done = static_cast<std::size_t>(n);
    while (first < 2 && done >= iov[first].iov_len) {
      done -= iov[first].iov_len;
      ++first;
    }
    if (first < 2) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
    }
  }
}

// Reads exactly `size` bytes; returns how many arrived before EOF.
std::size_t read_exact(int fd, char* buffer, std::size_t size) {
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(fd, buffer + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) return got;
      raise_os("mpx: Connection.recv_bytes");
    }
    if (n == 0) return got;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

void read_body(int fd, char* buffer, std::size_t size) {
  if (read_exact(fd, buffer, size) != size) throw EOFError("mpx: EOF: the connection ended in the middle of a message");
}

}  // namespace

namespace detail {

void socket_send(ConnectionState& s, const char* data, std::size_t size) {
  const wire::PythonLength length = wire::python_length(size);
  write_all(s.fd, length.bytes, length.size, data, size);
}

std::string socket_recv(ConnectionState& s, std::size_t maxlength) {
  char header[wire::python_long_length_bytes];
  const std::size_t got = read_exact(s.fd, header, wire::python_short_length_bytes);
  if (got == 0) throw EOFError("mpx: EOF: the other end of the connection is closed");
  if (got != wire::python_short_length_bytes) throw EOFError("mpx: EOF: the connection ended in the middle of a message");
  const std::int32_t signed_size = wire::python_short_length(header);
  std::uint64_t size = static_cast<std::uint32_t>(signed_size);
  if (signed_size == -1) {
    read_body(s.fd, header + wire::python_short_length_bytes, 8);
    size = wire::python_long_length(header + wire::python_short_length_bytes);
  } else if (signed_size < 0) {
    throw ProtocolError("mpx: bad message length " + std::to_string(signed_size) + " on a connection");
  }
  if (size > static_cast<std::uint64_t>(wire::limits().max_message_bytes)) {
    // The stream cannot be trusted any more: close it, as Python does.
    ::close(s.fd);
    s.fd = -1;
    s.closed = true;
    throw ProtocolError("mpx: a message of " + std::to_string(size) + " bytes is over the limit of " +
                        std::to_string(wire::limits().max_message_bytes) + "; the connection was closed");
  }
  if (size > maxlength) {
    char sink[65536];
    for (std::uint64_t left = size; left > 0;) {
      const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left, sizeof sink));
      read_body(s.fd, sink, chunk);
      left -= chunk;
    }
    throw ValueError("mpx: Connection.recv_bytes: a message of " + std::to_string(size) +
                     " bytes is longer than maxlength " + std::to_string(maxlength) + "; it was discarded");
  }
  std::string message(static_cast<std::size_t>(size), '\0');
  read_body(s.fd, message.data(), message.size());
  return message;
}

bool wait_fd(int fd, short events, std::int64_t timeout_ms, const char* what) {
  pollfd p{fd, events, 0};
  return wire::poll(&p, 1, timeout_ms, what) > 0;  // for a socket: data, or EOF (recv then raises EOFError)
}

}  // namespace detail

namespace {

// ---- authentication (Python 3.12's multiprocessing.connection, HMAC-SHA256 only; wire/auth.hpp) ----

// How long either side waits for the other's handshake messages. Python waits forever; then one client that connects
// and says nothing holds a server's accept() for good.
constexpr std::int64_t default_handshake_timeout_ms = 10'000;

std::chrono::milliseconds handshake_timeout() {
  if (const char* text = std::getenv("MPX_HANDSHAKE_TIMEOUT_MS"); text != nullptr && *text != '\0') {
    char* end = nullptr;
    const long long ms = std::strtoll(text, &end, 10);
    if (*end == '\0' && ms > 0) return std::chrono::milliseconds(ms);
  }
  return std::chrono::milliseconds(default_handshake_timeout_ms);
}

std::string too_long(std::int64_t size) {
  return "mpx: authentication: a handshake message of " + std::to_string(size) + " bytes (at most " +
         std::to_string(wire::auth::max_message_bytes) + "); the connection was dropped";
}

// A handshake message, read by a blocking socket whose SO_RCVTIMEO bounds the wait. The length is checked before
// anything else is read: a peer that claims a huge message is refused at once, never read to its end.
std::string recv_handshake(ConnectionState& s) {
  try {
    char header[wire::python_short_length_bytes];
    const std::size_t got = read_exact(s.fd, header, sizeof header);
    if (got != sizeof header) throw EOFError("mpx: EOF: the connection ended during the handshake");
    const std::int32_t size = wire::python_short_length(header);
    if (size < 0 || static_cast<std::size_t>(size) > wire::auth::max_message_bytes) {
      throw AuthenticationError(too_long(size));
    }
    std::string message(static_cast<std::size_t>(size), '\0');
    read_body(s.fd, message.data(), message.size());
    return message;
  } catch (const std::system_error& e) {
    if (e.code().value() != EAGAIN && e.code().value() != EWOULDBLOCK) throw;
    throw AuthenticationError("mpx: authentication: the other side did not answer within the handshake timeout");
  }
}

void send_handshake(ConnectionState& s, std::string_view message) { detail::socket_send(s, message.data(), message.size()); }

// Python's deliver_challenge (the client's, blocking): we ask, the peer proves it knows the key.
void deliver_challenge(ConnectionState& s, const std::string& authkey) {
  const std::string message = wire::auth::new_challenge();
  send_handshake(s, std::string(wire::auth::challenge_tag) + message);
  const std::string response = recv_handshake(s);
  if (!wire::auth::verify(authkey, message, response)) {
    try {
      send_handshake(s, wire::auth::failure);
    } catch (const std::exception&) {
    }
    throw AuthenticationError("mpx: Listener.accept: digest received was wrong (the client's authkey differs)");
  }
  send_handshake(s, wire::auth::welcome);
}

// Python's answer_challenge (the client's, blocking): the peer asks, we prove we know the key.
void answer_challenge(ConnectionState& s, const std::string& authkey) {
  std::string message = recv_handshake(s);
  if (!message.starts_with(wire::auth::challenge_tag)) {
    throw AuthenticationError("mpx: authentication: protocol error, expected a challenge");
  }
  message.erase(0, wire::auth::challenge_tag.size());
  send_handshake(s, wire::auth::respond(authkey, message));
  if (recv_handshake(s) != wire::auth::welcome) {
    throw AuthenticationError("mpx: Client: digest was rejected (the listener's authkey differs)");
  }
}

// ---- addresses ----

struct Resolved {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string unix_path;  // ipc only
  int family() const { return storage.ss_family; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

Resolved resolve(const std::string& address) {
  Resolved r;
  if (address.starts_with("ipc://")) {
    r.unix_path = address.substr(6);
    const auto un = wire::unix_address(r.unix_path);
    if (!un) {
      throw ValueError("mpx: ipc address '" + address + "' is empty or longer than a unix socket path allows (" +
                       std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes)");
    }
    std::memcpy(&r.storage, &*un, sizeof *un);
    r.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + r.unix_path.size() + 1);
    return r;
  }
  if (!address.starts_with("tcp://")) {
    throw ValueError("mpx: address '" + address + "' is neither tcp://host:port nor ipc:///path");
  }
  const std::string rest = address.substr(6);
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) throw ValueError("mpx: address '" + address + "' has no port");
  std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port == "*") port = "0";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    throw ValueError("mpx: cannot resolve '" + address + "': " + ::gai_strerror(rc));
  }
  std::memcpy(&r.storage, found->ai_addr, found->ai_addrlen);
  r.length = found->ai_addrlen;
  ::freeaddrinfo(found);
  return r;
}

std::string format(const sockaddr* a, const std::string& unix_path) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (a->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(a);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return "tcp://" + std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (a->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "tcp://[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "ipc://" + unix_path;
}

Connection direct(int fd) {
  auto s = std::make_shared<ConnectionState>();
  s->kind = ConnectionState::Kind::socket;
  s->fd = fd;
  return Connection(std::move(s));
}

void no_delay(int fd, int family) {
  if (family == AF_INET || family == AF_INET6) {
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

std::atomic<int> listener_counter{0};

}  // namespace

// ---- the listener's side of handshakes, side by side, without blocking ----

namespace detail {

// One accepted connection in Python's handshake, listener's side: deliver_challenge, then answer_challenge.
struct Handshake {
  enum class Awaiting { response, challenge, welcome };  // the client's next message
  int fd = -1;
  Awaiting awaiting = Awaiting::response;
  std::chrono::steady_clock::time_point deadline;
  std::string challenge;  // ours, which the client's response must answer
  std::string frame;      // the client's current message so far: its 4-byte length, then its bytes
  std::string peer;
};

struct PendingHandshakes {
  std::chrono::milliseconds timeout = handshake_timeout();
  std::deque<Handshake> handshakes;  // oldest first
  PendingHandshakes() = default;
  PendingHandshakes(const PendingHandshakes&) = delete;
  PendingHandshakes& operator=(const PendingHandshakes&) = delete;
  ~PendingHandshakes() {
    for (const auto& h : handshakes) ::close(h.fd);
  }
  void drop(std::size_t i) {
    ::close(handshakes[i].fd);
    handshakes.erase(handshakes.begin() + static_cast<std::ptrdiff_t>(i));
  }
};

}  // namespace detail

namespace {

using detail::Handshake;

// At most this many connections in their handshake at once: a flood of silent clients costs bounded descriptors (the
// oldest is dropped for a newcomer).
constexpr std::size_t max_pending_handshakes = 128;

// A handshake message sent whole or not at all: it is small, and a fresh socket's buffer has room for it; a peer that
// lets it fill is dropped.
void send_now(int fd, std::string_view message) {
  const wire::PythonLength length = wire::python_length(message.size());
  std::string frame(length.bytes, length.size);
  frame.append(message);
  ssize_t n;
  while ((n = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(frame.size())) {
    throw AuthenticationError("mpx: Listener.accept: the client does not read its handshake messages; dropped");
  }
}

// The client's message `message` arrived: answers it. True when the handshake is complete.
bool on_message(Handshake& h, const std::string& authkey, std::string_view message) {
  switch (h.awaiting) {
    case Handshake::Awaiting::response:
      if (!wire::auth::verify(authkey, h.challenge, message)) {
        try {
          send_now(h.fd, wire::auth::failure);
        } catch (const AuthenticationError&) {
        }
        throw AuthenticationError("mpx: Listener.accept: digest received was wrong (the client's authkey differs)");
      }
      send_now(h.fd, wire::auth::welcome);
      h.awaiting = Handshake::Awaiting::challenge;
      return false;
    case Handshake::Awaiting::challenge:
      if (!message.starts_with(wire::auth::challenge_tag)) {
        throw AuthenticationError("mpx: authentication: protocol error, expected a challenge");
      }
      send_now(h.fd, wire::auth::respond(authkey, message.substr(wire::auth::challenge_tag.size())));
      h.awaiting = Handshake::Awaiting::welcome;
      return false;
    case Handshake::Awaiting::welcome:
      if (message != wire::auth::welcome) {
        throw AuthenticationError("mpx: Listener.accept: the client rejected our digest (its authkey differs)");
      }
      return true;
  }
  return false;
}

// Reads what the client has sent, never past the message the handshake expects (what follows it is the connection's
// first data), and answers each whole message. True when the handshake is complete; throws AuthenticationError when
// it failed (wrong key, a message over 256 bytes, EOF).
bool advance(Handshake& h, const std::string& authkey) {
  for (;;) {
    std::size_t want = 4 - std::min<std::size_t>(h.frame.size(), 4);
    if (want == 0) {
      const std::int32_t size = wire::python_short_length(h.frame.data());
      if (size < 0 || static_cast<std::size_t>(size) > wire::auth::max_message_bytes) {
        throw AuthenticationError(too_long(size));
      }
      want = 4 + static_cast<std::size_t>(size) - h.frame.size();
      if (want == 0) {
        const std::string message = h.frame.substr(4);
        h.frame.clear();
        if (on_message(h, authkey, message)) return true;
        continue;
      }
    }
    char buffer[4 + wire::auth::max_message_bytes];
    const ssize_t n = ::recv(h.fd, buffer, want, MSG_DONTWAIT);
    if (n > 0) {
      h.frame.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      throw AuthenticationError("mpx: Listener.accept: the client closed the connection during the handshake");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return false;
    } else if (errno != EINTR) {
      throw AuthenticationError(std::string("mpx: Listener.accept: the handshake failed: ") + std::strerror(errno));
    }
  }
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, INT32_MAX));
}

}  // namespace

Listener::Listener(std::string address, std::optional<std::string> authkey, int backlog)
    : authkey_(std::move(authkey)) {
  if (address.empty()) {
    runtime::require_initialized();
    address = "ipc://" + runtime::state().session.directory + "/listener-" + std::to_string(::getpid()) + "-" +
              std::to_string(++listener_counter);
  }
  const Resolved r = resolve(address);
  fd_ = ::socket(r.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) raise_os("mpx: Listener: socket");
  if (r.family() != AF_UNIX) {
    const int one = 1;
    (void)::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(fd_, r.addr(), r.length) != 0 || ::listen(fd_, backlog) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::system_error(err, std::generic_category(), "mpx: Listener: cannot listen on '" + address + "'");
  }
  owner_ = ::getpid();
  unlink_path_ = r.unix_path;
  if (r.family() == AF_UNIX) {
    address_ = address;
  } else {
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&bound), &length);
    address_ = format(reinterpret_cast<const sockaddr*>(&bound), {});
  }
}

Listener::~Listener() { close(); }

Listener::Listener(Listener&& other) noexcept { *this = std::move(other); }

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    owner_ = other.owner_;
    address_ = std::move(other.address_);
    unlink_path_ = std::exchange(other.unlink_path_, {});
    authkey_ = std::move(other.authkey_);
    last_accepted_ = std::move(other.last_accepted_);
    pending_ = std::move(other.pending_);
  }
  return *this;
}

void Listener::close() {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  pending_.reset();
  // A forked copy must not remove its parent's socket file.
  if (!unlink_path_.empty() && owner_ == ::getpid()) ::unlink(unlink_path_.c_str());
  unlink_path_.clear();
}

Connection Listener::accept() {
  if (fd_ < 0) throw ValueError("mpx: Listener is closed");
  const auto take = [this](int flags, std::string& peer_name) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    int fd;
    while ((fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC | flags)) < 0) {
      if (errno != EINTR && errno != ECONNABORTED) raise_os("mpx: Listener.accept");
      length = sizeof peer;
    }
    no_delay(fd, peer.ss_family);
    peer_name = peer.ss_family == AF_UNIX ? address_ : format(reinterpret_cast<const sockaddr*>(&peer), {});
    return fd;
  };
  if (!authkey_) {
    std::string peer;
    const int fd = take(0, peer);
    last_accepted_ = std::move(peer);
    return direct(fd);
  }
  if (!pending_) pending_ = std::make_shared<detail::PendingHandshakes>();
  auto& pending = *pending_;
  for (;;) {
    auto& hs = pending.handshakes;
    for (std::size_t i = 0; i < hs.size(); ++i) {
      if (remaining_ms(hs[i].deadline) > 0) continue;
      const std::string peer = hs[i].peer;
      pending.drop(i);
      throw AuthenticationError("mpx: Listener.accept: " + peer + " did not complete the handshake within " +
                                std::to_string(pending.timeout.count()) + " ms; it was dropped");
    }
    std::vector<pollfd> fds{{fd_, POLLIN, 0}};
    int wait = -1;
    for (const auto& h : hs) {
      fds.push_back({h.fd, POLLIN, 0});
      const int left = remaining_ms(h.deadline);
      wait = wait < 0 ? left : std::min(wait, left);
    }
    if (::poll(fds.data(), fds.size(), wait) < 0) {
      if (errno == EINTR) continue;
      raise_os("mpx: Listener.accept");
    }
    // Handshakes under way first, oldest first.
    for (std::size_t i = 0; i < hs.size(); ++i) {
      if (fds[i + 1].revents == 0) continue;
      bool complete = false;
      try {
        complete = advance(hs[i], *authkey_);
      } catch (const AuthenticationError&) {
        pending.drop(i);
        throw;
      }
      if (!complete) continue;
      const int fd = hs[i].fd;
      last_accepted_ = std::move(hs[i].peer);
      hs.erase(hs.begin() + static_cast<std::ptrdiff_t>(i));
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);  // a Connection blocks, as Python's
      return direct(fd);
    }
    if ((fds[0].revents & POLLIN) == 0) continue;
    Handshake h;
    h.fd = take(SOCK_NONBLOCK, h.peer);
    h.deadline = std::chrono::steady_clock::now() + pending.timeout;
    h.challenge = wire::auth::new_challenge();
    if (hs.size() >= max_pending_handshakes) pending.drop(0);
    hs.push_back(std::move(h));
    try {
      send_now(hs.back().fd, std::string(wire::auth::challenge_tag) + hs.back().challenge);
    } catch (const AuthenticationError&) {
      pending.drop(hs.size() - 1);
      throw;
    }
  }
}

Connection Client(const std::string& address, std::optional<std::string> authkey) {
  const Resolved r = resolve(address);
  const int fd = ::socket(r.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) raise_os("mpx: Client: socket");
  Connection c = direct(fd);
  while (::connect(fd, r.addr(), r.length) != 0) {
    if (errno != EINTR) raise_os("mpx: Client: cannot connect to '" + address + "'");
  }
  no_delay(fd, r.family());
  if (authkey) {
    // A listener that never answers (or answers too little) is an AuthenticationError at the handshake timeout.
    const auto limit = handshake_timeout();
    const timeval bounded{static_cast<time_t>(limit.count() / 1000),
                          static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
    const timeval forever{0, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bounded, sizeof bounded);
    answer_challenge(*c.state(), *authkey);
    deliver_challenge(*c.state(), *authkey);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof forever);
  }
  return c;
}

}  // namespace mpx
