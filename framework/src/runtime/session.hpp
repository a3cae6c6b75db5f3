// A session: one root process (the first to call mpx::init), its coordinator, and every process it starts.
// Its files live in a private directory named with the root pid, so a later session can tell a dead one's leftovers.
#pragma once

#include <cstdint>
#include <string>
#include <sys/types.h>

namespace mpx::runtime {

struct Session {
  std::string id;               // "<root pid>-<random hex>"
  std::string directory;        // mode 0700; holds the ipc socket files
  std::string coordinator_endpoint;
  std::string forkserver_path;  // the zygote's unix socket
  std::string keys;             // the key directory for a tcp:// coordinator (security.hpp), if one was chosen
  std::uint32_t node = 0;       // the node this process runs on: 0 on the coordinator's host (wire/actor_id.hpp)
};

// Creates the session directory under $TMPDIR (or /tmp when $TMPDIR is unset or too long for a socket path) and
// first removes directories left by sessions whose root process is dead. Then starts the session's janitor, which
// removes the session (remove_session) as soon as the calling process, its root, has died, however it died. Call it
// before any thread exists (it forks).
Session create_session();
// Removes the session directory and everything in it, and unlinks the session's shared memory segments.
void remove_session(const Session& session);
// The directory that holds session directories ($TMPDIR if usable, else /tmp).
std::string session_parent_directory();
// Removes mpx-<pid>-* directories whose pid no longer exists, with their shared memory segments; returns how many
// directories were removed.
int remove_dead_sessions(const std::string& parent);

}  // namespace mpx::runtime
