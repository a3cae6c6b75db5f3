#include "runtime/runtime.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <atomic>
#include <mutex>
#include <pthread.h>
#include <thread>

#include <cxxabi.h>
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <sys/wait.h>

#include "runtime/channel.hpp"
#include "runtime/coordinator.hpp"
#include "runtime/launcher.hpp"
#include "trace/bus.hpp"

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
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    auto& channel = Channel::current();
    auto reply = channel.request(wire::make(wire::Kind::process_error, 0, 0,
                                            std::make_tuple(static_cast<std::int64_t>(::getpid()), type, message,
                                                            std::string(host))),
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
    while (::poll(&p, 1, -1) < 0) {
    }
    ::kill(::getpid(), SIGKILL);
  }).detach();
}

}  // namespace

}  // namespace mpx::runtime

namespace mpx {

std::string demangle(const char* mangled) {
  int status = 0;
  char* readable = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = (status == 0 && readable) ? readable : mangled;
  std::free(readable);
  return out;
}

}  // namespace mpx

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
  the_coordinator = new Coordinator(context(), st.session.coordinator_endpoint);
  if (service_installer) service_installer(*the_coordinator);
  the_coordinator->start();
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
  auto& st = state();
  st.self = identity;
  st.self.is_root = false;
  st.session = session;
  st.initialized = true;
  st.zygote_pid = 0;
  if (identity.parent_pid != ::getppid()) watch_logical_parent(identity.parent_pid);
}

void run_child(const std::function<void()>& body) {
  int code = 0;
  try {
    body();
  } catch (const std::exception& e) {
    report_exception(exception_type_name(), e.what());
    code = 1;
  } catch (...) {
    report_exception(exception_type_name(), "(not a std::exception)");
    code = 1;
  }
  try {
    finalize_children();
  } catch (...) {
  }
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
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  ::_exit(code);
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
