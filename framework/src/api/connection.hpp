// What is behind a Connection: a Pipe end (coordinator state, addressed by the end's id) or a direct socket (from
// Listener::accept or Client). Copies of a Connection share one ConnectionState.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include <sys/types.h>

namespace mpx::detail {

// This process's mirror of a Pipe end's readiness, behind the eventfd that fileno() returns. Updated from the
// coordinator's pushes (by the watcher thread) and from the replies to this process's own recv and poll.
struct Readiness {
  int fd = -1;  // eventfd: readable while `ready`
  bool known = false;
  bool ready = false;
  bool signaled = false;
  std::uint64_t version = 0;
  ~Readiness();
};

// The readiness mirror of `end` in this process, subscribing on first use; blocks until the first state is known.
std::shared_ptr<Readiness> watch_end(std::uint64_t end);
// Merges a (ready, version) pair from a reply, if this process mirrors the end.
void merge_readiness(std::uint64_t end, bool ready, std::uint64_t version);
// A mirror that is always ready: fileno() of an end whose pipe is gone.
std::shared_ptr<Readiness> always_ready();

struct DirectReader;
struct DirectWriter;

struct ConnectionState {
  enum class Kind { pipe, socket };
  Kind kind = Kind::pipe;
  pid_t owner = 0;  // the process this state belongs to; a forked copy resets its per-process parts
  bool closed = false;
  bool readable = true;
  bool writable = true;

  // Pipe end
  std::uint64_t end = 0;
  bool gone = false;         // the coordinator no longer has the pipe: every operation is EOF
  pid_t inherited_from = 0;  // in a forked child: the parent whose copy this is, until this process first uses it
  std::shared_ptr<Readiness> readiness;
  // Messages a batched recv took from the coordinator and this process has not read yet. Only filled while no
  // readiness mirror exists (the mirror would not see them); given back before the end leaves this process.
  std::deque<std::string> unread;
  // The direct path (api/pipe_direct.hpp): this process listening as the end's reader, and writing straight to the
  // other end's reader.
  std::unique_ptr<DirectReader> in;
  std::unique_ptr<DirectWriter> out;
  std::uint32_t listen_skip = 0;     // receives to let pass before asking to listen again, after a refusal
  std::uint32_t listen_backoff = 0;

  // Direct socket
  int fd = -1;

  ConnectionState();
  ~ConnectionState();
  ConnectionState(const ConnectionState&) = delete;
  ConnectionState& operator=(const ConnectionState&) = delete;
  // In a forked child: forget what belongs to the parent (its readiness mirror, its unread messages, its direct paths).
  void refresh_after_fork();
};

// Gives the messages taken in a batch and not read back to the coordinator (pipe_unread), front first.
void give_back_unread(ConnectionState& s);
// Ends this process's direct paths on the end and gives back everything it took from the end and has not read.
void give_back_all(ConnectionState& s);

// The direct-socket side of Connection (api/listener.cpp).
void socket_send(ConnectionState& s, const char* data, std::size_t size);
std::string socket_recv(ConnectionState& s, std::size_t maxlength);
// Waits for `events` on fd up to timeout_ms (-1: no limit), retrying on EINTR; false at the deadline. A failing
// poll throws std::system_error naming `what`.
bool wait_fd(int fd, short events, std::int64_t timeout_ms, const char* what);

}  // namespace mpx::detail
