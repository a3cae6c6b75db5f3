#include "runtime/session.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <system_error>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
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

// The janitor: a grandchild of the root, in a session of its own (so neither Ctrl-C nor a signal to the root's process
// group reaches it), holding no descriptor of the root's but a pidfd of the root. When the root has died it removes
// the session's directory and segments and exits: a SIGKILLed root's files are gone within moments, not at the next
// start of an mpx program. Children cannot do it: they die with the root (PR_SET_PDEATHSIG), the forkserver too.
[[noreturn]] void janitor_main(const Session& session, pid_t root) {
  const int root_fd = static_cast<int>(::syscall(SYS_pidfd_open, root, 0));
  if (root_fd < 0 && errno != ESRCH) ::_exit(0);  // no pidfds: the next session removes the files, as before
  ::setsid();
  ::prctl(PR_SET_NAME, "mpx-janitor");
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGALRM}) ::signal(sig, SIG_IGN);
  // Only the pidfd is kept (above the standard streams, which become /dev/null): the root's pipes and sockets reach
  // EOF when the root and its children are gone, never later because of this process.
  const int watched = root_fd >= 0 ? ::fcntl(root_fd, F_DUPFD_CLOEXEC, 3) : -1;
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd < 3; ++fd) {
    if (null_fd >= 0) ::dup2(null_fd, fd);
  }
  if (watched > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(watched - 1), 0u);
  ::syscall(SYS_close_range, watched >= 3 ? static_cast<unsigned>(watched + 1) : 3u, ~0u, 0u);
  if (watched >= 0) {  // else the root is dead already
    pollfd p{watched, POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
  }
  remove_session(session);
  ::_exit(0);
}

// Forks the janitor through a middle process that exits at once: the janitor is no child of the root, which then has
// no stray child to reap or to wait for.
void start_janitor(const Session& session) {
  const pid_t root = ::getpid();
  const pid_t middle = ::fork();
  if (middle < 0) return;  // no janitor: the next session removes the files, as before
  if (middle == 0) {
    if (::fork() == 0) janitor_main(session, root);
    ::_exit(0);
  }
  while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
  }
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
  start_janitor(s);
  return s;
}

void remove_session(const Session& session) {
  if (session.directory.empty()) return;
  shm::remove_session_segments(session.id, session.directory);
  std::error_code ec;
  fs::remove_all(session.directory, ec);
}

}  // namespace mpx::runtime
