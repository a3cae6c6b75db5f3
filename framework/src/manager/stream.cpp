#include "manager/stream.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <unistd.h>

#include <mpx/errors.hpp>

#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"

namespace mpx::manager {

void write_frame(int fd, const wire::Header& header, std::string_view body) {
  const zmq::message_t h = wire::encode_header(header);
  const std::size_t size = 1 + h.size() + body.size();
  if (size > 0x7fffffff) throw ValueError("mpx: a manager request of " + std::to_string(size) + " bytes is too large");
  const wire::PythonLength length = wire::python_length(size);
  std::string out;
  out.reserve(length.size + size);
  out.append(length.bytes, length.size);
  out.push_back(static_cast<char>(h.size()));
  out.append(static_cast<const char*>(h.data()), h.size());
  out.append(body);
  for (std::size_t sent = 0; sent < out.size();) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw EOFError(std::string("mpx: the manager stream is closed: ") + std::strerror(errno));
    }
    sent += static_cast<std::size_t>(n);
  }
}

std::string FrameReader::next(int fd) {
  for (;;) {
    std::size_t end = 0;
    if (auto frame = wire::take_python_frame(buffer_, end, static_cast<std::size_t>(wire::limits().max_message_bytes),
                                              "a manager stream")) {
      std::string whole(*frame);
      buffer_.erase(0, end);
      return whole;
    }
    char chunk[65536];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) throw TimeoutError("mpx: no reply from the manager within 60 s");
      throw EOFError(std::string("mpx: the manager stream failed: ") + std::strerror(errno));
    }
    if (n == 0) throw EOFError("mpx: the manager stream is closed");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

wire::Envelope parse_direct_frame(const std::string& frame) {
  if (frame.empty() || static_cast<unsigned char>(frame[0]) + 1u > frame.size()) {
    throw ProtocolError("mpx: a manager stream frame of " + std::to_string(frame.size()) + " bytes has no header");
  }
  const std::size_t header_size = static_cast<unsigned char>(frame[0]);
  wire::Envelope e;
  e.header = wire::decode_header(frame.data() + 1, header_size);
  e.body.emplace_back(frame.data() + 1 + header_size, frame.size() - 1 - header_size);
  return e;
}

DirectServer::DirectServer(ManagerServer& server, const std::string& address, std::optional<std::string> authkey)
    : server_(server), listener_(address, authkey), authkey_(std::move(authkey)) {
  server_.set_direct_address(listener_.address());
}

void DirectServer::start() {
  acceptor_ = std::thread([this] { accept_loop(); });
}

void DirectServer::stop() {
  if (!acceptor_.joinable()) return;
  stopping_ = true;
  // accept() does not wake when its socket is closed by another thread: a last connection of our own wakes it.
  try {
    (void)Client(listener_.address(), authkey_);
  } catch (const std::exception&) {
  }
  acceptor_.join();
  std::vector<Worker> threads;
  {
    std::lock_guard lock(mutex_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);  // wakes each connection thread's read with EOF
    threads = std::move(threads_);
  }
  for (auto& w : threads) w.thread.join();
}

void DirectServer::accept_loop() {
  while (!stopping_) {
    std::optional<Connection> c;
    try {
      c = listener_.accept();  // with an authkey, the handshake: a wrong key throws here
    } catch (const std::exception&) {
      continue;
    }
    if (stopping_) break;
    std::lock_guard lock(mutex_);
    reap_finished();
    fds_.push_back(c->fileno());
    auto done = std::make_shared<std::atomic<bool>>(false);
    threads_.push_back(Worker{std::thread([this, done, conn = std::move(*c)]() mutable {
                                serve(std::move(conn));
                                done->store(true);
                              }),
                              done});
  }
}

void DirectServer::serve(Connection c) {
  FrameReader reader;
  const int fd = c.fileno();
  for (;;) {
    std::string frame;
    try {
      frame = reader.next(fd);
    } catch (const std::exception&) {
      break;  // EOF, or a frame over the limit: the stream cannot be trusted any more
    }
    std::optional<wire::Envelope> reply;
    wire::Envelope request;
    try {
      request = parse_direct_frame(frame);
    } catch (const ProtocolError&) {
      break;  // no header to answer to: close the stream, as for any unframed input
    }
    reply = server_.execute(request);
    if (!reply) continue;  // posted
    reply->header.sender = static_cast<std::uint64_t>(::getpid());
    try {
      write_frame(fd, reply->header,
                  std::string_view(static_cast<const char*>(reply->body.front().data()), reply->body.front().size()));
    } catch (const std::exception&) {
      break;
    }
  }
  std::lock_guard lock(mutex_);
  fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
  c.close();
}

void DirectServer::reap_finished() {
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
}

std::string direct_address_for(const std::string& endpoint) {
  if (endpoint.starts_with("ipc://")) return endpoint + ".direct";
  if (endpoint.starts_with("tcp://")) {
    const auto colon = endpoint.rfind(':');
    return endpoint.substr(0, colon) + ":0";
  }
  throw ValueError("mpx: a manager address must be tcp://host:port or ipc:///path, not '" + endpoint + "'");
}

}  // namespace mpx::manager
