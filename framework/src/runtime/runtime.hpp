// Per-process runtime state: who this process is, which session it belongs to, and its ZeroMQ context.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>
#include <zmq.hpp>

#include <mpx/process.hpp>

#include "runtime/session.hpp"

namespace mpx::runtime {

class Coordinator;

struct Identity {
  pid_t pid = 0;
  std::string name = "MainProcess";
  bool daemon = false;
  pid_t parent_pid = 0;  // 0 in the root process
  std::string parent_name;
  bool is_root = true;
  std::optional<StartMethod> method;  // how this process was started; unset in the root
};

struct State {
  bool initialized = false;
  Session session;         // in a worker: the endpoints it inherited
  Identity self;
  pid_t root_pid = 0;
  std::optional<StartMethod> method;  // set_start_method
  std::string executable;             // what spawn runs
  std::vector<std::string> argv;      // what spawn passes
  pid_t zygote_pid = 0;
};

State& state();

// This process's pid without a system call (glibc's getpid() is one): cached, and refreshed in every forked child.
pid_t self_pid() noexcept;

// Throws ProcessError if mpx::init has not run in this process.
void require_initialized();

// This process's ZeroMQ context. A forked child gets a fresh one: the parent's is abandoned, never touched.
zmq::context_t& context();

// The coordinator of this session. Only the root process runs it; it starts on first use.
void ensure_coordinator();
Coordinator* coordinator_if_running();

// The services layer's installer: registers every service's handlers on a new coordinator before it starts.
void set_service_installer(void (*installer)(Coordinator&));

// Runs on the thread that ends a child process, before its last messages are flushed (a consumer settling what it
// holds, for one). Hooks are plain functions, registered once.
void add_child_exit_hook(void (*hook)());

// Hooks the API layer installs: what a process does before it exits (terminate daemon children, join the rest).
void set_finalize_children(void (*hook)());
void finalize_children();

// Runs `body` as the whole life of a child process: reports an escaping exception to the coordinator and to stderr,
// finalizes the child's own children, flushes stdio and exits (0, or 1 after an exception). Never returns.
[[noreturn]] void run_child(const std::function<void()>& body);

// Called at the top of every new child process (fork, forkserver, or spawn) before any user code runs.
void become_child(const Identity& identity, const Session& session);

// Exit of the root process: stop the coordinator and the zygote, remove the session directory.
void shutdown_root();

}  // namespace mpx::runtime
