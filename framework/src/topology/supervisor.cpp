#include "topology/supervisor.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <sstream>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/coordinator.hpp"
#include "runtime/launcher.hpp"
#include "runtime/remote_process.hpp"
#include "wire/actor_id.hpp"
#include "runtime/runtime.hpp"

extern char** environ;

namespace mpx::topology {

namespace {

using Clock = std::chrono::steady_clock;

void signal_pidfd(int pidfd, int sig) { (void)::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0); }

// Waits until `fd` is readable or `timeout_ms` passes (< 0: forever). Returns true if readable.
bool wait_readable(int fd, long timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    long left = -1;
    if (timeout_ms >= 0) {
      left = std::max(0L, static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                deadline - Clock::now()).count()));
    }
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

std::string seconds_text(double s) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g s", s);
  return buffer;
}

std::string exit_text(int code) {
  if (code < 0) {
    const char* name = ::sigabbrev_np(-code);
    return "killed by signal " + std::to_string(-code) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "exit code " + std::to_string(code);
}

// Tells the coordinator of this process (if it runs one) a supervised actor's state, for metrics (mpx_actor_state).
void publish(pid_t pid, const std::string& name, std::string_view state) {
  if (auto* coordinator = runtime::coordinator_if_running()) coordinator->supervised_state(pid, name, state);
}

}  // namespace

Supervisor::Supervisor(Config config, std::map<std::string, ActorObjectEntry> objects)
    : config_(std::move(config)), objects_(std::move(objects)) {
  for (std::size_t i : config_.order) {
    const auto& a = config_.actors[i];
    for (int r = 0; r < a.replicas; ++r) {
      Child c;
      c.actor = i;
      c.replica = r;
      c.name = a.replicas == 1 ? a.name : a.name + "[" + std::to_string(r) + "]";
      children_.push_back(std::move(c));
    }
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "mpx: eventfd");
}

Supervisor::~Supervisor() {
  if (thread_.joinable()) {
    (void)stop(-1);
    thread_.join();
  }
  ::close(wake_fd_);
}

void Supervisor::event(const std::string& line, bool noteworthy) {
  if (noteworthy) {
    std::lock_guard lock(mutex_);
    report_ += line + "\n";
  }
  if (sink_) sink_(line);
}

std::string Supervisor::state_name(State s) {
  switch (s) {
    case State::idle: return "idle";
    case State::pending: return "pending";
    case State::starting: return "starting";
    case State::running: return "running";
    case State::stopping: return "stopping";
    case State::exited: return "exited";
    case State::failed: return "failed";
    case State::stopped: return "stopped";
  }
  return "?";
}

void Supervisor::start() {
  {
    std::lock_guard lock(mutex_);
    if (thread_.joinable()) throw TopologyError("mpx: a topology can be started once");
    topology_state_ = "starting";
    for (auto& c : children_) c.state = State::pending;
  }
  // Actors are started from this thread, which lives as long as they do: they die with it (PR_SET_PDEATHSIG follows
  // the thread that started them), which is what makes a crashed launcher leave no orphans.
  thread_ = std::thread([this] { run(); });
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return started_ || result_.has_value(); });
  // A topology that escalated or finished while starting did start; only a failed start throws.
  if (start_failed_) {
    lock.unlock();
    thread_.join();
    throw TopologyError("mpx: the topology did not start:\n" + report());
  }
}

TopologyExit Supervisor::stop(double timeout_s) {
  {
    std::lock_guard lock(mutex_);
    if (!result_) {
      stop_requested_ = true;
      stop_timeout_s_ = timeout_s;
    }
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  return *wait(-1);
}

std::optional<TopologyExit> Supervisor::wait(double timeout_s) {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable() && !result_) return TopologyExit::ok;  // never started
  if (timeout_s < 0) {
    changed_.wait(lock, [this] { return result_.has_value(); });
  } else if (!changed_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return result_.has_value(); })) {
    return std::nullopt;
  }
  return result_;
}

std::vector<ActorStatus> Supervisor::actors() const {
  std::lock_guard lock(mutex_);
  std::vector<ActorStatus> out;
  const auto now = Clock::now();
  for (const auto& c : children_) {
    ActorStatus s;
    s.name = c.name;
    s.actor = config_.actors[c.actor].name;
    s.replica = c.replica;
    const bool live = c.state == State::starting || c.state == State::running || c.state == State::stopping;
    s.pid = c.pid;
    s.state = state_name(c.state);
    s.restarts = c.restarts;
    if (c.pid != 0) s.uptime_s = std::chrono::duration<double>((live ? now : c.ended_at) - c.started_at).count();
    s.last_exitcode = c.last_exitcode;
    out.push_back(std::move(s));
  }
  return out;
}

std::string Supervisor::state() const {
  std::lock_guard lock(mutex_);
  return topology_state_;
}

std::string Supervisor::report() const {
  std::lock_guard lock(mutex_);
  return report_;
}

bool Supervisor::dependencies_ready(const Child& c) const {
  for (const auto& dep : config_.actors[c.actor].after) {
    for (const auto& other : children_) {
      if (config_.actors[other.actor].name == dep && !(other.ready && other.state == State::running)) {
        // A dependency that finished normally (a transient or temporary actor that is done) no longer holds anyone.
        if (other.state == State::exited) continue;
        return false;
      }
    }
  }
  return true;
}

namespace {
Trampoline task_runner = nullptr;
}

void Supervisor::set_task_runner(Trampoline runner) { task_runner = runner; }

std::string Supervisor::payload_of(const Child& c) const {
  const auto& a = config_.actors[c.actor];
  std::vector<ActorObjectEntry> entries;
  for (const auto& name : a.objects) entries.push_back(objects_.at(name));
  return encode(std::make_tuple(a.name, c.replica, a.replicas, a.task, a.args, entries));
}

std::uint32_t Supervisor::spread_node() {
  try {
    const auto ids = runtime::alive_nodes();
    if (!ids.empty()) return ids[spread_next_++ % ids.size()];
  } catch (const std::exception& e) {
    event(std::string("cannot list the nodes: ") + e.what() + "; starting on this host", true);
  }
  return 0;
}

void Supervisor::signal(Child& c, int sig) {
  if (c.remote == 0) return signal_pidfd(c.pidfd, sig);
  try {
    runtime::signal_remote(c.remote, sig);
  } catch (const std::exception&) {
    // Its node is lost or the session is ending: its end pipe says so.
  }
}

void Supervisor::launch_remote(Child& c, std::uint32_t node) {
  const auto& st = runtime::state();
  runtime::LaunchSpec spec;
  spec.session_id = st.session.id;
  spec.coordinator_endpoint = st.session.coordinator_endpoint;
  spec.parent_pid = runtime::self_pid();
  spec.parent_name = st.self.name;
  spec.root_pid = st.root_pid;
  spec.name = c.name;
  spec.method = static_cast<std::uint8_t>(StartMethod::forkserver);
  const auto& a = config_.actors[c.actor];
  std::uint64_t actor = 0;
  try {
    spec.payload = payload_of(c);
    std::chrono::milliseconds wait{0};
    if (a.task.empty()) {
      // Its agent answers once the program has joined the session (or could not within ready_timeout): started
      // ready, as a task actor is.
      spec.exec = a.exec;
      spec.ready_timeout_ms = static_cast<std::int64_t>(a.ready_timeout_s * 1000);
      wait = std::chrono::milliseconds(spec.ready_timeout_ms);
    } else {
      if (task_runner == nullptr) throw TopologyError("mpx: no runner for task actors on other nodes");
      spec.function = identify(nullptr, task_runner);
    }
    actor = runtime::launch_on_node(node, spec, wait);
  } catch (const std::exception& e) {
    {
      std::lock_guard lock(mutex_);
      c.state = State::failed;
    }
    event("actor " + c.name + ": cannot start on node " + std::to_string(node) + ": " + e.what(), true);
    return;
  }
  const int end = runtime::watch_remote_end(actor);
  {
    std::lock_guard lock(mutex_);
    c.pid = static_cast<pid_t>(wire::pid_of(actor));
    c.remote = actor;
    c.pidfd = end;
    c.ready_fd = -1;
    // A task actor was started through the same forkserver path every task actor's mpx::init ends in, and an exec
    // actor's agent answered once it had joined: it is ready.
    c.ready = true;
    c.ready_timed_out = false;
    c.state = State::running;
    c.started_at = Clock::now();
    c.ready_deadline = c.started_at;
  }
  publish(c.pid, c.name, "running");
  event("actor " + c.name + " started on node " + std::to_string(node) + " (pid " + std::to_string(c.pid) + ")" +
            (c.restarts > 0 ? ", restart " + std::to_string(c.restarts) : std::string()),
        false);
}

void Supervisor::launch(Child& c) {
  const auto& a = config_.actors[c.actor];
  if (a.node || a.spread) {
    const std::uint32_t node = a.node ? *a.node : spread_node();
    if (node != 0) return launch_remote(c, node);
  }
  c.remote = 0;
  const std::string payload = payload_of(c);

  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "mpx: pipe2");
  const auto& st = runtime::state();
  std::vector<std::string> args;
  std::string program;
  if (a.task.empty()) {
    args = a.exec;
    program = a.exec[0];
  } else {
    // A task actor is this program again: its mpx::init joins the session and runs the registered function.
    program = st.executable;
    args = st.argv.empty() ? std::vector<std::string>{program} : st.argv;
  }
  pid_t pid = 0;
  try {
    pid = runtime::spawn_program(program, args, runtime::join_environment(c.name, payload, ready[1]), ready[1]);
  } catch (const std::exception& e) {
    ::close(ready[1]);
    ::close(ready[0]);
    {
      std::lock_guard lock(mutex_);
      c.state = State::failed;
    }
    event("actor " + c.name + ": " + std::string(e.what()).substr(5), true);  // "cannot start 'PROGRAM': why"
    return;
  }
  ::close(ready[1]);
  const int pidfd = runtime::pidfd_open(pid);
  {
    std::lock_guard lock(mutex_);
    c.pid = pid;
    c.pidfd = pidfd;
    c.ready_fd = ready[0];
    c.ready = false;
    c.ready_timed_out = false;
    c.state = State::starting;
    c.started_at = Clock::now();
    c.ready_deadline = c.started_at + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(a.ready_timeout_s));
  }
  publish(pid, c.name, c.restarts > 0 ? "restarting" : "starting");
  event("actor " + c.name + " started (pid " + std::to_string(pid) + ")" +
            (c.restarts > 0 ? ", restart " + std::to_string(c.restarts) : std::string()),
        false);
}

void Supervisor::launch_pending() {
  for (auto& c : children_) {
    if (c.state == State::pending && dependencies_ready(c)) launch(c);
    if (c.state == State::failed && initial_start_) {
      std::lock_guard lock(mutex_);
      start_failed_ = true;
    }
  }
}

void Supervisor::on_ready(Child& c) {
  char byte = 0;
  const ssize_t n = ::read(c.ready_fd, &byte, 1);
  if (n < 0 && errno == EAGAIN) return;
  ::close(c.ready_fd);
  double after_s = 0;
  {
    std::lock_guard lock(mutex_);
    c.ready_fd = -1;
    // n == 0: it ended before it was ready; its pidfd tells the rest.
    if (n != 1) return;
    c.ready = true;
    if (c.state == State::starting) c.state = State::running;
    after_s = std::chrono::duration<double>(Clock::now() - c.started_at).count();
  }
  publish(c.pid, c.name, "running");
  char took[32];
  std::snprintf(took, sizeof took, "%.3f s", after_s);
  event("actor " + c.name + " (pid " + std::to_string(c.pid) + ") is ready, " + took + " after its start", false);
}

int Supervisor::reap(Child& c) {
  if (c.ready_fd >= 0) {
    pollfd p{c.ready_fd, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) on_ready(c);  // ready before it died: the byte was written first
  }
  int code = -SIGKILL;
  if (c.remote != 0) {
    code = runtime::read_remote_exit(c.pidfd);
  } else if (const auto reaped = runtime::reap_child(c.pidfd)) {
    code = *reaped;
  }
  std::lock_guard lock(mutex_);
  ::close(c.pidfd);
  if (c.ready_fd >= 0) ::close(c.ready_fd);
  c.pidfd = c.ready_fd = -1;
  c.last_exitcode = code;
  c.ended_at = Clock::now();
  publish(c.pid, c.name, code == 0 ? "exited" : "failed");
  return code;
}

void Supervisor::terminate(const std::vector<std::size_t>& which, double timeout_s) {
  const long timeout_ms = static_cast<long>(timeout_s * 1000.0);
  for (auto it = which.rbegin(); it != which.rend(); ++it) {
    auto& c = children_[*it];
    if (c.pidfd < 0) continue;
    {
      std::lock_guard lock(mutex_);
      c.state = State::stopping;
    }
    publish(c.pid, c.name, "stopping");
    signal(c, SIGTERM);
    if (!wait_readable(c.pidfd, timeout_ms)) {
      signal(c, SIGKILL);
      (void)wait_readable(c.pidfd, -1);
      {
        std::lock_guard lock(mutex_);
        killed_any_ = true;
      }
      event("actor " + c.name + " did not stop within " + seconds_text(timeout_s) + ": killed", true);
    }
    const int code = reap(c);
    {
      std::lock_guard lock(mutex_);
      c.state = State::stopped;
    }
    publish(c.pid, c.name, "exited");  // stopped: whatever its exit code, it ended as asked
    event("actor " + c.name + " (pid " + std::to_string(c.pid) + ") stopped (" + exit_text(code) + ")", false);
  }
}

void Supervisor::stop_all(double timeout_s) {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    topology_state_ = "stopping";
    for (auto& c : children_) {
      if (c.state == State::pending) c.state = State::stopped;
    }
  }
  std::vector<std::size_t> all(children_.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  terminate(all, timeout_s);
}

bool Supervisor::any_live() const {
  return std::any_of(children_.begin(), children_.end(), [](const Child& c) {
    return c.state == State::pending || c.state == State::starting || c.state == State::running ||
           c.state == State::stopping;
  });
}

void Supervisor::finish(TopologyExit status) {
  std::lock_guard lock(mutex_);
  topology_state_ = "stopped";
  result_ = status;
  changed_.notify_all();
}

void Supervisor::on_death(Child& c) {
  const bool was_ready = c.ready;
  const int code = reap(c);
  const auto& a = config_.actors[c.actor];
  const bool normal = code == 0;
  const std::string ended = "actor " + c.name + " (pid " + std::to_string(c.pid) + ") ended (" + exit_text(code) + ")";
  if (initial_start_ && !was_ready && !c.ready) {
    {
      std::lock_guard lock(mutex_);
      c.state = State::failed;
      start_failed_ = true;
    }
    // One killed for its readiness deadline was reported then.
    if (!c.ready_timed_out) event(ended + " before it was ready", true);
    return;
  }
  const bool restart = a.restart == Restart::permanent || (a.restart == Restart::transient && !normal);
  if (!restart) {
    {
      std::lock_guard lock(mutex_);
      c.state = normal ? State::exited : State::failed;
    }
    event(normal ? ended : ended + "; " + std::string(to_string(a.restart)) + ": not restarted", !normal);
    return;
  }
  // Intensity: more than max_restarts restarts within the window escalates.
  const auto now = Clock::now();
  restart_times_.push_back(now);
  while (!restart_times_.empty() &&
         std::chrono::duration<double>(now - restart_times_.front()).count() > config_.window_s) {
    restart_times_.pop_front();
  }
  if (static_cast<int>(restart_times_.size()) > config_.max_restarts) {
    {
      std::lock_guard lock(mutex_);
      c.state = State::failed;
    }
    event(ended + ": more than " + std::to_string(config_.max_restarts) + " restarts within " +
              seconds_text(config_.window_s) + "; the supervisor escalates and stops the topology",
          true);
    stop_all(config_.shutdown_timeout_s);
    finish(TopologyExit::escalated);
    return;
  }
  // The set to restart, per strategy; the others in it are stopped first, in reverse start order.
  const std::size_t self = static_cast<std::size_t>(&c - children_.data());
  std::vector<std::size_t> set;
  for (std::size_t i = 0; i < children_.size(); ++i) {
    if (i == self) continue;
    const bool live = children_[i].pidfd >= 0;
    if (config_.strategy == Strategy::one_for_all && live) set.push_back(i);
    if (config_.strategy == Strategy::rest_for_one && i > self && live) set.push_back(i);
  }
  event(ended + ": restarting" +
            (set.empty() ? std::string() : " it and " + std::to_string(set.size()) + " other(s)") + " (" +
            std::string(to_string(config_.strategy)) + "), restart " + std::to_string(c.restarts + 1),
        true);
  terminate(set, config_.shutdown_timeout_s);
  std::lock_guard lock(mutex_);
  c.state = State::pending;
  c.ready = false;
  ++c.restarts;
  for (std::size_t i : set) {
    auto& o = children_[i];
    o.ready = false;
    // Erlang: a temporary child stopped because of a sibling is not restarted.
    if (config_.actors[o.actor].restart == Restart::temporary) continue;
    o.state = State::pending;
    ++o.restarts;
  }
}

int Supervisor::enforce_ready_deadlines() {
  const auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (auto& c : children_) {
    if (c.ready || c.ready_timed_out || c.pidfd < 0 || c.state != State::starting) continue;
    if (now < c.ready_deadline) {
      next = std::min(next, c.ready_deadline);
      continue;
    }
    // Ready in time, but not read yet (its byte came after the last poll): this poll reports it.
    if (c.ready_fd >= 0) {
      pollfd p{c.ready_fd, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) {
        next = now;
        continue;
      }
    }
    // Its pidfd reports the death; on_death then treats it as any actor that ended before it was ready.
    c.ready_timed_out = true;
    signal(c, SIGKILL);
    event("actor " + c.name + " (pid " + std::to_string(c.pid) + ") did not call mpx::init within " +
              seconds_text(config_.actors[c.actor].ready_timeout_s) + ": is it an mpx program?",
          true);
  }
  if (next == Clock::time_point::max()) return -1;
  // Rounded up: a poll that wakes a little early would only spin.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::min<long long>(ms, 24L * 3600 * 1000));
}

void Supervisor::run() {
  launch_pending();
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (start_failed_) break;
      if (!started_ && std::all_of(children_.begin(), children_.end(), [](const Child& c) {
            return c.ready || c.state == State::exited;
          })) {
        started_ = true;
        initial_start_ = false;
        topology_state_ = "running";
        changed_.notify_all();
      }
      if (stop_requested_) break;
    }
    if (!any_live()) break;
    std::vector<pollfd> fds;
    std::vector<std::pair<std::size_t, bool>> owners;  // child, is ready fd
    fds.push_back({wake_fd_, POLLIN, 0});
    if (stop_fd_ >= 0) fds.push_back({stop_fd_, POLLIN, 0});
    const std::size_t first = fds.size();
    for (std::size_t i = 0; i < children_.size(); ++i) {
      if (children_[i].ready_fd >= 0) {
        fds.push_back({children_[i].ready_fd, POLLIN, 0});
        owners.emplace_back(i, true);
      }
    }
    for (std::size_t i = 0; i < children_.size(); ++i) {
      if (children_[i].pidfd >= 0) {
        fds.push_back({children_[i].pidfd, POLLIN, 0});
        owners.emplace_back(i, false);
      }
    }
    if (::poll(fds.data(), fds.size(), enforce_ready_deadlines()) < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "mpx: supervisor poll");
    }
    if (fds[0].revents & POLLIN) {
      std::uint64_t n;
      (void)!::read(wake_fd_, &n, sizeof n);
    }
    if (stop_fd_ >= 0 && (fds[1].revents & POLLIN)) {
      {
        std::lock_guard lock(mutex_);
        stop_requested_ = true;
      }
      event("stop requested by a signal", true);
    }
    {
      std::lock_guard lock(mutex_);
      if (stop_requested_) break;
    }
    // Readiness first: a child that wrote its byte and then ended was ready.
    for (std::size_t k = first; k < fds.size(); ++k) {
      const auto [i, is_ready] = owners[k - first];
      if (is_ready && fds[k].revents && children_[i].ready_fd == fds[k].fd) on_ready(children_[i]);
    }
    for (std::size_t k = first; k < fds.size(); ++k) {
      const auto [i, is_ready] = owners[k - first];
      if (!is_ready && fds[k].revents && children_[i].pidfd == fds[k].fd) {
        on_death(children_[i]);
        if (result_) return;  // escalated
      }
    }
    launch_pending();
  }
  // The end: a failed start, a stop request, or every actor done.
  bool failed_start = false;
  double timeout = config_.shutdown_timeout_s;
  {
    std::lock_guard lock(mutex_);
    failed_start = start_failed_;
    if (stop_timeout_s_ >= 0) timeout = stop_timeout_s_;
  }
  bool requested = false;
  {
    std::lock_guard lock(mutex_);
    requested = stop_requested_;
  }
  stop_all(timeout);
  TopologyExit status = TopologyExit::ok;
  if (failed_start) {
    status = TopologyExit::failed;
  } else if (requested) {
    status = killed_any_ ? TopologyExit::killed : TopologyExit::ok;
  } else {
    const bool any_failed = std::any_of(children_.begin(), children_.end(), [](const Child& c) {
      return c.last_exitcode && *c.last_exitcode != 0;
    });
    status = any_failed ? TopologyExit::failed : TopologyExit::ok;
  }
  if (requested) event(std::string("stopped") + (killed_any_ ? " (some actors had to be killed)" : " cleanly"), true);
  finish(status);
}

}  // namespace mpx::topology
