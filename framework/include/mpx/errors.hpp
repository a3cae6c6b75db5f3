/// \file
/// mpx/errors.hpp — the exception hierarchy, mirroring Python's multiprocessing errors.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/types.h>

namespace mpx {

/// Every mpx exception derives from Error, which derives from std::runtime_error.
class MPX_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A deadline passed (Python: multiprocessing.TimeoutError / TimeoutError).
class MPX_API TimeoutError : public Error {
 public:
  using Error::Error;
};

/// A process was misused: started twice, joined before start, closed while running (Python: ValueError/AssertionError).
class MPX_API ProcessError : public Error {
 public:
  using Error::Error;
};

/// A message broke the protocol: bad envelope, unknown kind, mismatched build.
class MPX_API ProtocolError : public Error {
 public:
  using Error::Error;
};

/// A value could not be encoded or decoded with msgpack.
class MPX_API SerializationError : public Error {
 public:
  using Error::Error;
};

/// Reserved for the queues (Python: queue.Full and queue.Empty).
class MPX_API Full : public Error {
 public:
  using Error::Error;
};
/// Raised by get_nowait(), or by get() whose timeout passed, on an empty queue (Python: queue.Empty).
class MPX_API Empty : public Error {
 public:
  using Error::Error;
};

/// A misuse Python reports as ValueError: a closed queue, task_done() called too many times, a semaphore released
/// past its bound.
class MPX_API ValueError : public Error {
 public:
  using Error::Error;
};

/// The other end of a Connection is closed or its process died (Python: EOFError).
class MPX_API EOFError : public Error {
 public:
  using Error::Error;
};

/// recv_bytes_into got a message longer than the buffer; the message is kept in the exception (Python: same name).
class MPX_API BufferTooShort : public Error {
 public:
  /// Carries `message` (what()) and the whole received message `data`.
  BufferTooShort(std::string message, std::string data) : Error(std::move(message)), data_(std::move(data)) {}
  /// The received message that did not fit (Python: e.args[0]).
  const std::string& data() const noexcept { return data_; }

 private:
  std::string data_;
};

/// A Listener or Client handshake failed: wrong authkey (Python: multiprocessing.AuthenticationError).
class MPX_API AuthenticationError : public Error {
 public:
  using Error::Error;
};

/// A Barrier was aborted or reset while waiting, or a wait timed out (Python: threading.BrokenBarrierError).
class MPX_API BrokenBarrierError : public Error {
 public:
  using Error::Error;
};

/// A readable C++ type name from a mangled one (std::type_info::name()); the input unchanged if it cannot be demangled.
/// What RemoteError::type() holds for an exception thrown in a worker.
MPX_API std::string demangle(const char* mangled);

/// An exception thrown in another process: its type name, message, and where it happened.
class MPX_API RemoteError : public Error {
 public:
  /// An exception of type name `type` with what() `message`, thrown in process `pid` on `host` (empty: this host).
  RemoteError(std::string type, std::string message, pid_t pid, std::string host = {});
  /// A Pool or Executor task's error also names the task (its index in the map, or the submission's number).
  RemoteError(std::string type, std::string message, pid_t pid, std::uint64_t task_index);

  /// The exception's demangled type name, e.g. "std::out_of_range".
  const std::string& type() const noexcept { return type_; }
  const std::string& message() const noexcept { return message_; }  ///< The remote exception's what().
  pid_t pid() const noexcept { return pid_; }  ///< The pid of the process that threw it.
  const std::string& host() const noexcept { return host_; }  ///< The host it was thrown on; empty for this host.
  /// The index of the Pool task that raised it; unset for a Process target's exception.
  std::optional<std::uint64_t> task_index() const noexcept { return task_index_; }

 private:
  std::string type_;
  std::string message_;
  pid_t pid_;
  std::string host_;
  std::optional<std::uint64_t> task_index_;
};

/// Ctrl-C (SIGINT) arrived while a Pool or Executor call was waiting: the workers were stopped and the outstanding
/// tasks cancelled (Python raises KeyboardInterrupt, often after a storm of worker tracebacks or a hang).
class MPX_API Interrupted : public Error {
 public:
  using Error::Error;
};

/// A Pool task's worker died each time it ran the task (max_retries + 1 times): the task failed instead of hanging the
/// caller, as Python's Pool would (gh-66587). Names the task and the last worker's exit code (-N: signal N).
class MPX_API WorkerLost : public Error {
 public:
  /// Task `task_index` was run `attempts` times; the last worker, `pid`, ended with `exitcode`.
  WorkerLost(std::uint64_t task_index, pid_t pid, int exitcode, unsigned attempts);
  /// The lost task's index (its position in the map, or its submission number).
  std::uint64_t task_index() const noexcept { return task_index_; }
  pid_t pid() const noexcept { return pid_; }  ///< The pid of the last worker that died running it.
  int exitcode() const noexcept { return exitcode_; }  ///< That worker's exit code; -N if signal N killed it.
  /// The signal that killed the worker, 0 if it exited.
  int signal() const noexcept { return exitcode_ < 0 ? -exitcode_ : 0; }
  unsigned attempts() const noexcept { return attempts_; }  ///< How many times the task ran (max_retries + 1).

 private:
  std::uint64_t task_index_;
  pid_t pid_;
  int exitcode_;
  unsigned attempts_;
};

/// A node (another host of a distributed session) was lost: its agent died, its host was cut off, or its link went
/// down, and the coordinator heard nothing from it for the node timeout (framework/docs/distributed.md). The
/// processes that ran there are reported dead with this as their exception and mpx::node_lost_exitcode as their exit
/// code; a request made of a lost node raises it. Ray calls this NodeDiedError; Python has no equivalent.
class MPX_API NodeLost : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// The exit code of a process whose node was lost: not a code a process can exit with (0..255), nor a signal (-1..-64).
inline constexpr int node_lost_exitcode = -255;

/// A task or future was cancelled before it ran, or its pool was terminated (Python:
/// concurrent.futures.CancelledError).
class MPX_API CancelledError : public Error {
 public:
  using Error::Error;
};

/// ProcessPoolExecutor with broken_on_worker_death: a worker died, and every pending future failed
/// (Python: concurrent.futures.process.BrokenProcessPool).
class MPX_API BrokenProcessPool : public Error {
 public:
  using Error::Error;
};

/// A topology file is invalid (the message names the file, line, column, key and what was expected), or a topology
/// could not start or was misused.
class MPX_API TopologyError : public Error {
 public:
  using Error::Error;
};

/// A Manager's dict or nested map has no such key (Python: KeyError); the message names the key.
class MPX_API KeyError : public Error {
 public:
  using Error::Error;
};

/// A Manager Namespace has no such attribute (Python: AttributeError).
class MPX_API AttributeError : public Error {
 public:
  using Error::Error;
};

/// An operation was applied to a value of the wrong type, e.g. append to a number (Python: TypeError).
class MPX_API TypeError : public Error {
 public:
  using Error::Error;
};

}  // namespace mpx

namespace mpx {

/// A shared memory segment name is taken (Python: FileExistsError from SharedMemory(name, create=True)).
class MPX_API FileExistsError : public Error {
 public:
  using Error::Error;
};

/// No shared memory segment has that name (Python: FileNotFoundError from SharedMemory(name)).
class MPX_API FileNotFoundError : public Error {
 public:
  using Error::Error;
};

/// An index outside an Array, or outside a Manager's list (Python: IndexError).
class MPX_API IndexError : public Error {
 public:
  using Error::Error;
};

}  // namespace mpx
