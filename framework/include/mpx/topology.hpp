/// \file
/// mpx/topology.hpp — a whole system of actors described in one TOML file: shared objects, actors (registered
/// functions or any program that links mpx), start order, and an Erlang/OTP-style supervisor that restarts them.
///
///   mpx::Topology t = mpx::Topology::load("pipeline.toml");   // validates the whole file, or throws TopologyError
///   int status = t.run();                                     // starts, supervises, stops on SIGINT/SIGTERM
///
/// Inside an actor, mpx::this_actor() gives its name, replica index, args and the shared objects it was given:
///   auto jobs = mpx::this_actor().queue<std::string>("jobs");
/// The file format is documented in examples/topologies/README.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <mpx/errors.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>
#include <mpx/pipe.hpp>
#include <mpx/pool.hpp>
#include <mpx/queue.hpp>
#include <mpx/sync.hpp>
#include <mpx/topology_status.hpp>  // TopologyExit, TopologyStatus and its parts, ActorObjectEntry

namespace mpx {

namespace detail {
struct TopologyState;
}

MPX_API int run_main(int argc, char** argv);

/// A system of actors loaded from a TOML file (mpx's own; Python has none): shared objects, actors and an
/// Erlang/OTP-style supervisor. mpx-run runs one; an application can also load() and run() it. Move-only.
class MPX_API Topology {
 public:
  /// Reads and validates a file. Every problem throws TopologyError naming the file, line, column, key and what was
  /// expected. Relative `exec` paths are resolved against the file's directory.
  static Topology load(const std::string& path);
  /// The same for a string; `source` names it in error messages.
  static Topology parse(std::string_view text, std::string source = "<string>");

  /// The validated plan, for humans: objects, actors in start order, supervision.
  std::string plan() const;

  /// Creates the shared objects and starts the actors in order (each after the ones it names in `after` are ready),
  /// then returns. Throws TopologyError if an actor fails to start; what was started is stopped first.
  void start();
  /// Blocks until the topology has stopped (all actors finished, escalation, or stop()); returns the exit status.
  TopologyExit wait();
  /// The same, for at most `timeout`: nullopt if it is still running then.
  [[nodiscard]] std::optional<TopologyExit> wait_for(std::chrono::duration<double> timeout);
  /// Stops the actors in reverse start order: SIGTERM, then SIGKILL after `timeout` (default: the file's
  /// coordinator.shutdown_timeout). Returns the exit status (ok, or killed if one had to be killed).
  TopologyExit stop(std::optional<std::chrono::duration<double>> timeout = std::nullopt);
  /// start(), then wait(); SIGINT and SIGTERM stop it gracefully. Returns the exit status.
  TopologyExit run();
  TopologyStatus status() const;  ///< A snapshot of every actor, queue and pool.
  /// What happened, for humans: restarts, escalation, how the stop went. Empty while nothing noteworthy happened.
  std::string report() const;

  /// The coordinator endpoint the actors were given (after start()).
  std::string endpoint() const;
  /// Every shared object of the topology, by name, for the process that runs it (after start()): how an embedding
  /// application feeds and drains it, e.g. t.objects().queue<std::string>("jobs").put("x").
  const class ActorContext& objects() const;

  Topology(Topology&&) noexcept;  ///< Takes over a topology.
  Topology& operator=(Topology&&) noexcept;  ///< Takes over a topology.
  ~Topology();  ///< stops what is still running

 private:
  explicit Topology(std::shared_ptr<detail::TopologyState> state);
  friend int run_main(int argc, char** argv);
  std::shared_ptr<detail::TopologyState> state_;
};

/// What an actor started by a topology knows about itself. Throws ProcessError in a process that is not one.
class MPX_API ActorContext {
 public:
  const std::string& name() const noexcept { return name_; }  ///< The actor's name.
  int replica() const noexcept { return replica_; }  ///< This replica's index, 0 .. replicas()-1.
  int replicas() const noexcept { return replicas_; }  ///< How many replicas of the actor the file asks for.
  /// The actor's `args` table (a map; empty when the file gives none).
  const Object& args() const noexcept { return args_; }

  ///@{
  /// Handles on the shared objects the actor was given, by name. A name it was not given, or one of another type,
  /// throws std::invalid_argument naming it and what the actor has.
  template <Serializable T>
  Queue<T> queue(std::string_view name) const {
    return Queue<T>(adopt, ref(name, "queue"));
  }
  template <Serializable T>
  JoinableQueue<T> joinable_queue(std::string_view name) const {
    return JoinableQueue<T>(adopt, ref(name, "joinable_queue"));
  }
  Event event(std::string_view name) const { return Event(adopt, ref(name, "event")); }
  Semaphore semaphore(std::string_view name) const { return Semaphore(adopt, ref(name, "semaphore")); }
  /// A semaphore declared with `bounded = true`.
  BoundedSemaphore bounded_semaphore(std::string_view name) const {
    return BoundedSemaphore(adopt, ref(name, "bounded_semaphore"));
  }
  Lock lock(std::string_view name) const { return Lock(adopt, ref(name, "lock")); }
  /// A lock declared with `recursive = true`.
  RLock rlock(std::string_view name) const { return RLock(adopt, ref(name, "rlock")); }
  Barrier barrier(std::string_view name) const { return Barrier(adopt, ref(name, "barrier")); }
  ///@}
  /// An attached handle on a topology pool: its workers run the program that runs the topology, so tasks must be
  /// functions of that program (a task actor's are). close()/terminate() detach this handle only. Each call attaches
  /// a new handle (a socket and a result thread): keep the one you use.
  Pool pool(std::string_view name) const { return Pool(adopt, ref(name, "pool")); }
  /// One end (0 or 1) of a pipe; this process becomes the holder of that end.
  Connection connection(std::string_view name, int end) const;
  /// The names of the objects this actor was given.
  std::vector<std::string> objects() const;

  /// Internal: one shared object the actor was given, as the supervisor sends it.
  using Entry = ActorObjectEntry;
  /// Internal: built by mpx::init in an actor.
  ActorContext(std::string name, int replica, int replicas, Object args, std::vector<Entry> objects);

 private:
  ObjectRef ref(std::string_view name, std::string_view type, std::size_t index = 0) const;
  std::string name_;
  int replica_ = 0;
  int replicas_ = 1;
  Object args_;
  std::vector<Entry> objects_;
};

/// True in a process a topology started; this_actor() throws ProcessError elsewhere. A `task` actor is the
/// application's own program started again: register its functions (mpx::register_actor) before mpx::init, which
/// runs the task and exits there.
MPX_API bool is_actor();
MPX_API const ActorContext& this_actor();  ///< This actor's context; ProcessError in a process no topology started.

/// mpx-run's command line in one call, for an application whose `task` actors are registered functions:
///   int main(int argc, char** argv) { mpx::init(argc, argv); mpx::register_actor("worker", worker);
///                                     return mpx::run_main(argc, argv); }
/// Accepts `FILE`, `--check`, `--status-every SECONDS`; returns the exit status. Supervision events (start, readiness,
/// exit, restart, escalation, stop) go to stderr as they happen, each stamped with the seconds since the start.
MPX_API int run_main(int argc, char** argv);

}  // namespace mpx
