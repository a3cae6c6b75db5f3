#include <mpx/errors.hpp>

#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <string>

namespace mpx {

std::string demangle(const char* mangled) {
  int status = 0;
  char* readable = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = (status == 0 && readable) ? readable : mangled;
  std::free(readable);
  return out;
}

RemoteError::RemoteError(std::string type, std::string message, pid_t pid, std::string host)
    : Error(type + ": " + message + " (in process " + std::to_string(pid) + (host.empty() ? "" : " on " + host) +
            ")"),
      type_(std::move(type)),
      message_(std::move(message)),
      pid_(pid),
      host_(std::move(host)) {}

RemoteError::RemoteError(std::string type, std::string message, pid_t pid, std::uint64_t task_index)
    : Error(type + ": " + message + " (task " + std::to_string(task_index) + ", in worker " + std::to_string(pid) +
            ")"),
      type_(std::move(type)),
      message_(std::move(message)),
      pid_(pid),
      task_index_(task_index) {}

namespace {
std::string describe_exit(int exitcode) {
  if (exitcode >= 0) return "exited with code " + std::to_string(exitcode);
  const char* name = ::sigabbrev_np(-exitcode);
  return "was killed by signal " + std::to_string(-exitcode) + (name ? std::string(" (SIG") + name + ")" : "");
}
}  // namespace

WorkerLost::WorkerLost(std::uint64_t task_index, pid_t pid, int exitcode, unsigned attempts)
    : Error("mpx: task " + std::to_string(task_index) + " was lost: its worker (pid " + std::to_string(pid) + ") " +
            describe_exit(exitcode) + " while running it, " + std::to_string(attempts) +
            (attempts == 1 ? " attempt" : " attempts") + " in all"),
      task_index_(task_index),
      pid_(pid),
      exitcode_(exitcode),
      attempts_(attempts) {}

}  // namespace mpx
