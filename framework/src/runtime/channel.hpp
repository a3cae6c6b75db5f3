// The actor's mailbox: a DEALER socket connected to the coordinator's ROUTER. Each thread of a process gets its own
// channel (ZeroMQ sockets are single-threaded), all under the process's actor id.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "wire/envelope.hpp"

namespace mpx::runtime {

class Channel {
 public:
  // The calling thread's channel in this process, connected on first use.
  static Channel& current();

  // Sends a request and waits for the reply with the same correlation id. A reply of kind `error` is returned as is;
  // no reply within `timeout` throws TimeoutError; nullopt waits as long as it takes.
  wire::Envelope request(wire::Envelope request, std::optional<std::chrono::milliseconds> timeout);
  // Sends without waiting for a reply.
  void post(wire::Envelope message);
  // Waits until everything posted so far has reached the coordinator (a ping round trip, if anything was posted
  // since the last reply). A process calls it before exiting, so its last posts are not lost with it.
  void flush(std::chrono::milliseconds timeout);
  // flush() on this thread's channel, if it has one.
  static void flush_current(std::chrono::milliseconds timeout);
  // True while this process has at most one channel. Only then is a posted message ordered before everything else
  // the process sends: each channel is its own connection, and the coordinator may read another thread's request
  // before this thread's post even when the post was sent first.
  static bool sole_in_process();

  std::uint64_t actor_id() const noexcept { return actor_id_; }
  zmq::socket_t& socket() noexcept { return socket_; }

  explicit Channel(zmq::context_t& context, const std::string& endpoint);

 private:
  zmq::socket_t socket_;
  std::uint64_t actor_id_;
  std::uint64_t next_correlation_ = 1;
  std::string endpoint_;
  bool unconfirmed_posts_ = false;
};

// A connection to the coordinator's side door (PROTOCOL.md, "The side door"): a unix stream socket, so a message
// goes from this thread into the kernel and out to the coordinator thread without ZeroMQ's I/O thread on either
// end. Only the kinds the coordinator allows there (a pool worker's take and results); a thread that uses one sends
// those kinds on it alone, so they stay in order. Blocking, one request at a time.
class SideChannel {
 public:
  // Connects if this session's coordinator has a side door (connected() says whether it did), after ensure_known():
  // the side door's traffic must follow this process's hello (how the coordinator watches it for its death and names
  // it in a trace).
  SideChannel();
  ~SideChannel();
  SideChannel(const SideChannel&) = delete;
  SideChannel& operator=(const SideChannel&) = delete;
  bool connected() const noexcept { return fd_ >= 0; }
  // Sends and waits for the reply with the same correlation id (as Channel::request without a timeout). Throws
  // ProtocolError if the coordinator goes away.
  wire::Envelope request(wire::Envelope request);
  void post(wire::Envelope message);

 private:
  void write_all(wire::Envelope& message);
  int fd_ = -1;
  std::uint64_t actor_id_ = 0;
  std::uint64_t next_correlation_ = 1;
  std::string in_;
};

// Runs on a thread that ends, just before its channel closes, so what the hook sends still goes out (a consumer thread
// giving back what it was lent). Thread-locals of other files may be destroyed before or after the channel, depending
// on which was first used; a hook does not depend on that. Hooks are plain functions, registered once.
void add_thread_exit_hook(void (*hook)());

// Returns once the coordinator has handled this process's hello: from then on it watches the process for its death
// (and so recovers what the process holds) and knows it by name. A ping's reply on this thread's channel comes after
// the hello, so this is one round trip the first time in each process, and nothing after. Throws if the coordinator
// does not answer within 30 s.
void ensure_known();

// Throws ProtocolError (or the matching mpx error) if `reply` is an error reply; returns it otherwise.
wire::Envelope& expect_ok(wire::Envelope& reply);

}  // namespace mpx::runtime
