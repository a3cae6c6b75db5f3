// The Manager's direct stream: proxies reach a manager over a plain stream socket (Listener/Client: Python's framing
// and HMAC handshake) instead of ZeroMQ, one blocking round trip per operation. ZeroMQ hands every message to an I/O
// thread on each side, which costs several context switches per round trip; a manager's requests are strictly one at a
// time per thread. Each message is one frame: a byte with the header's length, the envelope header, then the msgpack
// body. The client side (a thread's connections) is in api/manager.cpp; the frames and the server are here.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <mpx/pipe.hpp>

#include "manager/server.hpp"
#include "wire/envelope.hpp"

namespace mpx::manager {

// Python's framing (a 4-byte big-endian length, then the frame), written with one send. EOFError if the stream is
// closed; ValueError for a frame over 2 GiB.
void write_frame(int fd, const wire::Header& header, std::string_view body);

// Reads whole frames, usually one recv each (requests and replies alternate, so a read rarely holds more than one
// frame; what does is kept for the next call). Bounded by the wire limit.
class FrameReader {
 public:
  // The next frame; throws EOFError at the end of the stream, TimeoutError when SO_RCVTIMEO passes, ProtocolError
  // for a frame over the limit.
  std::string next(int fd);

 private:
  std::string buffer_;
};

// Parses a direct frame into an envelope with one body frame; throws ProtocolError if it is not one.
wire::Envelope parse_direct_frame(const std::string& frame);

// The server side: a listener thread, and a thread per connection (as Python's manager has), each running requests
// through ManagerServer::execute, which serializes them on the objects' mutex.
class DirectServer {
 public:
  DirectServer(ManagerServer& server, const std::string& address, std::optional<std::string> authkey);
  ~DirectServer() { stop(); }
  DirectServer(const DirectServer&) = delete;
  DirectServer& operator=(const DirectServer&) = delete;

  const std::string& address() const noexcept { return listener_.address(); }
  void start();
  void stop();

 private:
  // A connection's thread, and whether it has finished (then it is joined at the next accept, so a long-lived manager
  // does not keep the stacks of every client it ever had).
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  void accept_loop();
  void serve(Connection c);
  void reap_finished();

  ManagerServer& server_;
  Listener listener_;
  std::optional<std::string> authkey_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<Worker> threads_;
  std::thread acceptor_;
};

// The direct listener's address next to a manager endpoint: "<path>.direct" for ipc, a free port on the same host for
// tcp. ValueError for any other address.
std::string direct_address_for(const std::string& endpoint);

}  // namespace mpx::manager
