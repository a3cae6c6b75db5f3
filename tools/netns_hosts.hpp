// "Hosts" as Linux network namespaces on one private Ethernet segment: for tests of what mpx does when a network
// partitions, drops or delays packets, and for mpx-bench's node workloads (each agent on a host of its own). Needs root
// (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2 (`ip`, `tc`).
//
// Layout of one NetnsHosts(n), all names under prefix() = "mpxnh-<pid>-<k>-" (k counts instances in this process):
//
//   namespace <prefix>sw:  bridge br0, with ports h0 .. h<n-1>, and no IP address
//   namespace <prefix>h<i>: lo, and eth0 = the veth peer of h<i>, with address(i) = 10.A.B.(10+i)/24
//
// The bridge sits in a "switch" namespace of its own rather than in the root namespace: nothing is ever created in the
// root namespace, so
//  - the root's firewall never sees the frames: with br_netfilter loaded (bridge-nf-call-iptables is 1 on the
//    development VM), frames crossing a bridge go through the iptables FORWARD chain of the bridge's namespace, and a
//    host running Docker sets that chain's policy to DROP; a fresh namespace has empty tables;
//  - the root has no route to the segment: its default route sends 10.A.B.x to its own gateway (whose answer is no
//    host's: the development VM's uplink accepts every TCP connection, to any address);
//  - interface names need only be unique inside one namespace, so the 15-character limit never meets the prefix, and no
//    network manager of the root namespace adopts or renames the links;
//  - cleanup is `ip netns del` of n + 1 namespaces: a namespace's end takes its veth ends, and so each pair, with it.
//
// A namespace outlives `ip netns del` while a process is still in it (it is then only unlisted): the destructor kills
// what spawn() started first. Programs that those start themselves are the caller's to end.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3  // waitid on a pidfd (Linux 5.4); glibc 2.36's headers do not name it
#endif

extern char** environ;

namespace mpx_netns {

namespace netns_detail {

inline std::string join(const std::vector<std::string>& args) {
  std::string line;
  for (const auto& a : args) line += (line.empty() ? "" : " ") + a;
  return line;
}

struct Output {
  int status;        // the exit code; 128 + signal if killed; -1 if the program could not be started
  std::string text;  // its stdout and stderr together
};

// Runs a program found on the PATH with these arguments (no shell, so no quoting), waits for it, returns its output.
inline Output run(const std::vector<std::string>& args) {
  Output out{-1, {}};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {-1, std::string("pipe2: ") + std::strerror(errno)};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (spawned != 0) {
    ::close(fds[0]);
    out.text = "cannot run " + args[0] + ": " + std::strerror(spawned);
    return out;
  }
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n > 0) out.text.append(buffer, static_cast<size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  out.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return out;
}

// Runs it and throws, naming the command line and what it printed, unless it exits 0.
inline void must(const std::vector<std::string>& args) {
  const Output out = run(args);
  if (out.status != 0) {
    throw std::runtime_error("NetnsHosts: `" + join(args) + "` failed (exit " + std::to_string(out.status) +
                             "): " + out.text);
  }
}

// The names in /run/netns (what `ip netns list` lists) that start with `prefix`.
inline std::vector<std::string> namespaces_named(const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(prefix)) names.push_back(std::move(name));
  }
  return names;
}

}  // namespace netns_detail

class NetnsHosts {
 public:
  static constexpr const char* kPrefix = "mpxnh-";  // every name of this harness starts so; sweep_stale() reads it

  // Creates n hosts (1 to 240) on one segment; throws std::runtime_error naming what failed (not root, no `ip`, ...).
  explicit NetnsHosts(int n) : n_(n), netem_(n > 0 ? static_cast<size_t>(n) : 0) {
    if (n < 1 || n > 240) throw std::invalid_argument("NetnsHosts: between 1 and 240 hosts, not " + std::to_string(n));
    if (::geteuid() != 0) {
      throw std::runtime_error("NetnsHosts: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces");
    }
    static std::atomic<int> instances{0};
    const long pid = ::getpid();
    const int k = instances++;
    prefix_ = kPrefix + std::to_string(pid) + "-" + std::to_string(k) + "-";
    // The segment is private to this instance's namespaces, so its subnet could be any; one per (pid, k) out of
    // 10.200.0.0 - 10.249.249.0 just makes an address in a log or a capture tell which instance it came from.
    const long id = (pid * 16 + k) % (50 * 250);
    subnet_ = "10." + std::to_string(200 + id / 250) + "." + std::to_string(id % 250) + ".";
    sweep_stale();
    // Names of this prefix that already exist were left by an earlier process that had this pid and crashed.
    for (const auto& name : netns_detail::namespaces_named(prefix_)) netns_detail::run({"ip", "netns", "del", name});
    try {
      using netns_detail::must;
      must({"ip", "netns", "add", switch_name()});
      must({"ip", "-n", switch_name(), "link", "add", "br0", "type", "bridge"});
      must({"ip", "-n", switch_name(), "link", "set", "br0", "up"});
      for (int i = 0; i < n; ++i) {
        must({"ip", "netns", "add", name(i)});
        // Created in the switch namespace with its peer born in the host's: neither end ever exists in the root.
        must({"ip", "-n", switch_name(), "link", "add", port(i), "type", "veth", "peer", "name", "eth0", "netns",
              name(i)});
        must({"ip", "-n", switch_name(), "link", "set", port(i), "master", "br0", "up"});
        must({"ip", "-n", name(i), "link", "set", "lo", "up"});
        must({"ip", "-n", name(i), "addr", "add", address(i) + "/24", "dev", "eth0"});
        must({"ip", "-n", name(i), "link", "set", "eth0", "up"});
      }
    } catch (...) {
      teardown();
      throw;
    }
  }

  // Kills what spawn() started and is not yet reaped, deletes the namespaces; never throws.
  ~NetnsHosts() { teardown(); }
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  int size() const { return n_; }
  const std::string& prefix() const { return prefix_; }
  // Host i's namespace, as `ip netns` names it.
  std::string name(int i) const { return prefix_ + "h" + std::to_string(check(i)); }
  // Host i's address on the segment, dotted: 10.A.B.(10+i).
  std::string address(int i) const { return subnet_ + std::to_string(10 + check(i)); }
  // {"ip", "netns", "exec", name(i)}: put before a command line to run it in host i (the pid is then ip's, at first).
  std::vector<std::string> exec_prefix(int i) const { return {"ip", "netns", "exec", name(i)}; }

  // Starts argv (argv[0] looked up on the PATH) in host i, with this process's environment plus extra_env's
  // "NAME=value" (replacing a variable of that name). Returns the program's own pid: the child enters the namespace
  // with setns before exec, so killing the pid kills the program. The child gets SIGKILL when the thread that spawned
  // it ends (PR_SET_PDEATHSIG), so a test that crashes leaves no program in a namespace. Reap it with wait(), not
  // waitpid: the destructor signals the pids it has not reaped.
  pid_t spawn(int i, std::vector<std::string> argv, std::vector<std::string> extra_env = {}) {
    if (argv.empty()) throw std::invalid_argument("NetnsHosts::spawn: empty argv");
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string variable = *e;
      const std::string key = variable.substr(0, variable.find('=') + 1);
      bool replaced = false;
      for (const auto& extra : extra_env) replaced = replaced || extra.starts_with(key);
      if (!replaced) env.push_back(variable);
    }
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    // Everything the child needs is made here: between fork and exec it may only make async-signal-safe calls.
    std::vector<char*> args_c, env_c;
    for (auto& a : argv) args_c.push_back(a.data());
    args_c.push_back(nullptr);
    for (auto& v : env) env_c.push_back(v.data());
    env_c.push_back(nullptr);
    const int ns = open_namespace(i);
    const pid_t parent = ::getpid();
    // Signals stay blocked across fork until the child has dropped this process's handlers.
    sigset_t all, previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the parent ended before the line above
      // The test process's handlers and mask (mpx::init installs some handlers) are not the program's.
      for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (::setns(ns, CLONE_NEWNET) != 0) ::_exit(126);
      ::execvpe(args_c[0], args_c.data(), env_c.data());
      ::_exit(127);
    }
    const int fork_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    ::close(ns);
    if (pid < 0) throw std::runtime_error(std::string("NetnsHosts::spawn: fork: ") + std::strerror(fork_errno));
    // A pidfd names this process and no later one with a recycled pid.
    children_.push_back({pid, static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))});
    return pid;
  }

  // Waits up to `limit` for a process spawn() started to end, and reaps it. Returns its exit code (128 + signal if
  // killed), or nothing if it is still running then (or is not one of this harness's unreaped processes).
  std::optional<int> wait(pid_t pid, std::chrono::milliseconds limit) {
    for (auto it = children_.begin(); it != children_.end(); ++it) {
      if (it->pid != pid) continue;
      if (!ended_within(*it, limit)) return std::nullopt;
      const int code = reap(*it);
      children_.erase(it);
      return code;
    }
    return std::nullopt;
  }

  // A socket (AF_INET, `type`, close-on-exec) in host i's namespace, for this process to use: a socket stays in the
  // namespace it was made in, so a thread enters the namespace, makes it and ends. The caller closes it.
  int open_socket(int i, int type = SOCK_STREAM) const {
    const int ns = open_namespace(i);
    int fd = -1;
    int error = 0;
    std::thread([&] {
      if (::setns(ns, CLONE_NEWNET) == 0) fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
      error = errno;
    }).join();
    ::close(ns);
    if (fd < 0) throw std::runtime_error("NetnsHosts::open_socket(" + name(i) + "): " + std::strerror(error));
    return fd;
  }

  // Unplugs host i's cable (its switch port goes down, so its eth0 loses carrier); link_up plugs it back.
  void link_down(int i) { netns_detail::must({"ip", "-n", switch_name(), "link", "set", port(check(i)), "down"}); }
  void link_up(int i) { netns_detail::must({"ip", "-n", switch_name(), "link", "set", port(check(i)), "up"}); }

  // netem on host i's eth0: what host i SENDS is dropped with this probability or held this long (one direction; a
  // round trip with host i takes `ms` longer). loss and delay add up; clear_netem removes both. Throws if the kernel
  // has no sch_netem ("Specified qdisc kind is unknown").
  void loss(int i, double percent) {
    netem_.at(static_cast<size_t>(check(i))).loss = percent;
    apply_netem(i);
  }
  void delay(int i, int ms) {
    netem_.at(static_cast<size_t>(check(i))).delay_ms = ms;
    apply_netem(i);
  }
  void clear_netem(int i) {
    netem_.at(static_cast<size_t>(check(i))) = {};
    apply_netem(i);
  }

  // Deletes the namespaces of this harness's naming whose process (the pid in the name) no longer exists: what a
  // crashed or killed test run left. The constructor calls it. Never throws.
  static void sweep_stale() noexcept {
    try {
      for (const auto& name : netns_detail::namespaces_named(kPrefix)) {
        const char* digits = name.c_str() + std::strlen(kPrefix);
        char* end = nullptr;
        const long pid = std::strtol(digits, &end, 10);
        if (end == digits || *end != '-' || pid <= 0) continue;
        if (std::filesystem::exists("/proc/" + std::to_string(pid))) continue;
        netns_detail::run({"ip", "netns", "del", name});  // two sweeping at once: the second's del fails, harmlessly
      }
    } catch (...) {
    }
  }

 private:
  struct Child {
    pid_t pid;
    int pidfd;  // -1 if pidfd_open failed (a kernel before 5.3): then the pid itself
  };
  struct Netem {
    double loss = 0;
    int delay_ms = 0;
    bool installed = false;
  };

  int check(int i) const {
    if (i < 0 || i >= n_) throw std::out_of_range("NetnsHosts: no host " + std::to_string(i));
    return i;
  }
  std::string switch_name() const { return prefix_ + "sw"; }
  static std::string port(int i) { return "h" + std::to_string(i); }  // host i's veth end in the switch namespace

  int open_namespace(int i) const {
    const std::string path = "/run/netns/" + name(i);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("NetnsHosts: open " + path + ": " + std::strerror(errno));
    return fd;
  }

  void apply_netem(int i) {
    Netem& state = netem_[static_cast<size_t>(i)];
    if (state.loss <= 0 && state.delay_ms <= 0) {
      if (state.installed) netns_detail::must({"tc", "-n", name(i), "qdisc", "del", "dev", "eth0", "root"});
      state.installed = false;
      return;
    }
    std::vector<std::string> command{"tc", "-n", name(i), "qdisc", "replace", "dev", "eth0", "root", "netem"};
    if (state.delay_ms > 0) command.insert(command.end(), {"delay", std::to_string(state.delay_ms) + "ms"});
    if (state.loss > 0) {
      std::ostringstream percent;
      percent << state.loss << "%";
      command.insert(command.end(), {"loss", percent.str()});
    }
    netns_detail::must(command);
    state.installed = true;
  }

  static bool ended_within(const Child& child, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (child.pidfd >= 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                std::chrono::steady_clock::now());
        pollfd p{child.pidfd, POLLIN, 0};  // a pidfd polls readable once its process has ended
        if (::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count()))) == 1) return true;
      } else {
        siginfo_t info{};
        if (::waitid(P_PID, static_cast<id_t>(child.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid != 0) {
          return true;
        }
        ::poll(nullptr, 0, 5);
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
    }
  }

  static int reap(Child& child) {
    siginfo_t info{};
    int rc;
    do {
      rc = child.pidfd >= 0 ? ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child.pidfd), &info, WEXITED)
                            : ::waitid(P_PID, static_cast<id_t>(child.pid), &info, WEXITED);
    } while (rc < 0 && errno == EINTR);
    if (child.pidfd >= 0) ::close(child.pidfd);
    child.pidfd = -1;
    if (rc < 0) return -1;
    return info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  }

  void teardown() noexcept {
    try {
      for (auto& child : children_) {
        if (child.pidfd >= 0) ::syscall(SYS_pidfd_send_signal, child.pidfd, SIGKILL, nullptr, 0);
        else ::kill(child.pid, SIGKILL);
        reap(child);
      }
      children_.clear();
      // The hosts first, then the switch; each `del` also ends the veth pairs with an end in that namespace.
      for (int i = 0; i < n_; ++i) netns_detail::run({"ip", "netns", "del", name(i)});
      netns_detail::run({"ip", "netns", "del", switch_name()});
    } catch (...) {
    }
  }

  int n_;
  std::string prefix_;
  std::string subnet_;  // "10.A.B."
  std::vector<Netem> netem_;
  std::vector<Child> children_;
};

}  // namespace mpx_netns
