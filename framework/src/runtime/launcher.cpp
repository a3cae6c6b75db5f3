#include "runtime/launcher.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wire/interrupted.hpp"
#include "wire/stream_framing.hpp"

extern char** environ;

namespace mpx::runtime {

namespace {

constexpr const char* launch_fd_variable = "MPX_LAUNCH_FD";
constexpr std::uint32_t max_spec_bytes = 256u << 20;

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

bool write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// A length record (wire/stream_framing.hpp) on the forkserver's socket.
bool write_frame(int fd, const std::string& bytes) {
  char length[wire::record_length_bytes];
  wire::store_record_length(length, static_cast<std::uint32_t>(bytes.size()));
  return write_all(fd, length, sizeof length) && write_all(fd, bytes.data(), bytes.size());
}

std::optional<std::string> read_frame(int fd) {
  char length[wire::record_length_bytes];
  if (!read_all(fd, length, sizeof length)) return std::nullopt;
  const std::uint32_t size = wire::load_record_length(length);
  if (size > max_spec_bytes) return std::nullopt;
  std::string bytes(size, '\0');
  if (!read_all(fd, bytes.data(), size)) return std::nullopt;
  return bytes;
}

Session session_of(const LaunchSpec& spec) {
  Session s;
  s.id = spec.session_id;
  s.directory = spec.session_directory;
  s.coordinator_endpoint = spec.coordinator_endpoint;
  s.forkserver_path = spec.forkserver_path;
  s.keys = spec.keys;
  s.node = spec.node;
  return s;
}

// A forked child starts with default handlers, as an exec'd one does: the parent's handlers would otherwise run on a
// copy of the parent's state (test frameworks, for one, report and hang there). Ignored signals stay ignored.
void reset_signal_handlers() {
  // The standard signals: real-time signals' handlers, rare and application-specific, are kept.
  for (int sig = 1; sig < SIGRTMIN; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0) continue;
    if (current.sa_handler == SIG_IGN || current.sa_handler == SIG_DFL) continue;
    struct sigaction defaults {};
    defaults.sa_handler = SIG_DFL;
    sigemptyset(&defaults.sa_mask);
    ::sigaction(sig, &defaults, nullptr);
  }
}


constexpr const char* forkserver_variable = "MPX_FORKSERVER";  // "<listener fd>:<root pid>"

// Where a spawned program finds the one descriptor it is handed, right above stdin, stdout and stderr.
constexpr int handed_fd = 3;

// posix_spawn of the program (the executable, with this process's argv) handing it descriptor `fd` as descriptor
// handed_fd, named by "<variable>=<handed_fd><suffix>" in its environment, which is this one without the launchers' own
// variables.
int spawn_program(pid_t& pid, int fd, const char* variable, const std::string& suffix,
                  const posix_spawnattr_t* attributes) {
  const auto& st = state();
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string_view entry(*e);
    if (entry.starts_with(std::string(launch_fd_variable) + "=") ||
        entry.starts_with(std::string(forkserver_variable) + "=")) {
      continue;
    }
    env_strings.emplace_back(entry);
  }
  env_strings.push_back(std::string(variable) + "=" + std::to_string(handed_fd) + suffix);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = st.argv.empty() ? std::vector<std::string>{st.executable} : st.argv;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // As Python's spawn, the program gets only what it needs: stdio and `fd`, whatever else this process has open
  // without close-on-exec (a C++ descriptor is inheritable by default) is closed. dup2 clears close-on-exec in the
  // child only (also when fd already is handed_fd), so no other concurrent spawn inherits it.
  int rc = posix_spawn_file_actions_adddup2(&actions, fd, handed_fd);
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, handed_fd + 1);
  if (rc == 0) rc = ::posix_spawn(&pid, st.executable.c_str(), &actions, attributes, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc;
}

}  // namespace

void die_with_parent(pid_t expected_parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != expected_parent) ::_exit(1);
}

int pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::optional<int> reap_child(int pidfd) noexcept {
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) != 0) {
    if (errno != EINTR) return std::nullopt;
  }
  return info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
}

int exitcode_from_wait_status(int status) noexcept {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 1;
}

pid_t spawn_program(const std::string& path, const std::vector<std::string>& argv, const std::vector<std::string>& extra,
                    int keep_fd) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "MPX_SESSION=", 12) == 0 || std::strncmp(*e, "MPX_ACTOR=", 10) == 0 ||
        std::strncmp(*e, "MPX_READY_FD=", 13) == 0 || std::strncmp(*e, "MPX_LAUNCH_FD=", 14) == 0) {
      continue;
    }
    env.emplace_back(*e);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  std::vector<std::string> args = argv;
  std::vector<char*> argv_c, envp;
  for (auto& s : args) argv_c.push_back(s.data());
  argv_c.push_back(nullptr);
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (keep_fd >= 0) posix_spawn_file_actions_adddup2(&actions, keep_fd, keep_fd);  // clears close-on-exec there only
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, path.c_str(), &actions, &attr, argv_c.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "mpx: cannot start '" + path + "'");
  return pid;
}

Launched launch_fork(const Identity& child, const std::function<void()>& body) {
  const pid_t parent = ::getpid();
  // Buffered output would otherwise be written twice, once by each copy (Python flushes here too).
  std::cout.flush();
  std::fflush(nullptr);
  // Signals stay blocked across fork until the child has dropped the parent's handlers.
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t pid = ::fork();
  if (pid != 0) ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) fail("mpx: fork failed");
  if (pid == 0) {
    reset_signal_handlers();
    die_with_parent(parent);
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    Identity id = child;
    id.pid = ::getpid();
    become_child(id, state().session);
    run_child(body);
  }
  Launched l;
  l.pid = pid;
  l.pidfd = pidfd_open(pid);
  if (l.pidfd < 0) fail("mpx: pidfd_open failed");
  return l;
}

Launched launch_spawn(const LaunchSpec& spec) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail("mpx: socketpair failed");
  const auto& st = state();
  pid_t pid = 0;
  const int rc = spawn_program(pid, sv[1], launch_fd_variable, "", nullptr);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    errno = rc;
    fail("mpx: cannot spawn '" + st.executable + "'");
  }
  Launched l;
  l.pid = pid;
  l.pidfd = pidfd_open(pid);
  // If the child died before reading its spec, the write fails; its exit status tells the rest.
  (void)write_frame(sv[0], encode(spec));
  ::close(sv[0]);
  if (l.pidfd < 0) fail("mpx: pidfd_open failed");
  return l;
}

namespace {

// A connection to the zygote listening at `path`, or -1 (errno says why).
int connect_forkserver(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("mpx: socket failed");
  // The session directory's path length was checked when it was made, so the path fits.
  const auto addr = wire::unix_address(path);
  if (!addr || !wire::connect_unix(fd, *addr)) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

std::mutex zygote_mutex;  // one replacement at a time

bool owns_zygote() {
  const auto& st = state();
  return st.self.is_root && st.initialized && self_pid() == st.root_pid;
}

}  // namespace

Launched launch_forkserver(const LaunchSpec& spec) {
  for (int attempt = 0;; ++attempt) {
    int fd = connect_forkserver(spec.forkserver_path);
    // Nobody listens: the zygote died (a SIGKILL, the OOM killer). The root, which owns it, starts another; a child
    // cannot, since the zygote must outlive it.
    if (fd < 0 && (errno == ECONNREFUSED || errno == ENOENT) && owns_zygote()) {
      std::lock_guard lock(zygote_mutex);
      fd = connect_forkserver(spec.forkserver_path);  // another thread may have replaced it meanwhile
      if (fd < 0) {
        replace_zygote(state().session);
        fd = connect_forkserver(spec.forkserver_path);
      }
    }
    if (fd < 0) fail("mpx: cannot reach the forkserver at " + spec.forkserver_path);
    std::int32_t pid = 0;
    if (write_frame(fd, encode(spec)) && read_all(fd, &pid, sizeof pid) && pid > 0) {
      Launched l;
      l.pid = pid;
      l.pidfd = pidfd_open(pid);  // may fail if it already ended and was reaped; status_fd still tells how
      l.status_fd = fd;
      return l;
    }
    ::close(fd);
    // The zygote died while it served this request (a child it forked dies with it): once more, through its
    // replacement.
    if (attempt > 0 || !owns_zygote()) throw ProcessError("mpx: the forkserver did not start the process");
  }
}

std::optional<int> read_forkserver_status(int status_fd) {
  std::int32_t status = 0;
  if (!read_all(status_fd, &status, sizeof status)) return std::nullopt;
  return exitcode_from_wait_status(status);
}

namespace {

// The zygote: single-threaded, it forks a child for each LaunchSpec it is sent. It ignores SIGINT, so the Ctrl-C a
// terminal sends to the whole foreground process group leaves it serving (its children get the disposition back),
// and it ends with the root, which it watches through a pidfd (not PR_SET_PDEATHSIG: that follows the thread that
// started it, and a replacement zygote may be started by any thread of the root).
[[noreturn]] void zygote_main(int listener, pid_t root) {
  const int root_fd = pidfd_open(root);
  if (root_fd < 0 || ::getppid() != root) ::_exit(1);  // the root is already gone
  char program_name[17] = {0};
  ::prctl(PR_GET_NAME, program_name);
  ::prctl(PR_SET_NAME, "mpx-forkserver");
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction original_sigint {};
  ::sigaction(SIGINT, &ignore, &original_sigint);
  // Whoever started the zygote blocked SIGINT until here, so none could kill it before it was ignored (ignoring it
  // discards one pending). Its children start with it unblocked.
  sigset_t original;
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, &original);
  sigdelset(&original, SIGINT);
  sigset_t sigint;
  sigemptyset(&sigint);
  sigaddset(&sigint, SIGINT);
  ::sigprocmask(SIG_UNBLOCK, &sigint, nullptr);
  const int sfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) ::_exit(1);
  std::map<pid_t, int> children;  // pid -> the launcher's connection, where its wait status goes

  for (;;) {
    pollfd fds[3] = {{listener, POLLIN, 0}, {sfd, POLLIN, 0}, {root_fd, POLLIN, 0}};
    try {
      (void)wire::poll(fds, 3, -1, "mpx-forkserver: poll");
    } catch (const std::system_error&) {
      ::_exit(1);
    }
    if (fds[2].revents & POLLIN) ::_exit(0);  // the root ended: so does the session
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      while (::read(sfd, &info, sizeof info) > 0) {
      }
      int status = 0;
      pid_t pid;
      while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        auto it = children.find(pid);
        if (it == children.end()) continue;
        const std::int32_t s = status;
        (void)write_all(it->second, &s, sizeof s);
        ::close(it->second);
        children.erase(it);
      }
    }
    if (fds[0].revents & POLLIN) {
      const int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      timeval tv{5, 0};
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      auto bytes = read_frame(conn);
      std::optional<LaunchSpec> spec;
      if (bytes) {
        try {
          spec = decode<LaunchSpec>(*bytes);
        } catch (const Error&) {
        }
      }
      if (!spec) {
        ::close(conn);
        continue;
      }
      // Blocked across the fork: a SIGINT sent to the child before it has its disposition back stays pending (an
      // ignored signal that is blocked is kept) and is delivered once it has, instead of being lost.
      ::sigprocmask(SIG_BLOCK, &sigint, nullptr);
      const pid_t pid = ::fork();
      if (pid != 0) ::sigprocmask(SIG_UNBLOCK, &sigint, nullptr);
      if (pid == 0) {
        ::close(listener);
        ::close(sfd);
        ::close(root_fd);
        ::close(conn);
        for (auto& [p, fd] : children) ::close(fd);
        ::prctl(PR_SET_NAME, program_name);  // a worker shows as the program, not as the zygote
        // No PR_SET_PDEATHSIG here: a child outlives its zygote (a SIGKILLed forkserver, bpo-31308) and ends with the
        // process that asked for it instead, which it watches from become_child on (watch_logical_parent).
        ::sigaction(SIGINT, &original_sigint, nullptr);
        ::sigprocmask(SIG_SETMASK, &original, nullptr);
        run_launch(*spec);
      }
      const std::int32_t reported = pid > 0 ? pid : -1;
      (void)write_all(conn, &reported, sizeof reported);
      if (pid > 0) {
        children[pid] = conn;
      } else {
        ::close(conn);
      }
    }
  }
}

}  // namespace

namespace {

int listen_at(const std::string& path) {
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) fail("mpx: socket failed");
  const auto addr = wire::unix_address(path);
  if (!addr || !wire::listen_unix(listener, *addr, 128)) {
    const int saved = errno;
    ::close(listener);
    errno = saved;
    fail("mpx: cannot listen on " + path);
  }
  return listener;
}

}  // namespace

pid_t start_zygote(const Session& session) {
  const int listener = listen_at(session.forkserver_path);
  const pid_t root = ::getpid();
  sigset_t sigint, previous;
  sigemptyset(&sigint);
  sigaddset(&sigint, SIGINT);
  ::sigprocmask(SIG_BLOCK, &sigint, &previous);  // until the zygote ignores it
  const pid_t pid = ::fork();
  if (pid == 0) zygote_main(listener, root);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) fail("mpx: fork of the forkserver failed");
  ::close(listener);
  return pid;
}

void replace_zygote(const Session& session) {
  auto& st = state();
  if (st.zygote_pid > 0) {
    // It no longer listens, so it is dying if not dead: make sure, and reap it rather than leave a zombie.
    ::kill(st.zygote_pid, SIGKILL);
    while (::waitpid(st.zygote_pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    st.zygote_pid = 0;
  }
  // The root has threads by now, and only async-signal-safe calls are allowed in a child forked from it: the new
  // zygote is a fresh exec of the program, caught by mpx::init (take_forkserver_role) before any thread exists.
  ::unlink(session.forkserver_path.c_str());
  const int listener = listen_at(session.forkserver_path);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t sigint;  // only SIGINT, until the zygote ignores it: not the mask of whichever thread asked
  sigemptyset(&sigint);
  sigaddset(&sigint, SIGINT);
  posix_spawnattr_setsigmask(&attributes, &sigint);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int rc = spawn_program(pid, listener, forkserver_variable, ":" + std::to_string(self_pid()), &attributes);
  posix_spawnattr_destroy(&attributes);
  ::close(listener);
  if (rc != 0) {
    errno = rc;
    fail("mpx: cannot start a new forkserver ('" + st.executable + "')");
  }
  st.zygote_pid = pid;
}

void take_forkserver_role() {
  const char* value = std::getenv(forkserver_variable);
  if (!value) return;
  int listener = -1;
  long root = 0;
  const bool parsed = std::sscanf(value, "%d:%ld", &listener, &root) == 2;
  ::unsetenv(forkserver_variable);
  if (!parsed || listener < 0 || root <= 0) {
    std::fprintf(stderr, "mpx: malformed %s\n", forkserver_variable);
    ::_exit(1);
  }
  ::fcntl(listener, F_SETFD, FD_CLOEXEC);
  zygote_main(listener, static_cast<pid_t>(root));
}

std::optional<LaunchSpec> take_spawned_spec() {
  const char* value = std::getenv(launch_fd_variable);
  if (!value) return std::nullopt;
  const int fd = std::atoi(value);
  ::unsetenv(launch_fd_variable);
  auto bytes = read_frame(fd);
  ::close(fd);
  if (!bytes) {
    std::fprintf(stderr, "mpx: spawned worker could not read its launch spec\n");
    ::_exit(1);
  }
  try {
    return decode<LaunchSpec>(*bytes);
  } catch (const Error& e) {
    std::fprintf(stderr, "mpx: spawned worker got a malformed launch spec: %s\n", e.what());
    ::_exit(1);
  }
}

void run_launch(const LaunchSpec& spec) {
  Identity id;
  id.pid = ::getpid();
  id.name = spec.name;
  id.daemon = spec.daemon;
  id.parent_pid = static_cast<pid_t>(spec.parent_pid);
  id.parent_name = spec.parent_name;
  id.method = static_cast<StartMethod>(spec.method);
  id.is_root = false;
  state().root_pid = static_cast<pid_t>(spec.root_pid);
  become_child(id, session_of(spec));
  run_child([&spec] {
    auto [function, trampoline] = resolve(spec.function);
    std::string result;
    trampoline(function, spec.payload, result);
  });
}

}  // namespace mpx::runtime
