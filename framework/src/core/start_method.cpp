#include <mpx/start_method.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

#include <sched.h>
#include <unistd.h>

namespace mpx {

std::string_view to_string(StartMethod method) noexcept {
  switch (method) {
    case StartMethod::fork: return "fork";
    case StartMethod::spawn: return "spawn";
    case StartMethod::forkserver: return "forkserver";
  }
  return "?";
}

StartMethod parse_start_method(std::string_view name) {
  if (name == "fork") return StartMethod::fork;
  if (name == "spawn") return StartMethod::spawn;
  if (name == "forkserver") return StartMethod::forkserver;
  throw std::invalid_argument("mpx: cannot find context for '" + std::string(name) +
                              "' (expected 'fork', 'spawn' or 'forkserver')");
}

int cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
}

}  // namespace mpx
