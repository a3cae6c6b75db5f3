// The actor's mailbox: a DEALER socket connected to the coordinator's ROUTER. Each thread of a process gets its own
// channel (ZeroMQ sockets are single-threaded), all under the process's actor id.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "wire/envelope.hpp"

namespace mpx::runtime {

class Channel {
 public:
  // The calling thread's channel to this session's coordinator, connected on first use: through the side door when
  // the coordinator has one and is not in this process, else through ZeroMQ.
  static Channel& current();

  // Sends a request and waits for the reply with the same correlation id. A reply of kind `error` is returned as is;
  // no reply within `timeout` throws TimeoutError; nullopt waits as long as it takes.
  wire::Envelope request(wire::Envelope request, std::optional<std::chrono::milliseconds> timeout);
  // Hands a message over without waiting for a handler's reply. On a channel to the session's coordinator, once post()
  // returns the message survives this process's death (PROTOCOL.md, "Durable posts"): through the side door it is in
  // the coordinator's socket buffer; through ZeroMQ the coordinator has acknowledged it. (In the coordinator's own
  // process it is an in-memory send: the coordinator dies with the process.)
  void post(wire::Envelope message);
  // Waits until everything posted so far has reached the coordinator (a ping round trip, if anything was posted
  // since the last reply and is not durable yet). A process calls it before exiting, so its last posts are not lost.
  void flush(std::chrono::milliseconds timeout);
  // flush() on this thread's channel, if it has one.
  static void flush_current(std::chrono::milliseconds timeout);
  // On a node, moves the calling thread off its agent's relay (runtime/node_relay.hpp) onto a ZeroMQ connection of its
  // own, once the coordinator has handled everything the thread sent through the relay. For a thread whose traffic is
  // round trips (a pool worker's): the relay makes posts cheap, and only adds a hop to each round trip.
  static void leave_node_relay();
  // True while this process has at most one channel. Only then is a posted message ordered before everything else
  // the process sends: each channel is its own connection, and the coordinator may read another thread's request
  // before this thread's post even when the post was sent first.
  static bool sole_in_process();

  std::uint64_t actor_id() const noexcept { return actor_id_; }
  // The ZeroMQ socket of a channel that does not use the side door.
  zmq::socket_t& socket() noexcept { return socket_; }

  // A ZeroMQ channel to `endpoint` (a manager's, say): posts on it are sent and not acknowledged.
  explicit Channel(zmq::context_t& context, const std::string& endpoint);

  // A ZeroMQ channel of its own to the coordinator at `endpoint` that also receives pushes: unsolicited messages
  // that its first request subscribed it to (a pool's result channel). It sends no hello: the process's other
  // channels speak for the process.
  static std::unique_ptr<Channel> for_pushes(zmq::context_t& context, const std::string& endpoint);
  // Waits until a push can be received or one of `others` is readable (their revents say which), and returns whether
  // a push can. nullopt waits as long as it takes. Throws zmq::error_t if the wait fails (EBADF: one of `others` was
  // closed).
  bool wait_for_push(std::span<zmq::pollitem_t> others, std::optional<std::chrono::milliseconds> timeout);
  // The next push, or nullopt if none is there. A malformed one throws ProtocolError.
  std::optional<wire::Envelope> next_push();
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

 private:
  enum class Posts { sent, acknowledged };
  Channel(zmq::context_t& context, const std::string& endpoint, Posts posts, bool hello = true);
  Channel();  // for the side door: no ZeroMQ socket
  // Connects to the side door at `path`; false (and no side door) if it cannot.
  bool open_side_door(const std::string& path);
  void side_write(wire::Envelope& message);
  wire::Envelope side_wait(std::uint64_t correlation, wire::Kind kind, std::optional<std::chrono::milliseconds> timeout);
  wire::Envelope zmq_wait(std::uint64_t correlation, wire::Kind kind, std::optional<std::chrono::milliseconds> timeout);
  [[noreturn]] void no_reply(wire::Kind kind, std::chrono::milliseconds timeout) const;
  [[noreturn]] void side_closed() const;

  zmq::socket_t socket_;  // unused (closed) on the side door
  int side_fd_ = -1;      // the side door's connection, when this channel uses it
  std::string side_in_;   // bytes read from it and not framed yet
  std::uint64_t actor_id_;
  std::uint64_t next_correlation_ = 1;
  std::string endpoint_;
  Posts posts_ = Posts::sent;
  bool unconfirmed_posts_ = false;
  std::vector<zmq::pollitem_t> wait_items_;  // wait_for_push's: this socket, then the others
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
