#include "runtime/runtime.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <system_error>
#include <iostream>
#include <atomic>
#include <mutex>
#include <pthread.h>
#include <thread>

#include <cxxabi.h>
#include <dlfcn.h>
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <sys/wait.h>

#include "runtime/channel.hpp"
#include "runtime/coordinator.hpp"
#include "runtime/launcher.hpp"
#include "runtime/security.hpp"
#include "trace/bus.hpp"
#include "wire/actor_id.hpp"
#include "wire/interrupted.hpp"
#include "wire/transport.hpp"

namespace mpx::runtime {

namespace {

struct ProcessContext {
  pid_t owner = 0;
  zmq::context_t* context = nullptr;  // never deleted: sockets of other threads may outlive static destruction
};
ProcessContext process_context;
std::mutex coordinator_mutex;
Coordinator* the_coordinator = nullptr;  // root process only
void (*finalize_hook)() = nullptr;
void (*service_installer)(Coordinator&) = nullptr;
std::mutex exit_hooks_mutex;
std::vector<void (*)()> child_exit_hooks;  // a plain pointer: safe to read during exit

constexpr auto report_timeout = std::chrono::milliseconds(2000);

std::string exception_type_name() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  return type ? demangle(type->name()) : std::string("unknown");
}

void report_exception(const std::string& type, const std::string& message) {
  std::fflush(stdout);
  std::cout.flush();
  std::fprintf(stderr, "Process %s:\nTraceback: the target raised an uncaught exception\n%s: %s\n",
               state().self.name.c_str(), type.c_str(), message.c_str());
  std::fflush(stderr);
  try {
    auto& channel = Channel::current();
    auto reply = channel.request(wire::make(wire::Kind::process_error, 0, 0,
                                            std::make_tuple(static_cast<std::int64_t>(::getpid()), type, message,
                                                            host_name())),
                                 report_timeout);
    (void)reply;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: could not report the exception to the coordinator: %s\n", e.what());
  }
}

// A forkserver child's OS parent is the zygote; this watches the process that asked for it.
void watch_logical_parent(pid_t parent) {
  const int fd = pidfd_open(parent);
  if (fd < 0) ::_exit(1);  // already gone
  std::thread([fd] {
    pollfd p{fd, POLLIN, 0};
    try {
      (void)wire::poll(&p, 1, -1, "mpx: watching the parent");
    } catch (const std::system_error&) {
    }
    ::kill(::getpid(), SIGKILL);
  }).detach();
}

// ---- the std::atexit handlers a child registers (CPython gh-83856) ----
// A child ends with _exit: the handlers glibc holds include those it inherited through fork (its parent's, which must
// not run twice) and the destructors of static objects (which may still be in use by mpx's own threads). So every
// registration passes through here, and those made with std::atexit (their argument is null; a static object's
// destructor has the object) by a child after it started are also kept, to be run at its end.
struct ExitHandler {
  void (*function)(void*);
  void* argument;
};
std::mutex recorded_handlers_mutex;
// The child whose handlers are kept. Read without the mutex first, so that a process that keeps none (the root) never
// takes it, and a child forked while another thread registers a handler cannot inherit it held.
std::atomic<pid_t> recording_pid{0};
std::vector<ExitHandler>* recorded_handlers;  // leaked, like state(): guarded by the mutex

void start_recording_exit_handlers() {
  std::lock_guard lock(recorded_handlers_mutex);
  if (recorded_handlers == nullptr) recorded_handlers = new std::vector<ExitHandler>;
  recorded_handlers->clear();  // a forked child's copy of its parent's: not its own
  recording_pid = ::getpid();
}

void run_recorded_exit_handlers() {
  for (;;) {
    ExitHandler handler{};
    {
      std::lock_guard lock(recorded_handlers_mutex);
      if (recording_pid != ::getpid() || recorded_handlers == nullptr || recorded_handlers->empty()) return;
      handler = recorded_handlers->back();  // last registered, first run, as exit() does
      recorded_handlers->pop_back();
    }
    try {
      handler.function(handler.argument);
    } catch (...) {
    }
  }
}

// What a child does after its body: join its own children, run the atexit handlers it registered and the exit hooks
// (consumers settle what they hold), and make sure its last posted messages reached the coordinator.
void finish_child() {
  try {
    finalize_children();
  } catch (...) {
  }
  run_recorded_exit_handlers();
  std::vector<void (*)()> hooks;
  {
    std::lock_guard lock(exit_hooks_mutex);
    hooks = child_exit_hooks;
  }
  for (auto hook : hooks) {
    try {
      hook();
    } catch (...) {
    }
  }
  try {
    Channel::flush_current(report_timeout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: messages posted by process %d may be lost: %s\n", ::getpid(), e.what());
  }
}

}  // namespace

}  // namespace mpx::runtime

namespace mpx::runtime {

namespace {
std::atomic<pid_t> cached_pid{0};
void refresh_cached_pid() noexcept { cached_pid.store(::getpid(), std::memory_order_relaxed); }
const bool cached_pid_ready = [] {
  refresh_cached_pid();
  ::pthread_atfork(nullptr, nullptr, &refresh_cached_pid);
  return true;
}();
}  // namespace

pid_t self_pid() noexcept {
  const pid_t pid = cached_pid.load(std::memory_order_relaxed);
  return pid != 0 ? pid : ::getpid();
}

std::string host_name() {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  return host;
}

std::uint64_t self_actor() noexcept { return wire::actor_id(state().session.node, static_cast<std::uint64_t>(self_pid())); }

State& state() {
  static auto* instance = new State;  // leaked: exit hooks and worker exits read it after static destruction
  return *instance;
}

void require_initialized() {
  if (!state().initialized) {
    throw ProcessError("mpx: mpx::init(argc, argv) must be called first, as the first line of main");
  }
}

zmq::context_t& context() {
  const pid_t pid = self_pid();
  if (process_context.owner != pid) {
    process_context.owner = pid;
    process_context.context = new zmq::context_t(1);
    process_context.context->set(zmq::ctxopt::blocky, false);
  }
  return *process_context.context;
}

void ensure_coordinator() {
  auto& st = state();
  if (!st.self.is_root || self_pid() != st.root_pid) return;
  std::lock_guard lock(coordinator_mutex);
  if (the_coordinator) return;
  the_coordinator =
      new Coordinator(context(), st.session.coordinator_endpoint, coordinator_curve(st.session.coordinator_endpoint));
  // A tcp endpoint with port `*` is known only once bound: children must be told the real one.
  st.session.coordinator_endpoint = the_coordinator->endpoint();
  if (service_installer) service_installer(*the_coordinator);
  (void)the_coordinator->open_side_door(side_door_path());  // without one, everyone uses the ROUTER
  the_coordinator->start();
}

namespace {
// What only the root can choose, and only before its coordinator starts (the caller holds coordinator_mutex then).
void require_root(std::string_view what) {
  const auto& st = state();
  require_initialized();
  if (!st.self.is_root || self_pid() != st.root_pid) {
    throw ProcessError("mpx: only the root process of a session can choose " + std::string(what));
  }
}
}  // namespace

void set_coordinator_endpoint(std::string endpoint) {
  require_root("the coordinator's endpoint");
  auto& st = state();
  std::lock_guard lock(coordinator_mutex);
  if (the_coordinator) {
    if (endpoint == the_coordinator->endpoint()) return;
    throw ProcessError("mpx: the coordinator is already running at " + the_coordinator->endpoint() +
                       "; its endpoint cannot change to " + endpoint);
  }
  (void)wire::transport_of(endpoint);  // throws std::invalid_argument for an unknown transport
  require_keys_for(endpoint);
  st.session.coordinator_endpoint = std::move(endpoint);
}

void set_keys(const std::string& directory) {
  require_root("its keys (its children are told them)");
  std::lock_guard lock(coordinator_mutex);
  if (the_coordinator) {
    throw ProcessError("mpx: the coordinator is already running at " + the_coordinator->endpoint() +
                       "; choose the keys before it starts");
  }
  state().session.keys = checked_key_directory(directory);
}

namespace {
// MPX_SIDE_DOOR=0 (inherited by the session's processes) keeps everyone on ZeroMQ: for diagnosis, and so that the tests
// cover that path too.
bool side_doors_off() {
  const char* v = std::getenv("MPX_SIDE_DOOR");
  return v != nullptr && std::string_view(v) == "0";
}
}  // namespace

std::string side_door_path() {
  const auto& session = state().session;
  if (session.directory.empty() || side_doors_off()) return {};
  // On a node, its agent's relay is the side door: the directory is the agent's, which its processes inherit.
  if (session.node != wire::coordinator_node) return node_relay_path();
  if (!session.coordinator_endpoint.starts_with("ipc://")) return {};
  return session.directory + "/coordinator-side";
}

std::string node_relay_path() {
  const auto& session = state().session;
  if (session.directory.empty() || side_doors_off()) return {};
  return session.directory + "/node-relay";
}

Coordinator* coordinator_if_running() {
  std::lock_guard lock(coordinator_mutex);
  return self_pid() == state().root_pid ? the_coordinator : nullptr;
}

void add_child_exit_hook(void (*hook)()) {
  std::lock_guard lock(exit_hooks_mutex);
  if (std::find(child_exit_hooks.begin(), child_exit_hooks.end(), hook) == child_exit_hooks.end()) {
    child_exit_hooks.push_back(hook);
  }
}

void set_service_installer(void (*installer)(Coordinator&)) { service_installer = installer; }

void set_finalize_children(void (*hook)()) { finalize_hook = hook; }

void finalize_children() {
  if (finalize_hook) finalize_hook();
}

void become_child(const Identity& identity, const Session& session) {
  start_recording_exit_handlers();
  auto& st = state();
  st.self = identity;
  st.self.is_root = false;
  st.session = session;
  st.initialized = true;
  st.zygote_pid = 0;
  // A child inherits the context that started it: its own children start the same way unless it chooses otherwise
  // (it may still call set_start_method once).
  if (identity.method) st.default_method = *identity.method;
  st.method.reset();
  if (identity.parent_pid != ::getppid()) watch_logical_parent(identity.parent_pid);
}

void run_child(const std::function<void()>& body) {
  int code = 0;
  try {
    body();
  } catch (const ChildFailure& failure) {
    report_exception(failure.type, failure.message);
    code = failure.code;
  } catch (const std::exception& e) {
    report_exception(exception_type_name(), e.what());
    code = 1;
  } catch (...) {
    report_exception(exception_type_name(), "(not a std::exception)");
    code = 1;
  }
  finish_child();
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  ::_exit(code);
}

void finish_joined() {
  static std::atomic<bool> finished{false};
  if (state().joined && self_pid() == state().self.pid && !finished.exchange(true)) finish_child();
}

void shutdown_root() {
  auto& st = state();
  if (!st.initialized || !st.self.is_root || self_pid() != st.root_pid) return;
  try {
    finalize_children();
  } catch (...) {
  }
  {
    std::lock_guard lock(coordinator_mutex);
    if (the_coordinator) the_coordinator->stop();
  }
  // After the coordinator's last message: a program that exits with tracing on still gets a complete trace.
  trace::stop();
  if (st.zygote_pid > 0) {
    ::kill(st.zygote_pid, SIGKILL);
    ::waitpid(st.zygote_pid, nullptr, 0);
    st.zygote_pid = 0;
  }
  remove_session(st.session);
  st.initialized = false;
}

}  // namespace mpx::runtime

namespace mpx::runtime {

namespace {

struct JoinSpec {
  std::string session_id;
  std::string session_directory;
  std::string coordinator_endpoint;
  std::int64_t root_pid = 0;
  std::int64_t parent_pid = 0;
  std::string parent_name;
  std::string name;
  std::string keys;  // the session's key directory (security.hpp), empty if it has none
  std::uint32_t node = 0;  // the node it runs on (wire/actor_id.hpp)
  MSGPACK_DEFINE(session_id, session_directory, coordinator_endpoint, root_pid, parent_pid, parent_name, name, keys,
                 node);
};

constexpr const char* session_variable = "MPX_SESSION";
constexpr const char* actor_variable = "MPX_ACTOR";
constexpr const char* ready_variable = "MPX_READY_FD";
constexpr auto join_timeout = std::chrono::milliseconds(10000);

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

std::vector<std::string> join_variables(const JoinSpec& spec, const std::string& actor_payload, int ready_fd) {
  return {std::string(session_variable) + "=" + to_hex(encode(spec)),
          std::string(actor_variable) + "=" + to_hex(actor_payload),
          std::string(ready_variable) + "=" + std::to_string(ready_fd)};
}

[[noreturn]] void join_failed(const std::string& why) {
  std::fprintf(stderr, "mpx: cannot join the launcher's session: %s\n", why.c_str());
  ::_exit(1);
}

}  // namespace

std::vector<std::string> join_environment(const std::string& name, const std::string& actor_payload, int ready_fd) {
  const auto& st = state();
  return join_variables(JoinSpec{st.session.id, st.session.directory, st.session.coordinator_endpoint, st.root_pid,
                                 self_pid(), st.self.name, name, keys_directory(), st.session.node},
                        actor_payload, ready_fd);
}

std::vector<std::string> join_environment(const LaunchSpec& spec, int ready_fd) {
  return join_variables(JoinSpec{spec.session_id, spec.session_directory, spec.coordinator_endpoint, spec.root_pid,
                                 spec.parent_pid, spec.parent_name, spec.name, spec.keys, spec.node},
                        spec.payload, ready_fd);
}

bool join_session_from_environment() {
  const char* session = std::getenv(session_variable);
  if (!session) return false;
  const char* actor = std::getenv(actor_variable);
  const char* ready = std::getenv(ready_variable);
  const auto spec_bytes = from_hex(session);
  const auto payload = from_hex(actor ? actor : "");
  const int ready_fd = ready ? std::atoi(ready) : -1;
  ::unsetenv(session_variable);
  ::unsetenv(actor_variable);
  ::unsetenv(ready_variable);
  if (!spec_bytes || !payload) join_failed("MPX_SESSION or MPX_ACTOR is not hex");
  JoinSpec spec;
  try {
    spec = decode<JoinSpec>(*spec_bytes);  // bounded decode
  } catch (const Error& e) {
    join_failed(std::string("malformed MPX_SESSION: ") + e.what());
  }
  die_with_parent(static_cast<pid_t>(spec.parent_pid));
  auto& st = state();
  st.session = Session{spec.session_id, spec.session_directory, spec.coordinator_endpoint, std::string(), spec.keys};
  st.session.node = spec.node;
  st.root_pid = static_cast<pid_t>(spec.root_pid);
  st.self = Identity{};
  st.self.pid = self_pid();
  st.self.name = spec.name;
  st.self.parent_pid = static_cast<pid_t>(spec.parent_pid);
  st.self.parent_name = spec.parent_name;
  st.self.is_root = false;
  st.self.method = StartMethod::spawn;
  st.default_method = StartMethod::spawn;
  st.zygote_pid = 0;
  st.joined = true;
  st.actor_payload = *payload;
  st.initialized = true;
  // Ready means the coordinator answered: everything this actor does next can reach it.
  try {
    (void)Channel::current().request(wire::make(wire::Kind::ping, 0, 0, Object{}), join_timeout);
  } catch (const std::exception& e) {
    join_failed("the coordinator at " + spec.coordinator_endpoint + " did not answer: " + e.what());
  }
  // Runs when the main thread ends (main returns, or exit()): thread_local destructors run in reverse order of
  // construction, so this runs before the channel's own and can still flush what the actor posted last. (atexit
  // handlers would run after the channel is gone, and its unsent posts with it.)
  static thread_local struct FinishAtExit {
    ~FinishAtExit() { finish_joined(); }
  } finish_at_exit;
  (void)&finish_at_exit;
  if (ready_fd >= 0) {
    const char byte = 1;
    while (::write(ready_fd, &byte, 1) < 0 && errno == EINTR) {
    }
    ::close(ready_fd);
  }
  return true;
}

}  // namespace mpx::runtime

// Every __cxa_atexit registration in the program comes here first (this definition precedes the C library's), and goes
// on to the C library's own; see recorded_handlers above. Exported although the library is built hidden: the program's
// registrations must find this definition, not the C library's.
extern "C" __attribute__((visibility("default"))) int __cxa_atexit(void (*function)(void*), void* argument, void* dso_handle) {
  using Register = int (*)(void (*)(void*), void*, void*);
  static const auto next = reinterpret_cast<Register>(::dlsym(RTLD_NEXT, "__cxa_atexit"));
  if (next == nullptr) return -1;
  using namespace mpx::runtime;
  if (argument == nullptr && recording_pid.load() == ::getpid()) {
    std::lock_guard lock(recorded_handlers_mutex);
    recorded_handlers->push_back({function, argument});
  }
  return next(function, argument, dso_handle);
}
