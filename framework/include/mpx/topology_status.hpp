/// \file
/// mpx/topology_status.hpp — how a topology run ended, a snapshot of its actors, queues and pools, and how an actor is
/// told its shared objects. mpx/topology.hpp includes it; it stands alone because the supervisor (the topology floor)
/// fills these without the Topology API.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include <mpx/object.hpp>

namespace mpx {

/// How a topology run ended: mpx-run's exit status.
enum class TopologyExit : int {
  ok = 0,         ///< every actor finished normally, or a requested stop ended them all within the timeout
  failed = 1,     ///< an actor could not start, or one that is not restarted ended abnormally
  invalid = 2,    ///< the file (or the command line) is invalid; nothing was started
  escalated = 3,  ///< restarts exceeded max_restarts within the window: the supervisor stopped the topology
  killed = 4,     ///< a stop had to SIGKILL an actor that outlived the shutdown timeout
};

/// One actor replica in TopologyStatus.
struct ActorStatus {
  std::string name;          ///< "worker" for one replica, "worker[2]" for replica 2 of several
  std::string actor;         ///< the actor's name in the file
  int replica = 0;  ///< replica index, 0 .. replicas-1
  pid_t pid = 0;             ///< its last process (also once it ended; `state` tells); 0 if it never started
  std::string state;         ///< "starting", "running", "restarting", "stopping", "exited", "failed", "stopped"
  int restarts = 0;  ///< how many times the supervisor restarted it
  double uptime_s = 0;       ///< since its last start; once it ended, how long its last run lasted
  std::optional<int> last_exitcode;  ///< Python's convention: N for exit(N), -N for signal N
};

/// One queue of the topology in TopologyStatus.
struct QueueStatus {
  std::string name;  ///< the queue's name in the file
  std::size_t depth = 0;  ///< items in it now
  std::size_t maxsize = 0;  ///< 0: unbounded
};

/// A topology pool, as its scheduler counts it (pool_stats).
struct PoolStatus {
  std::string name;  ///< the pool's name in the file
  std::size_t processes = 0;  ///< its configured number of workers
  std::size_t queued = 0;   ///< tasks (chunks) waiting for a worker
  std::size_t running = 0;  ///< tasks held by workers now
  std::size_t workers = 0;  ///< workers the scheduler has seen
  std::vector<pid_t> pids;  ///< the current workers
};

/// A snapshot of a running topology: Topology::status(), and what `mpx-run --status-every` prints.
struct TopologyStatus {
  std::string state;  ///< "loaded", "starting", "running", "stopping", "stopped"
  std::vector<ActorStatus> actors;  ///< in start order
  std::vector<QueueStatus> queues;  ///< the topology's queues
  std::vector<PoolStatus> pools;  ///< the topology's pools
};

/// Internal: one shared object an actor was given, as the supervisor sends it (ActorContext::Entry).
struct ActorObjectEntry {
  std::string name;  ///< the object's name in the file
  std::string type;  ///< its type, e.g. "queue", "pipe"
  std::vector<std::uint64_t> ids;  ///< its object id(s) at the coordinator (a pipe has two ends)
  MSGPACK_DEFINE(name, type, ids);
};

}  // namespace mpx
