// mpx::metrics: a snapshot asked from the coordinator (the `metrics` message), its Prometheus text, and the HTTP
// server that serves that text beside the coordinator in the root process (cpp-httplib, in a module loaded on first
// use: metrics_http.hpp says why).
#include <mpx/metrics.hpp>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <mpx/errors.hpp>

#include "api/call.hpp"
#include "api/metrics_http.hpp"
#include "api/metrics_server.hpp"
#include "runtime/runtime.hpp"

namespace mpx {

Metrics metrics() {
  runtime::require_initialized();
  return detail::call(wire::make(wire::Kind::metrics, 0, 0, Object{}), -1).body_as<Metrics>();
}

namespace {

// A label value as the exposition format wants it: backslash, double quote and newline escaped.
void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_number(std::string& out, std::uint64_t value) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, end);
}

void append_number(std::string& out, double value) {
  char digits[32];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, end);
}

class Exposition {
 public:
  // Starts a metric family: its HELP and TYPE lines.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // One sample of the current family; `suffix` for a histogram's _bucket, _sum and _count.
  template <class Number>
  void sample(Labels labels, Number value, std::string_view suffix = {}) {
    out_ += name_;
    out_ += suffix;
    if (labels.size() > 0) {
      out_ += '{';
      bool first = true;
      for (const auto& [label, text] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += label;
        out_ += "=\"";
        append_label_value(out_, text);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    append_number(out_, value);
    out_ += '\n';
  }

  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  std::string name_;
};

// One family per field of a list of objects, each sample labelled with the object's name and id.
template <class Item, class Field>
void per_object(Exposition& e, const std::vector<Item>& items, std::string_view label, std::string_view name,
                std::string_view type, std::string_view help, Field field) {
  e.family(name, type, help);
  for (const auto& item : items) {
    const std::string id = std::to_string(item.id);
    e.sample({{label, item.name}, {"id", id}}, static_cast<std::uint64_t>(item.*field));
  }
}

template <class Field>
void per_actor(Exposition& e, const std::vector<ActorMetrics>& actors, std::string_view name, std::string_view type,
               std::string_view help, Field field) {
  e.family(name, type, help);
  for (const auto& actor : actors) {
    const std::string pid = std::to_string(actor.pid);
    e.sample({{"actor", actor.name}, {"pid", pid}}, static_cast<std::uint64_t>(actor.*field));
  }
}

}  // namespace

std::string metrics_text(const Metrics& m) {
  Exposition e;
  e.family("mpx_coordinator_messages_total", "counter", "Messages the coordinator handled.");
  e.sample({}, m.messages);
  e.family("mpx_coordinator_malformed_total", "counter",
           "Messages the coordinator rejected (bad envelope, unknown kind, bad body).");
  e.sample({}, m.malformed);
  e.family("mpx_coordinator_zap_denied_total", "counter",
           "tcp connections refused at the CURVE handshake (no CURVE, a wrong coordinator key, or a client key "
           "not in the allow list).");
  e.sample({}, m.denied);
  e.family("mpx_coordinator_unauthenticated_total", "counter",
           "State-changing messages the coordinator refused because their connection was not authenticated.");
  e.sample({}, m.unauthenticated);
  e.family("mpx_coordinator_forged_total", "counter",
           "Messages the coordinator refused because their sender is not an actor of the node their key is bound to.");
  e.sample({}, m.forged);
  e.family("mpx_coordinator_kind_latency_seconds", "histogram",
           "Time the coordinator spent handling messages, by kind.");
  for (const auto& k : m.kinds) {
    for (std::size_t i = 0; i < k.buckets.size() && i < kind_latency_bounds.size(); ++i) {
      std::string le;
      append_number(le, kind_latency_bounds[i]);
      e.sample({{"kind", k.kind}, {"le", le}}, k.buckets[i], "_bucket");
    }
    e.sample({{"kind", k.kind}, {"le", "+Inf"}}, k.count, "_bucket");
    e.sample({{"kind", k.kind}}, k.seconds, "_sum");
    e.sample({{"kind", k.kind}}, k.count, "_count");
  }

  per_object(e, m.queues, "queue", "mpx_queue_depth", "gauge", "Items in the queue.", &QueueMetrics::depth);
  per_object(e, m.queues, "queue", "mpx_queue_puts_total", "counter", "Items put on the queue.", &QueueMetrics::puts);
  per_object(e, m.queues, "queue", "mpx_queue_gets_total", "counter", "Items got from the queue.", &QueueMetrics::gets);
  per_object(e, m.queues, "queue", "mpx_queue_waiters", "gauge", "Blocked getters, putters and joiners.",
             &QueueMetrics::waiters);

  per_object(e, m.locks, "lock", "mpx_lock_acquisitions_total", "counter", "Successful acquires of the lock.",
             &LockMetrics::acquisitions);
  per_object(e, m.locks, "lock", "mpx_lock_waits_total", "counter", "Acquires that waited for another holder.",
             &LockMetrics::waits);
  per_object(e, m.locks, "lock", "mpx_lock_waiters", "gauge", "Processes waiting for the lock.", &LockMetrics::waiters);

  per_object(e, m.pools, "pool", "mpx_pool_tasks_queued", "gauge", "Tasks waiting for a worker.", &PoolMetrics::queued);
  per_object(e, m.pools, "pool", "mpx_pool_tasks_running", "gauge", "Tasks a worker holds.", &PoolMetrics::running);
  per_object(e, m.pools, "pool", "mpx_pool_tasks_done_total", "counter", "Tasks whose result came back.",
             &PoolMetrics::done);
  per_object(e, m.pools, "pool", "mpx_pool_tasks_failed_total", "counter",
             "Tasks given up after too many worker deaths (WorkerLost).", &PoolMetrics::failed);
  per_object(e, m.pools, "pool", "mpx_pool_tasks_retried_total", "counter",
             "Tasks run again because their worker died.", &PoolMetrics::retried);
  per_object(e, m.pools, "pool", "mpx_pool_worker_restarts_total", "counter",
             "Workers that exited while the pool was open.", &PoolMetrics::worker_restarts);

  per_object(e, m.semaphores, "semaphore", "mpx_semaphore_value", "gauge", "Units of the semaphore free now.",
             &SemaphoreMetrics::value);
  per_object(e, m.semaphores, "semaphore", "mpx_semaphore_acquisitions_total", "counter",
             "Successful acquires of the semaphore.", &SemaphoreMetrics::acquisitions);
  per_object(e, m.semaphores, "semaphore", "mpx_semaphore_waits_total", "counter",
             "Acquires that waited for a unit.", &SemaphoreMetrics::waits);
  per_object(e, m.semaphores, "semaphore", "mpx_semaphore_waiters", "gauge", "Processes waiting for a unit.",
             &SemaphoreMetrics::waiters);

  per_object(e, m.events, "event", "mpx_event_set", "gauge", "1 while the event's flag is set.", &EventMetrics::set);
  per_object(e, m.events, "event", "mpx_event_sets_total", "counter", "Calls of set().", &EventMetrics::sets);
  per_object(e, m.events, "event", "mpx_event_waits_total", "counter", "Waits that blocked on the clear flag.",
             &EventMetrics::waits);
  per_object(e, m.events, "event", "mpx_event_waiters", "gauge", "Processes waiting for the flag.",
             &EventMetrics::waiters);

  per_object(e, m.conditions, "condition", "mpx_condition_waits_total", "counter", "Calls of wait().",
             &ConditionMetrics::waits);
  per_object(e, m.conditions, "condition", "mpx_condition_notified_total", "counter",
             "Waiters woken by notify() or notify_all().", &ConditionMetrics::notified);
  per_object(e, m.conditions, "condition", "mpx_condition_waiters", "gauge", "Processes waiting for a notify.",
             &ConditionMetrics::waiters);

  per_object(e, m.barriers, "barrier", "mpx_barrier_parties", "gauge", "Parties the barrier needs.",
             &BarrierMetrics::parties);
  per_object(e, m.barriers, "barrier", "mpx_barrier_waiting", "gauge", "Parties waiting at the barrier.",
             &BarrierMetrics::waiting);
  per_object(e, m.barriers, "barrier", "mpx_barrier_passes_total", "counter",
             "Times every party arrived and all were released.", &BarrierMetrics::passes);
  per_object(e, m.barriers, "barrier", "mpx_barrier_breaks_total", "counter", "Times the barrier broke.",
             &BarrierMetrics::breaks);
  per_object(e, m.barriers, "barrier", "mpx_barrier_broken", "gauge", "1 while the barrier is broken.",
             &BarrierMetrics::broken);

  per_actor(e, m.actors, "mpx_actor_up", "gauge", "1 while the actor's process runs, 0 once it exited.",
            &ActorMetrics::alive);
  // A state set, as Prometheus has it: one sample per state, 1 for the one the actor is in.
  e.family("mpx_actor_state", "gauge", "1 for the state the actor is in, 0 for the others.");
  for (const auto& actor : m.actors) {
    const std::string pid = std::to_string(actor.pid);
    for (const auto state : actor_states) {
      e.sample({{"actor", actor.name}, {"pid", pid}, {"state", state}}, std::uint64_t{actor.state == state});
    }
  }
  per_actor(e, m.actors, "mpx_actor_messages_in_total", "counter", "Messages the coordinator handled from the actor.",
            &ActorMetrics::messages_in);
  per_actor(e, m.actors, "mpx_actor_messages_out_total", "counter", "Messages the coordinator sent the actor.",
            &ActorMetrics::messages_out);
  per_actor(e, m.actors, "mpx_actor_restarts_total", "counter", "Earlier actors of the same name that exited.",
            &ActorMetrics::restarts);
  return e.take();
}

std::string metrics_text() { return metrics_text(metrics()); }

// ---- the HTTP server ----

namespace {

// The HTTP module, loaded once and never unloaded (its server threads may outlive a failed start's cleanup).
const detail::metrics_http::Module& http_module() {
  static const detail::metrics_http::Module* loaded = [] {
    namespace mh = detail::metrics_http;
    // Where the module sits: next to libmpx.so (the build tree), in its mpx/ folder (an install), or, for a program
    // that links libmpx.a, where this build or its install put it.
    std::vector<std::string> tried;
    Dl_info self{};
    if (::dladdr(reinterpret_cast<void*>(&serve_metrics), &self) != 0 && self.dli_fname != nullptr) {
      std::string dir(self.dli_fname);
      dir = dir.find('/') == std::string::npos ? "." : dir.substr(0, dir.rfind('/'));
      tried.push_back(dir + "/" + mh::module_file);
      tried.push_back(dir + "/mpx/" + mh::module_file);
    }
    tried.push_back(std::string(MPX_METRICS_HTTP_BUILD_DIR) + "/" + mh::module_file);
    tried.push_back(std::string(MPX_METRICS_HTTP_INSTALL_DIR) + "/" + mh::module_file);
    std::string why;
    for (const auto& path : tried) {
      if (::access(path.c_str(), F_OK) != 0) continue;
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        why += std::string("; ") + ::dlerror();
        continue;
      }
      using Entry = const mh::Module* (*)();
      if (auto entry = reinterpret_cast<Entry>(::dlsym(handle, mh::module_entry))) return entry();
      why += "; " + path + " has no " + mh::module_entry;
    }
    std::string list;
    for (const auto& path : tried) list += (list.empty() ? "" : ", ") + path;
    throw Error(std::string("mpx: cannot load the metrics HTTP module (") + list + ")" + why);
  }();
  return *loaded;
}

// GET /metrics, answered on the server's thread.
void render_metrics(std::string& body, int& status) {
  try {
    body = metrics_text();
  } catch (const std::exception& e) {
    status = 503;
    body = std::string("mpx: metrics unavailable: ") + e.what() + "\n";
  }
}

struct Server {
  void* http = nullptr;  // the module's server
  std::string endpoint;
  pid_t owner = 0;  // a forked child inherits this memory, not the thread: only the owner stops it
};

std::mutex server_mutex;
Server* server = nullptr;  // never freed before the owner stops it; a static destructor could run in a child

}  // namespace

void serve_metrics(std::string_view address) {
  runtime::require_initialized();
  const auto& st = runtime::state();
  if (!st.self.is_root || runtime::self_pid() != st.root_pid) {
    throw ProcessError("mpx: serve_metrics runs in the root process only (the coordinator's)");
  }
  const auto colon = address.rfind(':');
  const std::string_view host = colon == std::string_view::npos ? std::string_view() : address.substr(0, colon);
  const std::string_view port_text = colon == std::string_view::npos ? std::string_view() : address.substr(colon + 1);
  int port = -1;
  const auto parsed = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  const bool whole_number = parsed.ec == std::errc() && parsed.ptr == port_text.data() + port_text.size();
  if (host.empty() || port_text.empty() || !whole_number || port < 0 || port > 65535) {
    throw ValueError("mpx: metrics address '" + std::string(address) + "' is not HOST:PORT (port 0 picks one)");
  }
  std::lock_guard lock(server_mutex);
  if (server != nullptr && server->owner == runtime::self_pid()) {
    throw ProcessError("mpx: a metrics server already runs at " + server->endpoint);
  }
  const auto& module = http_module();
  const std::string host_name(host);
  // The server's threads take no signal meant for the program (a Ctrl-C, a SIGTERM it waits for with sigwait): they
  // start with every asynchronous signal blocked, and its handler thread, started from it, inherits that.
  sigset_t blocked, previous;
  ::sigfillset(&blocked);
  for (int synchronous : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::sigdelset(&blocked, synchronous);
  ::pthread_sigmask(SIG_BLOCK, &blocked, &previous);
  int bound = 0;
  std::string error;
  void* http = module.start(host_name.c_str(), port, &render_metrics, &bound, &error);
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (http == nullptr) {
    throw ValueError("mpx: cannot serve metrics at '" + std::string(address) + "': " + error);
  }
  auto s = std::make_unique<Server>();
  s->http = http;
  s->endpoint = host_name + ":" + std::to_string(bound);
  s->owner = runtime::self_pid();
  server = s.release();
}

std::string metrics_endpoint() {
  std::lock_guard lock(server_mutex);
  return server != nullptr && server->owner == runtime::self_pid() ? server->endpoint : std::string();
}

namespace detail {

void start_metrics_from_environment() {
  const char* address = std::getenv("MPX_METRICS");
  if (address == nullptr || *address == '\0') return;
  // Reported and ignored, as a bad MPX_TRACE is: the program itself can still run.
  try {
    serve_metrics(address);
  } catch (const Error& e) {
    std::fprintf(stderr, "mpx: ignoring MPX_METRICS=%s: %s\n", address, e.what());
  }
}

void stop_metrics_server() {
  std::lock_guard lock(server_mutex);
  if (server == nullptr || server->owner != runtime::self_pid()) return;
  http_module().stop(server->http);
  delete server;
  server = nullptr;
}

}  // namespace detail

}  // namespace mpx
