// Per-process runtime state: who this process is, which session it belongs to, and its ZeroMQ context.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>
#include <zmq.hpp>

#include <mpx/start_method.hpp>

#include "runtime/session.hpp"

namespace mpx::runtime {

struct LaunchSpec;  // runtime/launcher.hpp

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
  // The start method when none was set: forkserver, except in a program that joined a launcher's session (whose
  // forkserver runs the launcher's program, not this one): spawn there.
  StartMethod default_method = StartMethod::forkserver;
  bool joined = false;        // started by a topology launcher: an actor of its session, not a root
  std::string actor_payload;  // what that launcher passed for this actor (MPX_ACTOR), for the topology layer
};

State& state();

// This process's pid without a system call (glibc's getpid() is one): cached, and refreshed in every forked child.
pid_t self_pid() noexcept;
// This process's actor id (wire/actor_id.hpp): its node and pid, what every message it sends names as the sender.
std::uint64_t self_actor() noexcept;
// This host's name (gethostname): what error reports and the nodes table say a process ran on.
std::string host_name();

// Throws ProcessError if mpx::init has not run in this process.
void require_initialized();

// This process's ZeroMQ context. A forked child gets a fresh one: the parent's is abandoned, never touched.
zmq::context_t& context();

// The coordinator of this session. Only the root process runs it; it starts on first use.
void ensure_coordinator();
Coordinator* coordinator_if_running();
// Where this process's side door is (PROTOCOL.md, "The side door"), MPX_SIDE_DOOR not being "0": the coordinator's,
// in the session directory, when the coordinator is on this host (an ipc endpoint); on a node, its agent's relay
// (node_relay_path); empty otherwise.
std::string side_door_path();
// The node relay's socket file (runtime/node_relay.hpp) in this session's directory: on a node, the agent's.
std::string node_relay_path();

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
// Thrown out of run_child's body: reported as an escaping exception of `type` with `message`, and the process exits
// with `code` instead of 1, so that whoever waits for it can tell this failure from any other.
struct ChildFailure {
  int code;
  std::string type;
  std::string message;
};

// Called at the top of every new child process (fork, forkserver, or spawn) before any user code runs.
void become_child(const Identity& identity, const Session& session);

// Exit of the root process: stop the coordinator and the zygote, remove the session directory.
void shutdown_root();

// Sets the endpoint the coordinator binds (tcp://host:port, tcp://127.0.0.1:* or ipc://path) instead of the session's
// ipc default. Root process only, before the coordinator has started; throws ProcessError otherwise. Once it has
// started, state().session.coordinator_endpoint is the endpoint it actually bound (the port chosen for `*`).
// A tcp:// endpoint needs keys (security.hpp): without them it throws ValueError saying how to make them.
void set_coordinator_endpoint(std::string endpoint);
// Chooses the key directory of a tcp:// coordinator (mpx::set_keys), instead of MPX_KEYS. Root process only, before
// the coordinator has started (ProcessError otherwise); ValueError naming what is missing from the directory.
void set_keys(const std::string& directory);

// Joining a running session. A launcher (mpx::Topology) starts any program that links mpx with these variables:
//   MPX_SESSION   hex of the msgpack JoinSpec [session_id, session_directory, coordinator_endpoint, root_pid,
//                 parent_pid, parent_name, name, keys, node]
//   MPX_ACTOR     opaque to the runtime; kept in state().actor_payload for the topology layer
//   MPX_READY_FD  a descriptor to write one byte on once the coordinator answered; then it is closed
// join_session_from_environment() (called by mpx::init) makes this process an actor of that session instead of the
// root of a new one, and returns true; it returns false when MPX_SESSION is unset. The variables are removed, so the
// process's own children do not join again.
bool join_session_from_environment();
// The environment entries that make a program started by this process join its session as `name`.
std::vector<std::string> join_environment(const std::string& name, const std::string& actor_payload, int ready_fd);
// The same for an exec actor a node's agent starts: the session as `spec` gives it (the agent's host filled in).
std::vector<std::string> join_environment(const LaunchSpec& spec, int ready_fd);
// Exit of a joined process: what run_child does after the body (finalize children, exit hooks, flush).
void finish_joined();

}  // namespace mpx::runtime
