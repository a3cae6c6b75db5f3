#include "wire/stream_framing.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <mpx/errors.hpp>

namespace mpx::wire {

void append_record(std::string& out, std::string_view bytes) {
  char length[record_length_bytes];
  store_record_length(length, static_cast<std::uint32_t>(bytes.size()));
  out.append(length, sizeof length);
  out.append(bytes);
}

std::optional<std::string_view> RecordReader::next() {
  if (rest_.empty()) return std::nullopt;
  if (rest_.size() < record_length_bytes) throw ProtocolError(std::string("mpx: ") + what_ + " ends inside a length");
  const std::size_t length = load_record_length(rest_.data());
  if (length > rest_.size() - record_length_bytes) {
    throw ProtocolError(std::string("mpx: ") + what_ + " ends inside a message");
  }
  const std::string_view record = rest_.substr(record_length_bytes, length);
  rest_.remove_prefix(record_length_bytes + length);
  return record;
}

namespace {
void store_be(char* p, std::uint64_t v, int bytes) noexcept {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
}
std::uint64_t load_be(const char* p, int bytes) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
}  // namespace

PythonLength python_length(std::uint64_t length) noexcept {
  PythonLength out{};
  if (length <= 0x7fffffff) {
    store_be(out.bytes, length, 4);
    out.size = python_short_length_bytes;
  } else {
    std::memset(out.bytes, 0xff, 4);
    store_be(out.bytes + 4, length, 8);
    out.size = python_long_length_bytes;
  }
  return out;
}

std::int32_t python_short_length(const char* p) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(load_be(p, 4)));
}

std::uint64_t python_long_length(const char* p) noexcept { return load_be(p, 8); }

std::optional<std::string_view> take_python_frame(std::string_view buffer, std::size_t& start, std::size_t max_bytes,
                                                  const char* what) {
  const std::string_view rest = buffer.substr(start);
  if (rest.size() < python_short_length_bytes) return std::nullopt;
  const std::int32_t short_length = python_short_length(rest.data());
  std::size_t prefix = python_short_length_bytes;
  std::uint64_t length = static_cast<std::uint32_t>(short_length);
  if (short_length == -1) {
    if (rest.size() < python_long_length_bytes) return std::nullopt;
    length = python_long_length(rest.data() + python_short_length_bytes);
    prefix = python_long_length_bytes;
  } else if (short_length < 0) {
    throw ProtocolError(std::string("mpx: ") + what + ": a frame length of " + std::to_string(short_length));
  }
  if (length > max_bytes) {
    throw ProtocolError(std::string("mpx: ") + what + " frame of " + std::to_string(length) + " bytes is over the limit");
  }
  if (rest.size() - prefix < length) return std::nullopt;
  start += prefix + length;
  return rest.substr(prefix, length);
}

std::optional<sockaddr_un> unix_address(std::string_view path) noexcept {
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof address.sun_path) {
    errno = path.empty() ? ENOENT : ENAMETOOLONG;
    return std::nullopt;
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

bool listen_unix(int fd, const sockaddr_un& address, int backlog) noexcept {
  return ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 && ::listen(fd, backlog) == 0;
}

int listen_unix_at(const std::string& path, int backlog) noexcept {
  const auto address = unix_address(path);
  if (!address) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  ::unlink(path.c_str());
  if (!listen_unix(fd, *address, backlog)) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

bool connect_unix(int fd, const sockaddr_un& address) noexcept {
  int rc = 0;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  } while (rc != 0 && errno == EINTR);
  return rc == 0;
}

int accept_unix_peer(int fd, pid_t& peer) noexcept {
  for (;;) {
    const int connection = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (connection < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return -1;
    }
    ucred credentials{};
    socklen_t size = sizeof credentials;
    if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0 || credentials.pid <= 0) {
      ::close(connection);
      continue;
    }
    peer = credentials.pid;
    return connection;
  }
}

bool write_pending(int fd, std::string& out) noexcept {
  std::size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // the rest when the socket takes it (POLLOUT)
    out.clear();
    return false;
  }
  out.erase(0, sent);
  return true;
}

}  // namespace mpx::wire
