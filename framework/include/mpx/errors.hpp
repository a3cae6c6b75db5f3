// mpx/errors.hpp — the exception hierarchy, mirroring Python's multiprocessing errors.
#pragma once

#include <stdexcept>
#include <string>
#include <sys/types.h>

namespace mpx {

// Every mpx exception derives from Error, which derives from std::runtime_error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A deadline passed (Python: multiprocessing.TimeoutError / TimeoutError).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// A process was misused: started twice, joined before start, closed while running (Python: ValueError/AssertionError).
class ProcessError : public Error {
 public:
  using Error::Error;
};

// A message broke the protocol: bad envelope, unknown kind, mismatched build.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// A value could not be encoded or decoded with msgpack.
class SerializationError : public Error {
 public:
  using Error::Error;
};

// Reserved for the queues (Python: queue.Full and queue.Empty).
class Full : public Error {
 public:
  using Error::Error;
};
class Empty : public Error {
 public:
  using Error::Error;
};

// An exception thrown in another process: its type name, message, and where it happened.
class RemoteError : public Error {
 public:
  RemoteError(std::string type, std::string message, pid_t pid, std::string host = {});

  const std::string& type() const noexcept { return type_; }
  const std::string& message() const noexcept { return message_; }
  pid_t pid() const noexcept { return pid_; }
  const std::string& host() const noexcept { return host_; }

 private:
  std::string type_;
  std::string message_;
  pid_t pid_;
  std::string host_;
};

}  // namespace mpx
