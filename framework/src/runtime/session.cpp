#include "runtime/session.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <system_error>

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm/segment.hpp"

namespace mpx::runtime {

namespace fs = std::filesystem;

namespace {
// Room for "/mpx-<pid>-<16 hex>/forkserver" inside a sockaddr_un path.
constexpr std::size_t max_parent_length = sizeof(sockaddr_un{}.sun_path) - 48;

std::string random_hex() {
  std::random_device rd;
  std::uniform_int_distribution<std::uint64_t> dist;
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(dist(rd)));
  return buffer;
}
}  // namespace

std::string session_parent_directory() {
  const char* tmp = std::getenv("TMPDIR");
  if (tmp && *tmp && std::string(tmp).size() <= max_parent_length) {
    std::error_code ec;
    if (fs::is_directory(tmp, ec) && ::access(tmp, W_OK | X_OK) == 0) return tmp;
  }
  return "/tmp";
}

int remove_dead_sessions(const std::string& parent) {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("mpx-")) continue;
    const auto dash = name.find('-', 4);
    if (dash == std::string::npos) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + 4, &end, 10);
    if (end != name.c_str() + dash || pid <= 0) continue;
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    // Its shared memory segments go with it: the ones named after it, and the user-named ones its manifest lists.
    shm::remove_session_segments(name.substr(4), entry.path().string());
    std::error_code rm;
    fs::remove_all(entry.path(), rm);
    if (!rm) ++removed;
  }
  return removed;
}

Session create_session() {
  const std::string parent = session_parent_directory();
  remove_dead_sessions(parent);
  shm::remove_dead_segments();  // also those of dead sessions whose directory was elsewhere ($TMPDIR differed)
  Session s;
  s.id = std::to_string(::getpid()) + "-" + random_hex();
  s.directory = parent + "/mpx-" + s.id;
  if (::mkdir(s.directory.c_str(), 0700) != 0) {
    throw std::system_error(errno, std::generic_category(), "mpx: cannot create session directory " + s.directory);
  }
  s.coordinator_endpoint = "ipc://" + s.directory + "/coordinator";
  s.forkserver_path = s.directory + "/forkserver";
  return s;
}

void remove_session(const Session& session) {
  if (session.directory.empty()) return;
  shm::remove_session_segments(session.id, session.directory);
  std::error_code ec;
  fs::remove_all(session.directory, ec);
}

}  // namespace mpx::runtime
