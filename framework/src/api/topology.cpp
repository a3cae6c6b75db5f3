// mpx::Topology, the actor side (ActorContext, this_actor) and run_main: the public face of src/topology/.
#include <mpx/topology.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <chrono>
#include <map>
#include <optional>
#include <mutex>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <mpx/metrics.hpp>
#include <mpx/trace.hpp>
#include <mpx/version.hpp>

#include "api/actor.hpp"
#include "runtime/runtime.hpp"
#include "topology/config.hpp"
#include "topology/console.hpp"
#include "topology/supervisor.hpp"

namespace mpx {

namespace detail {

struct TopologyState {
  topology::Config config;
  std::unique_ptr<topology::Supervisor> supervisor;
  std::vector<std::pair<std::string, Queue<Object>>> queues;  // for status(): their depth
  std::vector<std::pair<Connection, Connection>> pipes;     // kept: a pipe with no holder at all would be dropped
  std::vector<std::pair<std::string, Pool>> pools;            // owned here: the workers are this process's children
  std::string endpoint;
  int stop_fd = -1;  // set by run() and run_main: the signal handlers' pipe
  std::optional<ActorContext> objects;  // every object, for the process that runs the topology
  bool tracing = false;  // [coordinator.trace] enabled it at start(); the end of the run completes the file
  topology::Supervisor::EventSink on_event;  // set by run_main: supervision events as they happen
};

namespace {

using Payload = std::tuple<std::string, int, int, std::string, Object, std::vector<ActorContext::Entry>>;

Payload actor_payload() {
  const auto& st = runtime::state();
  if (!st.joined) throw ProcessError("mpx::this_actor: this process was not started by a topology");
  return decode<Payload>(st.actor_payload);
}

// [coordinator.trace]: recording starts before the first object is created, so the file holds the whole run.
void start_trace(TopologyState& s) {
  if (!s.config.trace.enabled) return;
  if (!trace::compiled_in()) {
    throw TopologyError("mpx: " + s.config.source + ": coordinator.trace is enabled, but tracing is compiled out of "
                        "this build (meson -Dtracing=false)");
  }
  trace::Options options;
  options.file = s.config.trace.file;
  options.kinds = s.config.trace.kinds;
  try {
    trace::enable(options);
  } catch (const Error& e) {
    throw TopologyError("mpx: " + s.config.source + ": coordinator.trace: " + e.what());
  }
  s.tracing = true;
}

// Gives an object its topology name in the trace ("queue:jobs" instead of "queue:7") and in metrics ("jobs"), so
// whether or not tracing is on.
void name_in_trace(const std::string& type, const std::string& name, const std::vector<std::uint64_t>& ids) {
  for (auto id : ids) trace::name_object(id, type + ":" + name);
}

// Once the actors have stopped: the pools' workers go too (terminate: every actor that could wait on them is gone).
void end_pools(TopologyState& s) {
  for (auto& [name, pool] : s.pools) {
    try {
      pool.terminate();
    } catch (const std::exception& e) {
      std::cerr << "mpx: stopping pool '" << name << "': " << e.what() << "\n";
    }
  }
}

// Once the run has ended (or failed to start): the sinks drain, and the file is complete.
void end_trace(TopologyState& s) {
  if (!s.tracing) return;
  s.tracing = false;
  trace::disable();
}

// The end of a run, in order: the actors have stopped; then the pools, then the trace (which records the pools' end).
void end_run(TopologyState& s) {
  end_pools(s);
  end_trace(s);
}

}  // namespace

// A task actor the supervisor placed on another node: its node's agent started it with the actor's payload, which it
// takes as a joined actor's (this_actor() reads it), and it runs its registered function.
void run_task_actor_here(ErasedFunction, std::string_view payload, std::string& result) {
  auto& st = runtime::state();
  st.actor_payload = std::string(payload);
  st.joined = true;
  const std::string task = std::get<3>(actor_payload());
  if (!is_registered_actor(task)) {
    throw std::invalid_argument("mpx: no actor function is registered as '" + task + "' in this program");
  }
  (void)bind_registered(task, Object::list({})).invoke();
  result = encode(Object{});
}

void run_if_task_actor() {
  if (!runtime::state().joined) return;
  const std::string task = std::get<3>(actor_payload());
  if (task.empty()) return;  // an exec actor: its own main goes on
  runtime::run_child([&task] {
    if (!is_registered_actor(task)) {
      throw std::invalid_argument("mpx: no actor function is registered as '" + task +
                                  "' in this program; register task actors before mpx::init");
    }
    (void)bind_registered(task, Object::list({})).invoke();
  });
}

}  // namespace detail

// ---- the actor side ----

ActorContext::ActorContext(std::string name, int replica, int replicas, Object args, std::vector<Entry> objects)
    : name_(std::move(name)), replica_(replica), replicas_(replicas), args_(std::move(args)), objects_(std::move(objects)) {}

std::vector<std::string> ActorContext::objects() const {
  std::vector<std::string> names;
  for (const auto& e : objects_) names.push_back(e.name);
  return names;
}

ObjectRef ActorContext::ref(std::string_view name, std::string_view type, std::size_t index) const {
  for (const auto& e : objects_) {
    if (e.name != name) continue;
    if (e.type != type) {
      throw std::invalid_argument("mpx: object '" + std::string(name) + "' of actor '" + name_ + "' is a " + e.type +
                                  ", not a " + std::string(type));
    }
    if (index >= e.ids.size()) throw std::invalid_argument("mpx: object '" + std::string(name) + "' has no end " +
                                                           std::to_string(index));
    return ObjectRef{e.ids[index], runtime::state().session.coordinator_endpoint};
  }
  std::string names;
  for (const auto& e : objects_) names += (names.empty() ? "" : ", ") + e.name;
  throw std::invalid_argument("mpx: actor '" + name_ + "' was not given an object named '" + std::string(name) +
                              "' (it has: " + (names.empty() ? "none" : names) + "); list it in the actor's objects");
}

Connection ActorContext::connection(std::string_view name, int end) const {
  if (end != 0 && end != 1) throw std::invalid_argument("mpx: a pipe end is 0 or 1, not " + std::to_string(end));
  return Connection(adopt, ref(name, "pipe", static_cast<std::size_t>(end)));
}

bool is_actor() { return runtime::state().joined; }

const ActorContext& this_actor() {
  static std::once_flag once;
  static ActorContext* context = nullptr;  // leaked: actors read it until exit
  std::call_once(once, [] {
    if (!runtime::state().joined) return;
    auto [name, replica, replicas, task, args, entries] = detail::actor_payload();
    context = new ActorContext(std::move(name), replica, replicas, std::move(args), std::move(entries));
  });
  if (!context) throw ProcessError("mpx::this_actor: this process was not started by a topology");
  return *context;
}

// ---- Topology ----

Topology::Topology(std::shared_ptr<detail::TopologyState> state) : state_(std::move(state)) {}
Topology::Topology(Topology&&) noexcept = default;
Topology& Topology::operator=(Topology&&) noexcept = default;
Topology::~Topology() {
  if (state_ && state_->supervisor) (void)state_->supervisor->stop(-1);
  if (state_) {
    try {
      detail::end_run(*state_);
    } catch (...) {
      // A destructor cannot report it: the coordinator is gone already, and its bus with it.
    }
  }
}

Topology Topology::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TopologyError("mpx: cannot read topology file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  auto state = std::make_shared<detail::TopologyState>();
  const auto directory = std::filesystem::absolute(path).parent_path().string();
  state->config = topology::parse_config(text.str(), path, directory);
  return Topology(std::move(state));
}

Topology Topology::parse(std::string_view text, std::string source) {
  auto state = std::make_shared<detail::TopologyState>();
  state->config = topology::parse_config(text, source, std::filesystem::current_path().string());
  return Topology(std::move(state));
}

std::string Topology::plan() const { return topology::describe(state_->config); }

namespace detail {

// The shared objects, then the actors in order.
void start_objects_and_actors(TopologyState& s) {
  // Every shared object exists before any actor starts.
  std::map<std::string, ActorContext::Entry> entries;
  for (const auto& o : s.config.objects) {
    ActorContext::Entry e{o.name, o.type, {}};
    if (o.type == "queue") {
      Queue<Object> q(static_cast<std::size_t>(o.maxsize));
      e.ids = {q.id()};
      s.queues.emplace_back(o.name, q);
    } else if (o.type == "joinable_queue") {
      JoinableQueue<Object> q(static_cast<std::size_t>(o.maxsize));
      e.ids = {q.id()};
      s.queues.emplace_back(o.name, Queue<Object>(adopt, q.ref()));
    } else if (o.type == "event") {
      e.ids = {Event().id()};
    } else if (o.type == "semaphore") {
      e.ids = {o.bounded ? BoundedSemaphore(o.value).id() : Semaphore(o.value).id()};
      if (o.bounded) e.type = "bounded_semaphore";
    } else if (o.type == "lock") {
      e.ids = {o.recursive ? RLock().id() : Lock().id()};
      if (o.recursive) e.type = "rlock";
    } else if (o.type == "barrier") {
      Timeout timeout;
      if (o.timeout_s > 0) timeout = std::chrono::duration<double>(o.timeout_s);
      e.ids = {Barrier(static_cast<std::size_t>(o.parties), nullptr, timeout).id()};
    } else if (o.type == "pipe") {
      auto ends = Pipe(o.duplex);
      e.ids = {ends.first.id(), ends.second.id()};
      s.pipes.push_back(std::move(ends));
    } else if (o.type == "pool") {
      // Owned by this process, the supervising one: it starts the workers and replaces dead ones.
      PoolOptions options;
      if (o.processes > 0) options.processes = static_cast<int>(o.processes);
      options.max_retries = static_cast<unsigned>(o.max_retries);
      options.maxtasksperchild = static_cast<std::size_t>(o.maxtasksperchild);
      Pool pool(std::move(options));
      e.ids = {pool.ref().id};
      s.pools.emplace_back(o.name, std::move(pool));
    } else {
      throw TopologyError("mpx: object '" + o.name + "' has type '" + o.type + "', which this build cannot create");
    }
    detail::name_in_trace(o.type, o.name, e.ids);
    entries.emplace(o.name, std::move(e));
  }
  std::vector<ActorContext::Entry> all;
  for (const auto& [name, e] : entries) all.push_back(e);
  s.objects.emplace("topology", 0, 1, Object(Object::Map{}), std::move(all));
  topology::Supervisor::set_task_runner(&run_task_actor_here);
  s.supervisor = std::make_unique<topology::Supervisor>(s.config, std::move(entries));
  s.supervisor->set_stop_fd(s.stop_fd);
  s.supervisor->set_event_sink(s.on_event);
  s.supervisor->start();
}

}  // namespace detail

void Topology::start() {
  runtime::require_initialized();
  auto& s = *state_;
  if (s.supervisor) throw TopologyError("mpx: this topology was already started");
  if (!s.config.keys.empty()) runtime::set_keys(s.config.keys);
  if (!s.config.endpoint.empty()) runtime::set_coordinator_endpoint(s.config.endpoint);
  runtime::ensure_coordinator();
  s.endpoint = runtime::state().session.coordinator_endpoint;
  detail::start_trace(s);
  try {
    detail::start_objects_and_actors(s);
  } catch (...) {
    detail::end_run(s);
    throw;
  }
}


TopologyExit Topology::wait() {
  if (!state_->supervisor) throw TopologyError("mpx: the topology was not started");
  const auto exit = *state_->supervisor->wait(-1);
  detail::end_run(*state_);
  return exit;
}

std::optional<TopologyExit> Topology::wait_for(std::chrono::duration<double> timeout) {
  if (!state_->supervisor) throw TopologyError("mpx: the topology was not started");
  auto exit = state_->supervisor->wait(std::max(0.0, timeout.count()));
  if (exit) detail::end_run(*state_);
  return exit;
}

TopologyExit Topology::stop(std::optional<std::chrono::duration<double>> timeout) {
  if (!state_->supervisor) return TopologyExit::ok;
  const auto exit = state_->supervisor->stop(timeout ? std::max(0.0, timeout->count()) : -1.0);
  detail::end_run(*state_);
  return exit;
}

namespace {

std::atomic<int> signal_write_fd{-1};

void on_stop_signal(int) {
  const int fd = signal_write_fd.load();
  const char byte = 1;
  if (fd >= 0) (void)!::write(fd, &byte, 1);
}

// SIGINT and SIGTERM stop the topology gracefully while `body` runs; the previous handlers come back after.
template <class Body>
TopologyExit with_stop_signals(detail::TopologyState& s, Body body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::system_error(errno, std::generic_category(), "mpx: pipe2");
  signal_write_fd.store(fds[1]);
  struct sigaction action {}, old_int {}, old_term {};
  action.sa_handler = &on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, &old_int);
  ::sigaction(SIGTERM, &action, &old_term);
  struct Restore {
    int fds[2];
    struct sigaction old_int, old_term;
    ~Restore() {
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      signal_write_fd.store(-1);
      ::close(fds[0]);
      ::close(fds[1]);
    }
  } restore{{fds[0], fds[1]}, old_int, old_term};
  (void)s;
  return body(fds[0]);
}

}  // namespace

TopologyExit Topology::run() {
  return with_stop_signals(*state_, [this](int stop_fd) {
    if (state_->supervisor) throw TopologyError("mpx: this topology was already started");
    state_->stop_fd = stop_fd;
    start();
    return wait();
  });
}

TopologyStatus Topology::status() const {
  TopologyStatus out;
  const auto& s = *state_;
  if (!s.supervisor) {
    out.state = "loaded";
    return out;
  }
  out.state = s.supervisor->state();
  out.actors = s.supervisor->actors();
  for (const auto& [name, q] : s.queues) {
    QueueStatus qs;
    qs.name = name;
    try {
      qs.depth = q.qsize();
      qs.maxsize = q.maxsize();
    } catch (const Error&) {
    }
    out.queues.push_back(std::move(qs));
  }
  for (const auto& [name, pool] : s.pools) {
    PoolStatus ps;
    ps.name = name;
    ps.processes = pool.processes();
    ps.pids = pool.pids();
    try {
      const auto stats = detail::pool_stats(*pool.core());
      ps.queued = stats.queued;
      ps.running = stats.held;
      ps.workers = stats.workers;
    } catch (const Error&) {
      // The pool has ended (the topology stopped): its counters are gone with it.
    }
    out.pools.push_back(std::move(ps));
  }
  return out;
}

std::string Topology::report() const { return state_->supervisor ? state_->supervisor->report() : std::string(); }

std::string Topology::endpoint() const { return state_->endpoint; }

const ActorContext& Topology::objects() const {
  if (!state_->objects) throw TopologyError("mpx: the topology's objects exist once it has started");
  return *state_->objects;
}

// ---- run_main ----

namespace {

// Per-actor message rates for the status: the coordinator's count of messages in and out of each process
// (mpx::metrics), differenced between two status prints. Queue items that go through a shared-memory ring are not
// messages and do not count; the queue depths show that traffic.
class MessageRates {
 public:
  void sample() {
    const auto now = std::chrono::steady_clock::now();
    std::map<pid_t, std::uint64_t> counts;
    try {
      for (const auto& a : metrics().actors) {
        counts[static_cast<pid_t>(a.pid)] = a.messages_in + a.messages_out;
      }
    } catch (const Error&) {
      return;  // the coordinator is stopping: keep the last rates
    }
    const double seconds = std::chrono::duration<double>(now - when_).count();
    rates_.clear();
    for (const auto& [pid, n] : counts) {
      auto before = counts_.find(pid);
      if (before != counts_.end() && seconds > 0 && n >= before->second) rates_[pid] = (n - before->second) / seconds;
    }
    counts_ = std::move(counts);
    when_ = now;
  }
  // Messages per second of the process, or nullopt before two samples saw it.
  std::optional<double> of(pid_t pid) const {
    auto it = rates_.find(pid);
    return it == rates_.end() ? std::nullopt : std::optional<double>(it->second);
  }

 private:
  std::map<pid_t, std::uint64_t> counts_;
  std::map<pid_t, double> rates_;
  std::chrono::steady_clock::time_point when_ = std::chrono::steady_clock::now();
};

std::string rate_text(std::optional<double> rate) {
  if (!rate) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", *rate);
  return text;
}

std::string status_table(const TopologyStatus& st, const MessageRates& rates) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "%-24s %8s %-10s %8s %10s %8s  %s\n", "ACTOR", "PID", "STATE", "RESTARTS", "UPTIME",
                "MSGS/S", "LAST EXIT");
  out << line;
  for (const auto& a : st.actors) {
    const bool live = a.state == "running" || a.state == "starting" || a.state == "stopping";
    std::snprintf(line, sizeof line, "%-24s %8d %-10s %8d %9.1fs %8s  %s\n", a.name.c_str(), static_cast<int>(a.pid),
                  a.state.c_str(), a.restarts, a.uptime_s, live ? rate_text(rates.of(a.pid)).c_str() : "-",
                  a.last_exitcode ? std::to_string(*a.last_exitcode).c_str() : "-");
    out << line;
  }
  for (const auto& q : st.queues) {
    std::snprintf(line, sizeof line, "queue %-18s depth %zu%s\n", q.name.c_str(), q.depth,
                  q.maxsize ? (" / " + std::to_string(q.maxsize)).c_str() : "");
    out << line;
  }
  for (const auto& p : st.pools) {
    std::snprintf(line, sizeof line, "pool  %-18s queued %zu  running %zu  workers %zu/%zu\n", p.name.c_str(), p.queued,
                  p.running, p.pids.size(), p.processes);
    out << line;
  }
  return out.str();
}

// The same on one line, for the terminal's status line: how many actors are in each state, then each one that is not
// running, then the queues' depths and the pools' loads.
std::string status_line(const TopologyStatus& st, const MessageRates& rates, double seconds) {
  char head[64];
  std::snprintf(head, sizeof head, "[+%.1fs] %s:", seconds, st.state.c_str());
  std::string line = head;
  std::map<std::string, int> states;
  for (const auto& a : st.actors) ++states[a.state];
  for (const auto& [state, n] : states) line += " " + std::to_string(n) + " " + state;
  for (const auto& a : st.actors) {
    if (a.state == "running") {
      if (auto rate = rates.of(a.pid); rate && *rate >= 1) line += " | " + a.name + " " + rate_text(rate) + " msg/s";
      continue;
    }
    line += " | " + a.name + " " + a.state;
    if (a.restarts > 0) line += " r" + std::to_string(a.restarts);
  }
  for (const auto& q : st.queues) {
    line += " | " + q.name + " " + std::to_string(q.depth) + (q.maxsize ? "/" + std::to_string(q.maxsize) : "");
  }
  for (const auto& p : st.pools) {
    line += " | " + p.name + " queued " + std::to_string(p.queued) + " running " + std::to_string(p.running);
  }
  return line;
}

// Seconds since mpx-run started the topology, as events and status lines show them.
double seconds_since(std::chrono::steady_clock::time_point begin) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
}

}  // namespace

int run_main(int argc, char** argv) {
  CLI::App app{"Runs an mpx actor topology described in a TOML file"};
  app.set_version_flag("--version", (argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "mpx-run") +
                                        " (mpx) " + std::string(version()));
  std::string file;
  bool check = false;
  double every = 0;
  app.add_option("topology", file, "the topology file (TOML)")->required();
  app.add_flag("--check", check, "validate the file and print the plan; start nothing");
  app.add_option("--status-every", every, "print a status table every SECONDS (in place on a terminal)")
      ->check(CLI::PositiveNumber);
  std::string metrics_address;
  app.add_option("--metrics", metrics_address,
                 "serve Prometheus metrics at http://ADDR/metrics (HOST:PORT; port 0 picks one, printed on stderr)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(TopologyExit::invalid);
  }
  const std::string me = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "mpx-run";
  // Before the topology: they must outlive it, whose events they print.
  std::optional<topology::Console> console;
  std::optional<Topology> t;
  try {
    t.emplace(Topology::load(file));
  } catch (const TopologyError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return static_cast<int>(TopologyExit::invalid);
  }
  if (check) {
    std::fputs(t->plan().c_str(), stdout);
    std::printf("ok: %s is valid\n", file.c_str());
    return 0;
  }
  if (!metrics_address.empty()) {
    try {
      serve_metrics(metrics_address);
    } catch (const Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return static_cast<int>(TopologyExit::invalid);
    }
    std::fprintf(stderr, "mpx-run: metrics at http://%s/metrics\n", metrics_endpoint().c_str());
  }
  const auto begin = std::chrono::steady_clock::now();
  console.emplace(every > 0 && ::isatty(STDOUT_FILENO) == 1);
  t->state_->on_event = [&console, &me, begin](const std::string& line) {
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "[+%.3fs] ", seconds_since(begin));
    console->event(stamp + me + ": " + line);
  };
  TopologyExit status = TopologyExit::ok;
  MessageRates rates;
  try {
    status = with_stop_signals(*t->state_, [&](int stop_fd) {
      t->state_->stop_fd = stop_fd;
      t->start();
      if (every <= 0) return t->wait();
      rates.sample();
      for (;;) {
        if (auto done = t->wait_for(std::chrono::duration<double>(every))) return *done;
        const auto st = t->status();
        rates.sample();
        if (console->has_status_line()) {
          console->status(status_line(st, rates, seconds_since(begin)));
        } else {
          char head[64];
          std::snprintf(head, sizeof head, "--- status at %.1f s ---\n", seconds_since(begin));
          console->status(head + status_table(st, rates));
        }
      }
    });
  } catch (const TopologyError& e) {
    console->close();
    std::fprintf(stderr, "%s\n", e.what());
    return static_cast<int>(TopologyExit::failed);
  }
  console->close();
  if (every > 0) {
    std::printf("--- final status at %.1f s ---\n%s", seconds_since(begin), status_table(t->status(), rates).c_str());
    std::fflush(stdout);
  }
  // The events were printed as they happened; this is the summary.
  std::fprintf(stderr, "[+%.3fs] %s: topology %s ended: %s (exit status %d)\n", seconds_since(begin), me.c_str(),
               file.c_str(),
               status == TopologyExit::ok          ? "ok"
               : status == TopologyExit::escalated ? "escalated: too many restarts"
               : status == TopologyExit::killed    ? "stopped, but some actors had to be killed"
                                                   : "failed",
               static_cast<int>(status));
  return static_cast<int>(status);
}

}  // namespace mpx
