/// \file
/// mpx/metrics_snapshot.hpp — what a metrics snapshot holds: mpx::Metrics and its per-object records. mpx/metrics.hpp
/// includes it; it stands alone because the coordinator (the runtime floor) fills these without the metrics API.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <array>
#include <cstdint>
#include <string_view>
#include <string>
#include <vector>

#include <mpx/object.hpp>

namespace mpx {

/// One Queue, SimpleQueue or JoinableQueue: mpx_queue_* in the exposition.
struct QueueMetrics {
  std::uint64_t id = 0;  ///< the object's id in the session
  std::string name;             ///< the name a topology gave it ("jobs"), else the id in decimal
  std::uint64_t depth = 0;      ///< items in it (lent to a consumer and not yet returned by get() included)
  std::uint64_t puts = 0;       ///< items put since it was made
  std::uint64_t gets = 0;       ///< items that left it: puts minus depth (never less than an earlier snapshot said)
  std::uint64_t waiters = 0;    ///< blocked getters, putters and joiners
  MSGPACK_DEFINE(id, name, depth, puts, gets, waiters);
};

/// One Lock or RLock: mpx_lock_*.
struct LockMetrics {
  std::uint64_t id = 0;  ///< the object's id in the session
  std::string name;                ///< as QueueMetrics::name (Lock and RLock)
  std::uint64_t acquisitions = 0;  ///< successful acquires (a recursive re-acquire included)
  std::uint64_t waits = 0;         ///< acquires that had to wait because another process held it
  std::uint64_t waiters = 0;       ///< processes waiting for it now
  MSGPACK_DEFINE(id, name, acquisitions, waits, waiters);
};

/// One Semaphore or BoundedSemaphore: mpx_semaphore_*.
struct SemaphoreMetrics {
  std::uint64_t id = 0;            ///< the object's id in the session
  std::string name;                ///< as QueueMetrics::name
  std::uint64_t value = 0;         ///< units free now (get_value())
  std::uint64_t acquisitions = 0;  ///< successful acquires
  std::uint64_t waits = 0;         ///< acquires that had to wait because no unit was free
  std::uint64_t waiters = 0;       ///< processes waiting for a unit now
  MSGPACK_DEFINE(id, name, value, acquisitions, waits, waiters);
};

/// One Event: mpx_event_*.
struct EventMetrics {
  std::uint64_t id = 0;       ///< the object's id in the session
  std::string name;           ///< as QueueMetrics::name
  bool set = false;           ///< the flag now (is_set())
  std::uint64_t sets = 0;     ///< set() calls
  std::uint64_t waits = 0;    ///< wait() calls that blocked because the flag was clear
  std::uint64_t waiters = 0;  ///< processes waiting for the flag now
  MSGPACK_DEFINE(id, name, set, sets, waits, waiters);
};

/// One Condition: mpx_condition_*.
struct ConditionMetrics {
  std::uint64_t id = 0;        ///< the object's id in the session
  std::string name;            ///< as QueueMetrics::name
  std::uint64_t lock = 0;      ///< the id of its Lock or RLock (whose acquisitions are in LockMetrics)
  std::uint64_t waits = 0;     ///< wait() calls
  std::uint64_t notified = 0;  ///< waiters woken by notify() or notify_all() (not those whose timeout passed)
  std::uint64_t waiters = 0;   ///< processes waiting for a notify now
  MSGPACK_DEFINE(id, name, lock, waits, notified, waiters);
};

/// One Barrier: mpx_barrier_*.
struct BarrierMetrics {
  std::uint64_t id = 0;       ///< the object's id in the session
  std::string name;           ///< as QueueMetrics::name
  std::uint64_t parties = 0;  ///< parties it needs
  std::uint64_t waiting = 0;  ///< parties waiting at it now (n_waiting())
  std::uint64_t passes = 0;   ///< times every party arrived and all were released
  std::uint64_t breaks = 0;   ///< times it broke (a timeout, abort(), a failed action, a party's death)
  bool broken = false;        ///< broken now (until reset())
  MSGPACK_DEFINE(id, name, parties, waiting, passes, breaks, broken);
};

/// One Pool (or ProcessPoolExecutor): mpx_pool_*.
struct PoolMetrics {
  std::uint64_t id = 0;  ///< the object's id in the session
  std::string name;                   ///< as QueueMetrics::name
  std::uint64_t queued = 0;           ///< tasks submitted, not yet taken by a worker
  std::uint64_t running = 0;          ///< tasks a worker holds
  std::uint64_t done = 0;             ///< tasks whose result came back (a task that raised included)
  std::uint64_t failed = 0;           ///< tasks given up after max_retries worker deaths (mpx::WorkerLost)
  std::uint64_t retried = 0;          ///< tasks put back because the worker that held them died
  std::uint64_t worker_restarts = 0;  ///< worker exits its owner reported while the pool was open (it starts another)
  MSGPACK_DEFINE(id, name, queued, running, done, failed, retried, worker_restarts);
};

/// The states of an actor (ActorMetrics::state, the `state` label of mpx_actor_state), in the order of its life:
/// - starting: a supervisor (mpx-run, Topology) started it and it has not signalled readiness yet;
/// - restarting: as starting, for a process that replaces one of the same name that ended (a supervisor's restart);
/// - running: it said hello (it called mpx::init), or, for a supervised actor, it became ready;
/// - stopping: its supervisor is stopping it (SIGTERM sent);
/// - exited: it ended normally (exit code 0, or stopped by its supervisor);
/// - failed: it ended with an error: its target raised, or its supervisor saw a nonzero exit code or a signal.
inline constexpr std::array<std::string_view, 6> actor_states{"starting", "restarting", "running",
                                                              "stopping", "exited",     "failed"};

/// One process of the session (an actor): mpx_actor_*.
struct ActorMetrics {
  std::int64_t pid = 0;  ///< its process id
  std::string name;                  ///< from its hello: "Process-1", a topology actor's "worker[0]", ...
  bool alive = true;                 ///< false: it exited (the last few dead actors are kept, then forgotten)
  std::uint64_t messages_in = 0;     ///< messages the coordinator handled from it
  std::uint64_t messages_out = 0;    ///< replies and pushes the coordinator sent it
  std::uint64_t restarts = 0;        ///< earlier actors of the same name that exited (a supervisor's restarts)
  std::string state;                 ///< one of actor_states
  MSGPACK_DEFINE(pid, name, alive, messages_in, messages_out, restarts, state);
};

/// The upper bounds, in seconds, of the buckets of the per-kind handling time (mpx_coordinator_kind_latency_seconds,
/// a Prometheus histogram). A handler's time is mostly microseconds; the last bucket, +Inf, is KindLatency::count.
inline constexpr std::array<double, 12> kind_latency_bounds{1e-6,   2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5,
                                                            1e-4,   2.5e-4, 5e-4, 1e-3, 1e-2,   1e-1};

/// How many messages of one kind the coordinator handled, and the time it spent on them.
struct KindLatency {
  std::string kind;          ///< "queue_put", ...
  std::uint64_t count = 0;   ///< messages of this kind handled
  double seconds = 0;        ///< time spent handling them, in total
  /// Cumulative, one per kind_latency_bounds entry: buckets[i] counts the messages handled within
  /// kind_latency_bounds[i] seconds (a Prometheus bucket `le`).
  std::vector<std::uint64_t> buckets;
  MSGPACK_DEFINE(kind, count, seconds, buckets);
};

/// A snapshot of every counter and gauge the coordinator keeps: what mpx::metrics() returns.
struct Metrics {
  std::uint64_t messages = 0;          ///< messages the coordinator handled
  std::uint64_t malformed = 0;         ///< messages it rejected (bad envelope, unknown kind, bad body)
  std::vector<KindLatency> kinds;      ///< the kinds it has handled at least once
  std::vector<QueueMetrics> queues;  ///< every queue the coordinator keeps
  std::vector<LockMetrics> locks;  ///< every Lock and RLock
  std::vector<PoolMetrics> pools;  ///< every pool
  std::vector<ActorMetrics> actors;    ///< live ones and the last few dead ones
  std::vector<SemaphoreMetrics> semaphores;  ///< every Semaphore and BoundedSemaphore
  std::vector<EventMetrics> events;          ///< every Event
  std::vector<ConditionMetrics> conditions;  ///< every Condition
  std::vector<BarrierMetrics> barriers;      ///< every Barrier
  /// tcp connections refused at the CURVE handshake: no CURVE, a wrong coordinator key, or a client key that the
  /// allow list does not hold (its ZAP handler's refusals)
  std::uint64_t denied = 0;
  /// state-changing messages refused because their connection was not authenticated (a CURVE coordinator only)
  std::uint64_t unauthenticated = 0;
  /// messages refused because their sender is not an actor of the node their connection's key is bound to
  std::uint64_t forged = 0;
  MSGPACK_DEFINE(messages, malformed, kinds, queues, locks, pools, actors, semaphores, events, conditions, barriers,
                 denied, unauthenticated, forged);
};

}  // namespace mpx
