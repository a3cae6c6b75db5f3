// mpx::Process and the process-level API. The launching itself is the runtime's; this file keeps Python's semantics:
// names, daemon inheritance, exit codes, joining children at exit.
#include <mpx/process.hpp>
#include <mpx/handle.hpp>
#include <mpx/nodes.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/channel.hpp"
#include "runtime/launcher.hpp"
#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "services/services.hpp"
#include "wire/interrupted.hpp"
#include "api/actor.hpp"
#include "api/pool/pool_core.hpp"
#include "runtime/node_agent.hpp"
#include "runtime/remote_process.hpp"
#include "runtime/slurm.hpp"
#include "wire/actor_id.hpp"
#include "api/metrics_server.hpp"

namespace mpx {

namespace detail {

struct ProcessState {
  enum class Role { child, current, parent };

  std::mutex mutex;
  Role role = Role::child;
  std::string name;
  std::optional<bool> daemon;
  std::optional<StartMethod> method;
  StartMethod used_method = StartMethod::forkserver;
  std::uint32_t node = 0;      // the node it runs (or is to run) on
  std::uint64_t actor = 0;     // its actor id once started on another node (wire/actor_id.hpp); 0 for a local one

  BoundCall call;
  std::function<void()> closure;
  bool subclass = false;
  Trampoline rebuild = nullptr;
  std::string (*encode_self)(const Process&) = nullptr;

  bool started = false;
  bool closed = false;
  pid_t owner = 0;  // the process that started it: only it may join
  pid_t pid = 0;
  int pidfd = -1;
  int status_fd = -1;
  bool forkserver_lost = false;  // the forkserver died before reporting how this child ended
  std::optional<int> exitcode;
  bool error_checked = false;
  std::optional<RemoteError> error;

  void close_fds() {
    if (owner != runtime::self_pid()) return;  // a forked copy does not own its parent's descriptors
    if (pidfd >= 0) ::close(pidfd);
    if (status_fd >= 0) ::close(status_fd);
    pidfd = status_fd = -1;
  }
  ~ProcessState() { close_fds(); }
};

}  // namespace detail

namespace {

using detail::ProcessState;

std::atomic<int> process_counter{0};

// How long the tasks of a Slurm job wait for each other: task 0 to listen, and every node to join it.
constexpr auto slurm_wait = std::chrono::seconds(120);

using runtime::forkserver_lost_exitcode;

struct Children {
  std::mutex mutex;
  pid_t owner = 0;
  std::vector<std::shared_ptr<ProcessState>> list;

  // A forked child inherits its parent's list, which is not its own.
  void reset_if_forked() {
    if (owner != runtime::self_pid()) {
      owner = runtime::self_pid();
      // The inherited states refer to the parent's children; release them without touching their descriptors.
      for (auto& s : list) new std::shared_ptr<ProcessState>(std::move(s));
      list.clear();
    }
  }
};
// Leaked on purpose: the exit hook that joins children runs after static destructors may have run.
Children& children() {
  static auto* instance = new Children;
  return *instance;
}

void add_child(const std::shared_ptr<ProcessState>& s) {
  auto& c = children();
  std::lock_guard lock(c.mutex);
  c.reset_if_forked();
  c.list.push_back(s);
}

void remove_child(const ProcessState* s) {
  auto& c = children();
  std::lock_guard lock(c.mutex);
  c.reset_if_forked();
  std::erase_if(c.list, [s](const auto& p) { return p.get() == s; });
}

std::vector<std::shared_ptr<ProcessState>> child_states() {
  auto& c = children();
  std::lock_guard lock(c.mutex);
  c.reset_if_forked();
  return c.list;
}

std::shared_ptr<ProcessState> current_state() {
  static pid_t owner = 0;
  static auto& state = *new std::shared_ptr<ProcessState>;  // leaked: used by exit hooks
  static auto& m = *new std::mutex;
  std::lock_guard lock(m);
  if (owner != runtime::self_pid() || !state) {
    if (state) new std::shared_ptr<ProcessState>(std::move(state));  // a forked copy: abandon, never destroy
    owner = runtime::self_pid();
    const auto& self = runtime::state().self;
    state = std::make_shared<ProcessState>();
    state->role = ProcessState::Role::current;
    state->name = self.name;
    state->daemon = self.daemon;
    state->method = self.method;
    state->started = true;
    state->owner = 0;
    state->pid = runtime::self_pid();
  }
  return state;
}

// Reaps a child whose sentinel is ready. Caller holds the state's mutex.
void reap(ProcessState& s) {
  if (s.exitcode) return;
  if (s.actor != 0) {
    s.exitcode = runtime::read_remote_exit(s.status_fd);  // a process of another node: its sentinel is a pipe
  } else if (s.status_fd >= 0) {
    auto code = runtime::read_forkserver_status(s.status_fd);
    if (!code) {
      // No status: the forkserver was killed. Its children survive it (as Python's do, bpo-31308), so from now on
      // the child's pidfd says when it ends; this sentinel is ready again at once if there is none.
      ::close(s.status_fd);
      s.status_fd = -1;
      s.forkserver_lost = true;
      if (s.pidfd >= 0) return;
    }
    s.exitcode = code.value_or(forkserver_lost_exitcode);
  } else if (s.forkserver_lost) {
    s.exitcode = forkserver_lost_exitcode;  // not this process's child: its wait status went to whoever adopted it
  } else {
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s.pidfd), &info, WEXITED) != 0) {
      throw std::system_error(errno, std::generic_category(), "mpx: waitid on process " + std::to_string(s.pid));
    }
    s.exitcode = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  }
  s.close_fds();
}

int sentinel_of(const ProcessState& s) { return s.status_fd >= 0 ? s.status_fd : s.pidfd; }

// Waits until the process ends or the timeout passes; timeout_ms < 0 waits forever. Returns true if it ended.
bool wait_for_end(ProcessState& s, long timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0L));
  while (!s.exitcode) {
    const int fd = sentinel_of(s);
    if (fd < 0) return false;
    long left = timeout_ms;
    if (timeout_ms > 0) {
      const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      left = std::max(0L, static_cast<long>(remaining.count()));
    }
    pollfd p{fd, POLLIN, 0};
    if (wire::poll(&p, 1, left, "mpx: Process.join: poll") == 0) return false;
    if (s.role != ProcessState::Role::child) return true;
    reap(s);  // leaves exitcode unset if the forkserver died: then the pidfd is waited on
  }
  return true;
}

void require_started(const ProcessState& s, const char* what) {
  if (!s.started) throw ProcessError(std::string("mpx: cannot ") + what + " a process that has not been started");
}

void check_open(const ProcessState& s) {
  if (s.closed) throw ProcessError("mpx: process object is closed");
}

void finalize_children_at_exit() {
  // Python's rule: terminate the daemonic children, then join every child.
  for (auto& s : child_states()) {
    Process p(s);
    if (p.daemon() && p.is_alive()) p.terminate();
  }
  for (auto& s : child_states()) {
    Process p(s);
    p.join();
  }
}

// Slurm's task 0: the coordinator listens where the other tasks can reach it, and main starts once they all joined.
std::optional<runtime::SlurmJob> slurm_session;
void remove_slurm_files_at_exit() {
  if (slurm_session && runtime::self_pid() == runtime::state().root_pid) runtime::remove_slurm_files(*slurm_session);
}
void start_slurm_session(const runtime::SlurmJob& job) {
  runtime::prepare_slurm_coordinator(job);
  slurm_session = job;
  std::atexit(&remove_slurm_files_at_exit);
  runtime::ensure_coordinator();
  runtime::publish_slurm_endpoint(job, runtime::state().session.coordinator_endpoint);
  (void)mpx::wait_for_nodes(static_cast<std::size_t>(job.tasks - 1), slurm_wait);
}

void exit_hook() {
  // Before the coordinator stops: a scrape in progress still gets its answer.
  detail::stop_metrics_server();
  runtime::shutdown_root();
}

}  // namespace

// ---- init and start methods ----

void init(int /*argc*/, char** argv) {
  auto& st = runtime::state();
  if (st.initialized && st.self.pid == runtime::self_pid()) return;
  runtime::set_finalize_children(&finalize_children_at_exit);
  runtime::set_service_installer(&services::install_all);
  // First, so that a spawned or forkserver child can spawn children of its own.
  st.argv.clear();
  for (char** a = argv; a && *a; ++a) st.argv.emplace_back(*a);
  if (st.executable.empty()) {
    char path[4096];
    const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
    st.executable = n > 0 ? std::string(path, static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
  }
  runtime::take_forkserver_role();
  if (auto spec = runtime::take_spawned_spec()) {
    runtime::die_with_parent(static_cast<pid_t>(spec->parent_pid));
    runtime::run_launch(*spec);
  }
  // Started by a topology launcher (on a node: by its agent): an actor of its session. A `task` actor runs its function
  // here and exits. Before node mode and Slurm: an exec actor on a node inherits its agent's environment.
  if (runtime::join_session_from_environment()) {
    detail::run_if_task_actor();
    return;
  }
  // Started as a node of another host's coordinator: serve as this host's agent instead of running main.
  if (auto node = runtime::node_mode(st.argv)) {
    ::unsetenv(runtime::node_variable);  // not inherited by what this node starts
    runtime::run_node_agent(*node);
  }
  // A task of a Slurm job other than task 0: a node of task 0's session.
  const auto slurm = runtime::slurm_job();
  if (slurm && slurm->task > 0) {
    try {
      runtime::run_node_agent(runtime::slurm_node_mode(*slurm, slurm_wait));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::exit(1);
    }
  }
  st.self = runtime::Identity{};
  st.self.pid = runtime::self_pid();
  st.self.is_root = true;
  st.root_pid = runtime::self_pid();
  st.session = runtime::create_session();
  st.zygote_pid = runtime::start_zygote(st.session);
  st.initialized = true;
  static bool registered = false;
  if (!registered) {
    registered = true;
    std::atexit(&exit_hook);
  }
  detail::start_metrics_from_environment();
  if (slurm) start_slurm_session(*slurm);
}

void set_start_method(StartMethod method, bool force) {
  auto& st = runtime::state();
  if (st.method && !force) throw ProcessError("mpx: context has already been set");
  st.method = method;
}

void set_start_method(std::string_view name, bool force) { set_start_method(parse_start_method(name), force); }

StartMethod get_start_method() { return runtime::state().method.value_or(runtime::state().default_method); }

std::vector<std::string> get_all_start_methods() { return {"forkserver", "spawn", "fork"}; }

void set_executable(std::string path) {
  if (::access(path.c_str(), X_OK) != 0) {
    throw std::invalid_argument("mpx: set_executable: '" + path + "' is not an executable file");
  }
  runtime::state().executable = std::move(path);
}

std::string get_executable() { return runtime::state().executable; }

Context get_context() { return Context(get_start_method()); }
Context get_context(std::string_view method) { return Context(parse_start_method(method)); }

// ---- Process ----

Process::Process(ProcessOptions options, BoundCall call) : state_(std::make_shared<ProcessState>()) {
  state_->name = options.name.empty() ? "Process-" + std::to_string(++process_counter) : std::move(options.name);
  state_->daemon = options.daemon;
  state_->method = options.method;
  state_->node = options.node.value_or(0);
  state_->call = std::move(call);
}

Process::Process(closure_t, std::function<void()> target, ProcessOptions options)
    : state_(std::make_shared<ProcessState>()) {
  state_->name = options.name.empty() ? "Process-" + std::to_string(++process_counter) : std::move(options.name);
  state_->daemon = options.daemon;
  state_->method = options.method;
  state_->node = options.node.value_or(0);
  state_->closure = std::move(target);
}

Process::Process(subclass_t, std::string_view class_name, Trampoline rebuild, std::string (*encode_self)(const Process&))
    : state_(std::make_shared<ProcessState>()) {
  state_->name = std::string(class_name) + "-" + std::to_string(++process_counter);
  state_->subclass = true;
  state_->rebuild = rebuild;
  state_->encode_self = encode_self;
}

Process::Process(std::shared_ptr<detail::ProcessState> state) : state_(std::move(state)) {}

void Process::run() {
  if (state_->closure) {
    state_->closure();
  } else if (state_->call.trampoline) {
    (void)state_->call.invoke();
  }
}

void Process::adopt_current_identity() {
  const auto& self = runtime::state().self;
  std::lock_guard lock(state_->mutex);
  state_->role = ProcessState::Role::current;
  state_->name = self.name;
  state_->daemon = self.daemon;
  state_->method = self.method;
  state_->pid = runtime::self_pid();
  state_->started = true;
  state_->owner = 0;
  state_->pidfd = state_->status_fd = -1;
}

void Process::start() {
  runtime::require_initialized();
  auto& s = *state_;
  std::unique_lock lock(s.mutex);
  check_open(s);
  if (s.role != ProcessState::Role::child) throw ProcessError("mpx: cannot start the current or parent process");
  if (s.started) throw ProcessError("mpx: cannot start a process twice");
  const auto& self = runtime::state().self;
  if (self.daemon) throw ProcessError("mpx: daemonic processes are not allowed to have children");
  s.used_method = s.method.value_or(get_start_method());
  const bool daemon = s.daemon.value_or(self.daemon);
  s.daemon = daemon;
  runtime::ensure_coordinator();

  runtime::Launched launched;
  if (s.node != 0 && s.closure) {
    throw ProcessError("mpx: process '" + s.name + "' has a target that captures state, which cannot run on node " +
                       std::to_string(s.node) + ": only a function's identity travels to another host");
  }
  if (s.node == 0 && s.used_method == StartMethod::fork) {
    runtime::Identity child;
    child.name = s.name;
    child.daemon = daemon;
    child.parent_pid = runtime::self_pid();
    child.parent_name = self.name;
    child.method = StartMethod::fork;
    lock.unlock();  // the child must not inherit a held mutex
    launched = runtime::launch_fork(child, [this] {
      adopt_current_identity();
      run();
    });
    lock.lock();
  } else {
    if (s.closure) {
      throw ProcessError("mpx: process '" + s.name + "' has a target that captures state, which only the fork start " +
                         "method can run; it is set to '" + std::string(to_string(s.used_method)) + "'");
    }
    const auto& st = runtime::state();
    runtime::LaunchSpec spec;
    spec.session_id = st.session.id;
    spec.session_directory = st.session.directory;
    spec.coordinator_endpoint = st.session.coordinator_endpoint;
    spec.forkserver_path = st.session.forkserver_path;
    spec.keys = runtime::keys_directory();
    spec.parent_pid = runtime::self_pid();
    spec.parent_name = self.name;
    spec.root_pid = st.root_pid;
    spec.name = s.name;
    spec.daemon = daemon;
    spec.method = static_cast<std::uint8_t>(s.used_method);
    if (s.subclass) {
      spec.function = identify(nullptr, s.rebuild);
      spec.payload = s.encode_self(*this);
    } else {
      spec.function = s.call.id();
      spec.payload = s.call.args;
    }
    if (s.node != 0) {
      // The node's agent fills in what only its host knows (its forkserver, its keys) and starts it there. Its end
      // is told by the coordinator: join, is_alive and sentinel() wait on that word as on a local child's.
      lock.unlock();
      const auto actor = runtime::launch_on_node(s.node, spec);
      lock.lock();
      s.actor = actor;
      launched.pid = static_cast<pid_t>(wire::pid_of(s.actor));
      launched.status_fd = runtime::watch_remote_end(s.actor);
    } else {
      launched = s.used_method == StartMethod::spawn ? runtime::launch_spawn(spec) : runtime::launch_forkserver(spec);
    }
  }
  s.started = true;
  s.owner = runtime::self_pid();
  s.pid = launched.pid;
  s.pidfd = launched.pidfd;
  s.status_fd = launched.status_fd;
  lock.unlock();
  add_child(state_);
}

namespace {
// join() waits as long as it takes; join(timeout) waits at most `timeout`, and not at all when it is zero or negative.
bool join_state(ProcessState& s, long timeout_ms) {
  std::lock_guard lock(s.mutex);
  check_open(s);
  if (s.role == ProcessState::Role::current) throw ProcessError("mpx: cannot join current process");
  require_started(s, "join");
  if (s.role == ProcessState::Role::child && s.owner != runtime::self_pid()) {
    throw ProcessError("mpx: can only join a child process");
  }
  const bool ended = wait_for_end(s, timeout_ms);
  if (ended && s.role == ProcessState::Role::child) {
    remove_child(&s);
  }
  return ended;
}
}  // namespace

void Process::join() { (void)join_state(*state_, -1); }

bool Process::join(std::chrono::duration<double> timeout) {
  return join_state(*state_, wait_ms(true, timeout));  // the API's one rule: zero or negative does not wait
}

bool Process::is_alive() {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  check_open(s);
  if (s.role == ProcessState::Role::current) return true;
  if (!s.started || s.exitcode) return false;
  if (s.role == ProcessState::Role::child && s.owner != runtime::self_pid()) return false;
  return !wait_for_end(s, 0);
}

void Process::send_signal(int signal) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  check_open(s);
  require_started(s, "signal");
  if (s.exitcode) return;  // already reaped: its pid may belong to someone else now
  if (s.actor != 0) {
    runtime::signal_remote(s.actor, signal);
    return;
  }
  // pidfd_send_signal cannot hit a recycled pid.
  if (s.pidfd >= 0 && ::syscall(SYS_pidfd_send_signal, s.pidfd, signal, nullptr, 0) == 0) return;
  if (s.pidfd < 0 && s.pid > 0) ::kill(s.pid, signal);
}

void Process::terminate() { send_signal(SIGTERM); }
void Process::kill() { send_signal(SIGKILL); }
void Process::interrupt() { send_signal(SIGINT); }

void Process::close() {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  if (s.closed) return;
  if (s.started && !s.exitcode && s.role == ProcessState::Role::child && !wait_for_end(s, 0)) {
    throw ProcessError("mpx: cannot close a process while it is still running; call join() or terminate() first");
  }
  s.close_fds();
  s.closed = true;
}

std::optional<int> Process::exitcode() {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  if (!s.started || s.role != ProcessState::Role::child) return std::nullopt;
  if (!s.exitcode && s.owner == runtime::self_pid() && !s.closed) (void)wait_for_end(s, 0);
  return s.exitcode;
}

std::optional<RemoteError> Process::exception() {
  const auto code = exitcode();
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  // Only an uncaught exception ends a process with 1; a lost node's processes end with NodeLost.
  if (!code || (*code != 1 && *code != node_lost_exitcode)) return std::nullopt;
  if (!s.error_checked) {
    auto& channel = runtime::Channel::current();
    auto reply = channel.request(
        wire::make(wire::Kind::process_error_query, 0, 0,
                   std::make_tuple(static_cast<std::int64_t>(detail::actor_of(*this)))),
        std::chrono::milliseconds(5000));
    runtime::expect_ok(reply);
    auto [found, type, message, pid, host] =
        reply.body_as<std::tuple<bool, std::string, std::string, std::int64_t, std::string>>();
    if (found) s.error = RemoteError(type, message, static_cast<pid_t>(pid), host);
    s.error_checked = true;
  }
  return s.error;
}

pid_t Process::pid() const { return state_->pid; }

int Process::sentinel() const {
  std::lock_guard lock(state_->mutex);
  return sentinel_of(*state_);
}

std::uint64_t detail::actor_of(const Process& process) {
  const auto& s = *process.state();
  return s.actor != 0 ? s.actor : static_cast<std::uint64_t>(s.pid);
}

std::uint32_t Process::node() const {
  if (state_->role == ProcessState::Role::current) return runtime::state().session.node;
  return state_->node;
}

const std::string& Process::name() const { return state_->name; }

void Process::set_name(std::string name) {
  std::lock_guard lock(state_->mutex);
  state_->name = std::move(name);
  if (state_->role == ProcessState::Role::current) runtime::state().self.name = state_->name;
}

bool Process::daemon() const { return state_->daemon.value_or(runtime::state().self.daemon); }

void Process::set_daemon(bool daemon) {
  std::lock_guard lock(state_->mutex);
  if (state_->started) throw ProcessError("mpx: cannot set daemon status of an active process");
  state_->daemon = daemon;
}

StartMethod Process::start_method() const { return state_->method.value_or(get_start_method()); }

Process current_process() { return Process(current_state()); }

std::optional<Process> parent_process() {
  const auto& self = runtime::state().self;
  if (self.is_root || self.parent_pid <= 0) return std::nullopt;
  auto s = std::make_shared<ProcessState>();
  s->role = ProcessState::Role::parent;
  s->name = self.parent_name;
  s->pid = self.parent_pid;
  s->started = true;
  s->owner = runtime::self_pid();
  s->pidfd = runtime::pidfd_open(self.parent_pid);
  return Process(std::move(s));
}

std::vector<Process> active_children() {
  std::vector<Process> alive;
  for (auto& s : child_states()) {
    Process p(s);
    if (p.is_alive()) {
      alive.push_back(p);
    } else {
      remove_child(s.get());
    }
  }
  return alive;
}

}  // namespace mpx
