// The process launcher: fork, spawn (posix_spawn of the executable), and forkserver (a single-threaded zygote forked
// inside mpx::init before any thread exists). Spawn and forkserver children receive a LaunchSpec and rebuild the call
// from its function identity; fork children run the call from their copy of memory.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <sys/types.h>

#include <mpx/function.hpp>

#include "runtime/runtime.hpp"

namespace mpx::runtime {

struct LaunchSpec {
  std::string session_id;
  std::string session_directory;
  std::string coordinator_endpoint;
  std::string forkserver_path;
  std::int64_t parent_pid = 0;
  std::string parent_name;
  std::int64_t root_pid = 0;
  std::string name;
  bool daemon = false;
  std::uint8_t method = 0;  // StartMethod
  FunctionId function;
  std::string payload;  // the encoded arguments, or the encoded ProcessClass object
  std::string keys;     // the session's key directory (security.hpp), empty if it has none
  std::uint32_t node = 0;  // the node it runs on (wire/actor_id.hpp); an agent sets it for the processes it starts
  // A topology's exec actor on a node: its argv (run instead of `function`; `payload` is its actor payload), and how
  // long it may take to join the session.
  std::vector<std::string> exec;
  std::int64_t ready_timeout_ms = 0;
  MSGPACK_DEFINE(session_id, session_directory, coordinator_endpoint, forkserver_path, parent_pid, parent_name, root_pid, name,
                 daemon, method, function, payload, keys, node, exec, ready_timeout_ms);
};

struct Launched {
  pid_t pid = 0;
  int pidfd = -1;      // for signals, and the sentinel of fork and spawn children
  int status_fd = -1;  // forkserver only: the zygote writes the wait status here when the child ends (the sentinel)
};

Launched launch_fork(const Identity& child, const std::function<void()>& body);
// Starts the program at `path` with `argv` and this process's environment, less the variables by which a launcher
// makes a program join a session (join_environment's, MPX_LAUNCH_FD), plus `extra`; in a process group of its own
// (a Ctrl-C at the terminal reaches its launcher, which stops it in order) with default signal handling; `keep_fd`
// stays open in it. Throws std::system_error naming the program if it cannot be started.
pid_t spawn_program(const std::string& path, const std::vector<std::string>& argv, const std::vector<std::string>& extra,
                    int keep_fd);
Launched launch_spawn(const LaunchSpec& spec);
Launched launch_forkserver(const LaunchSpec& spec);

// Forks the zygote; call from init, before any thread exists. Returns its pid.
pid_t start_zygote(const Session& session);
// In the root, once the zygote has died: starts a new one listening at the session's forkserver path, as a fresh exec
// of the program (the root has threads by now, so it cannot fork one) and records its pid in state().zygote_pid.
void replace_zygote(const Session& session);
// In a program started by replace_zygote (MPX_FORKSERVER is set): serves as the zygote and never returns. Call from
// init, before any thread exists; returns at once otherwise.
void take_forkserver_role();

// In a process started by spawn: the spec from the inherited descriptor named by MPX_LAUNCH_FD, if there is one.
std::optional<LaunchSpec> take_spawned_spec();
// Runs a spawn or forkserver child to the end. Never returns.
[[noreturn]] void run_launch(const LaunchSpec& spec);
// Dies with its parent: PR_SET_PDEATHSIG, plus a getppid() check for a parent that died before the prctl.
void die_with_parent(pid_t expected_parent);

// The exit code of a child whose wait status nobody can read (its forkserver died, or it was not the reader's child):
// Python's value (popen_forkserver.poll).
inline constexpr int forkserver_lost_exitcode = 255;

// Python's exitcode from a wait status: N for exit(N), -N for a signal.
int exitcode_from_wait_status(int status) noexcept;
// Waits for this process's child named by `pidfd` to end and reaps it: its exit code (-N for signal N), or nothing if
// it is not this process's child (or was reaped already).
std::optional<int> reap_child(int pidfd) noexcept;
// Forkserver: blocks until the zygote reports the child's wait status on `status_fd`; nullopt if the zygote is gone.
std::optional<int> read_forkserver_status(int status_fd);

int pidfd_open(pid_t pid) noexcept;

}  // namespace mpx::runtime
