/// \file
/// mpx/pipe.hpp — Pipe and Connection (Python's multiprocessing.Pipe), wait(), and Listener/Client (Python's
/// multiprocessing.connection).
///
/// A Pipe's two ends are handles on coordinator-side state: each end has an inbox that holds, in order, the messages
/// the other end sent. Ends travel as Process arguments (or through a Queue) like every handle.
///
/// Who holds an end. Python closes a pipe end when every copy of its file descriptor is closed. mpx handles are plain
/// values that can be copied anywhere, so the coordinator counts the processes that hold each end instead:
///   * Pipe() makes the calling process a holder of both ends;
///   * a process that adopts an end (decodes it: a Process argument, an item from a Queue or a Connection) becomes a
///     holder, and so does a process that sends, receives or polls through it (a fork child that uses a copy it
///     inherited in a closure adopts that copy);
///   * a holder stops holding the end when it calls close() or dies (killed included).
/// recv() on one end raises mpx::EOFError once every holder of the other end has closed it or died and every message it
/// sent has been read (and poll() then returns true). Two processes writing on one end: the reader sees EOF only after
/// both are gone. A holder's death is seen when the coordinator notices it (a pidfd), or at the latest once the process
/// has been joined. A released end is taken up again by the next process that adopts or uses it, and messages sent to
/// it in between wait in its inbox.
///
/// Handing a copy on. Encoding an end for another process keeps the end held for that copy until a process adopts it,
/// so Python's idiom of closing the parent's copy right after passing the end to a child is safe. As in Python, a
/// process that passed its copy on and did not close it still holds the end: the other end sees EOF only once it too
/// has closed its copy or ended, so close the copies you hand on.
///
/// What a process took from an end and did not read (a batch of messages, or what reached it on the direct path) goes
/// back to the pipe when it closes the end, hands it on, or drops its last copy (a Process target returning), so the
/// end's other holders read it, in order. Only a process that is killed takes such messages with it.
///
/// send() does not wait for the coordinator and does not report a released peer (the message waits in the peer's inbox
/// for whoever takes that end up next); use recv() or poll() to learn about EOF. A pipe's state is dropped once neither
/// end has a holder and both inboxes are empty (or its creator has died); later operations on it raise EOFError.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <mpx/errors.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>
#include <mpx/process.hpp>

namespace mpx {

namespace detail {
struct ConnectionState;
struct PendingHandshakes;
}

/// One end of a Pipe, or a direct connection from Listener::accept() or Client(). Copies of a Connection are the same
/// connection (like copies of a Python reference): closing one closes them all in this process. As in Python, one
/// connection is not meant to be used by two threads at once.
class MPX_API Connection : public Handle {
 public:
  /// "To the end of the buffer", for send_bytes' size.
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  /// Rebuilds an end in the process that decodes it and makes this process one of its holders.
  Connection(adopt_t, ObjectRef ref);

  /// Python's Connection.send(obj): sends one message holding `obj`. mpx::ValueError if this end is closed or
  /// read-only, mpx::EOFError if the pipe is gone. Encodes now, so a serialization error is raised here, at the caller.
  template <Serializable T>
  void send(const T& obj) {
    send_message(encode(obj));
  }
  /// Python's Connection.recv(): waits, as long as it takes, for the next message; mpx::EOFError when the other end is
  /// closed and nothing is left.
  /// Receives one message and decodes it as T; mpx::Object takes any shape. A message that is not a T raises
  /// mpx::SerializationError (the message is consumed).
  template <Serializable T = Object>
  T recv() {
    return decode<T>(recv_bytes());
  }

  /// Sends buf[offset, offset + size) as one message. A bad offset or size raises mpx::ValueError, as in Python.
  void send_bytes(std::string_view buf, std::size_t offset = 0, std::size_t size = npos);
  /// The same, from bytes.
  void send_bytes(std::span<const std::byte> buf, std::size_t offset = 0, std::size_t size = npos);
  /// Receives one message. A message longer than maxlength raises mpx::ValueError and is discarded (Python raises
  /// OSError and closes the connection; mpx keeps it usable, since its messages are framed).
  std::string recv_bytes(std::optional<std::size_t> maxlength = std::nullopt);
  /// Receives one message into buffer[offset...] and returns its length. A message that does not fit raises
  /// mpx::BufferTooShort carrying the whole message (data()); it is consumed either way.
  std::size_t recv_bytes_into(std::span<std::byte> buffer, std::size_t offset = 0);
  /// Whether a message (or EOF) is ready to be received, waiting up to `timeout`; nullopt waits as long as it takes.
  [[nodiscard]] bool poll(const Timeout& timeout = std::chrono::duration<double>(0));

  /// Python's close(): closes this end in this process (every copy of it here); later calls raise mpx::ValueError. Safe
  /// to call twice.
  void close();
  bool closed() const;  ///< Whether this end was closed (Python: the `closed` property).
  bool readable() const;  ///< Whether this end can receive (false for a simplex pipe's write end).
  bool writable() const;  ///< Whether this end can send (false for a simplex pipe's read end).
  /// A file descriptor for poll()/select()/epoll: readable while a message (or EOF) is ready. For a direct connection
  /// it is the socket itself. For a Pipe end it is an eventfd that this process keeps in step with the coordinator
  /// through a background thread (started by the first fileno()): it may lag the truth by one coordinator round trip,
  /// so after it signals, poll() gives the exact answer. Owned by the connection; do not close it.
  int fileno();

  /// Internal: the object behind every copy, and the hook the msgpack adaptor calls when this end is encoded.
  explicit Connection(std::shared_ptr<detail::ConnectionState> state);
  /// Internal: the shared state.
  const std::shared_ptr<detail::ConnectionState>& state() const noexcept { return state_; }
  ObjectRef hand_over() const;  ///< Internal: the reference this end travels as (hands the end over to its receiver).

 private:
  void send_message(std::string message);
  std::shared_ptr<detail::ConnectionState> state_;
};

/// Python's Pipe(duplex): two connected ends. A duplex pipe's ends both send and receive; a simplex pipe returns
/// (read-only end, write-only end), and the wrong operation raises mpx::ValueError ("connection is write-only").
MPX_API std::pair<Connection, Connection> Pipe(bool duplex = true);

/// What wait() accepts: connections (ready when a message or EOF is waiting) and processes (ready when they ended).
using Waitable = std::variant<Connection, Process>;

/// Python's multiprocessing.connection.wait: blocks until at least one object is ready or the timeout passes (nullopt:
/// no limit) and returns the ready ones, in the order given. No busy-waiting: it sleeps in poll() on the objects'
/// fileno() and sentinel() descriptors.
MPX_API std::vector<Waitable> wait(const std::vector<Waitable>& objects, const Timeout& timeout = std::nullopt);
/// The same, for connections only.
MPX_API std::vector<Connection> wait(const std::vector<Connection>& connections, const Timeout& timeout = std::nullopt);

/// Python's multiprocessing.connection.Listener. The address is "tcp://host:port" (port 0 or * picks a free one) or
/// "ipc:///path/to/socket" (a unix socket, removed by close()); empty picks a unix socket in the session directory.
/// With an authkey, accept() runs Python's HMAC challenge in both directions (HMAC-SHA256, the same messages as
/// Python 3.12, so Python's Client can connect) and raises mpx::AuthenticationError ("digest received was wrong") when
/// the client's key differs. The connections it returns are direct sockets (length-prefixed frames, as in Python), not
/// coordinator objects: they cannot be passed to another process as arguments, except to a fork child inside a closure.
/// Handshakes run side by side: a client that says nothing, or sends a handshake message over 256 bytes, never delays
/// another's. accept() returns the first to complete its handshake, or raises AuthenticationError for the first to
/// fail it, a client silent for the handshake timeout included (10 s; MPX_HANDSHAKE_TIMEOUT_MS in the environment
/// when the Listener is made sets another). Client() waits for the listener's side as long.
class MPX_API Listener {
 public:
  /// Binds and listens at `address` (see the class comment) with `backlog` pending connections; std::system_error if
  /// the OS refuses (the address is in use).
  explicit Listener(std::string address = {}, std::optional<std::string> authkey = std::nullopt, int backlog = 16);
  ~Listener();  ///< Closes the listener (see close()).
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  /// Takes over other's socket; `other` is left closed.
  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;  ///< Closes this listener, then takes over other's socket.

  /// Python's accept(): waits, as long as it takes, for a client that completes the handshake; mpx::ValueError if
  /// closed.
  Connection accept();
  void close();  ///< Stops listening and removes the unix socket file it created. Safe to call twice.
  /// The bound address, with the real port for tcp: pass it to Client().
  const std::string& address() const noexcept { return address_; }
  /// The peer of the last accepted connection ("tcp://ip:port", or the ipc address).
  const std::optional<std::string>& last_accepted() const noexcept { return last_accepted_; }

 private:
  int fd_ = -1;
  pid_t owner_ = 0;  ///< only the process that bound a unix socket removes its file
  std::string address_;
  std::string unlink_path_;
  std::optional<std::string> authkey_;
  std::optional<std::string> last_accepted_;
  std::shared_ptr<detail::PendingHandshakes> pending_;  ///< accepted connections whose handshake is under way
};

/// Python's multiprocessing.connection.Client: connects to a Listener's address. A wrong authkey raises
/// mpx::AuthenticationError ("digest was rejected"). Failures of the OS (nothing listens at the address, an address
/// already in use for a Listener) raise std::system_error, Python's OSError.
MPX_API Connection Client(const std::string& address, std::optional<std::string> authkey = std::nullopt);

}  // namespace mpx

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {

// Encoding an end hands it over (see the header comment): closing this process's copy afterwards releases nothing.
// A direct connection cannot be encoded: it raises mpx::SerializationError.
template <>
struct pack<mpx::Connection> {
  template <class Stream>
  packer<Stream>& operator()(packer<Stream>& p, const mpx::Connection& connection) const {
    return p.pack(connection.hand_over());
  }
};

}  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack
