/// \file
/// mpx/metrics_snapshot.hpp — what a metrics snapshot holds: mpx::Metrics and its per-object records. mpx/metrics.hpp
/// includes it; it stands alone because the coordinator (the runtime floor) fills these without the metrics API.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstdint>
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

/// One process of the session (an actor): mpx_actor_*.
struct ActorMetrics {
  std::int64_t pid = 0;  ///< its process id
  std::string name;                  ///< from its hello: "Process-1", a topology actor's "worker[0]", ...
  bool alive = true;                 ///< false: it exited (the last few dead actors are kept, then forgotten)
  std::uint64_t messages_in = 0;     ///< messages the coordinator handled from it
  std::uint64_t messages_out = 0;    ///< replies and pushes the coordinator sent it
  std::uint64_t restarts = 0;        ///< earlier actors of the same name that exited (a supervisor's restarts)
  MSGPACK_DEFINE(pid, name, alive, messages_in, messages_out, restarts);
};

/// How many messages of one kind the coordinator handled, and the time it spent on them.
struct KindLatency {
  std::string kind;          ///< "queue_put", ...
  std::uint64_t count = 0;   ///< messages of this kind handled
  double seconds = 0;        ///< time spent handling them, in total
  MSGPACK_DEFINE(kind, count, seconds);
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
  MSGPACK_DEFINE(messages, malformed, kinds, queues, locks, pools, actors);
};

}  // namespace mpx
