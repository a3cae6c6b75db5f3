#include <mpx/errors.hpp>

#include <string>

namespace mpx {

RemoteError::RemoteError(std::string type, std::string message, pid_t pid, std::string host)
    : Error(type + ": " + message + " (in process " + std::to_string(pid) + (host.empty() ? "" : " on " + host) +
            ")"),
      type_(std::move(type)),
      message_(std::move(message)),
      pid_(pid),
      host_(std::move(host)) {}

}  // namespace mpx
