// The supervisor: one thread that starts a topology's actors in order, watches their deaths through pidfds (and
// their readiness through a pipe each), restarts them per restart type and strategy, escalates when restarts exceed
// max_restarts within the window, and stops them in reverse start order. It never sleeps to wait: every wait is a
// poll() on those descriptors and one eventfd for commands.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include <mpx/function.hpp>
#include <mpx/topology_status.hpp>

#include "topology/config.hpp"

namespace mpx::topology {

class Supervisor {
 public:
  // `objects`: every shared object by name, as actors receive them.
  Supervisor(Config config, std::map<std::string, ActorObjectEntry> objects);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts the thread and the actors; returns once every actor is ready. Throws TopologyError if one could not
  // start (after stopping the others).
  void start();
  // A descriptor that, once readable, makes the supervisor stop the topology (the signal handlers' self-pipe).
  void set_stop_fd(int fd) { stop_fd_ = fd; }
  // Called at once, from the supervisor's thread, for each event as it happens (a start, readiness, an exit, a
  // restart, an escalation, a stop): one line of text, without a newline. Set before start().
  using EventSink = std::function<void(const std::string&)>;
  void set_event_sink(EventSink sink) { sink_ = std::move(sink); }
  // Asks for a stop (timeout < 0: the config's) and waits for the end.
  TopologyExit stop(double timeout_s);
  // Waits for the end; nullopt if `timeout_s` (>= 0) passed first.
  std::optional<TopologyExit> wait(double timeout_s);
  std::vector<ActorStatus> actors() const;
  std::string state() const;
  std::string report() const;
  // What a task actor placed on another node runs there: a function of this program (the api's) that takes the
  // actor's payload and runs its registered task. Set before a topology with placed actors starts.
  static void set_task_runner(Trampoline runner);

 private:
  enum class State { idle, pending, starting, running, stopping, exited, failed, stopped };
  struct Child {
    std::size_t actor = 0;
    int replica = 0;
    std::string name;
    State state = State::idle;
    pid_t pid = 0;       // on its node's host
    std::uint64_t remote = 0;  // nonzero for an actor on another node: its actor id; pidfd is then its exit pipe
    int pidfd = -1;
    int ready_fd = -1;
    bool ready = false;
    bool ready_timed_out = false;  // killed for not signalling readiness in time
    int restarts = 0;
    std::chrono::steady_clock::time_point started_at;
    std::chrono::steady_clock::time_point ended_at;
    std::chrono::steady_clock::time_point ready_deadline;
    std::optional<int> last_exitcode;
  };

  void run();
  void launch(Child& c);
  // A task actor on another node: started by that node's agent, its end told by the coordinator.
  void launch_remote(Child& c, std::uint32_t node);
  std::string payload_of(const Child& c) const;
  // The node a spread actor starts on now: the alive nodes in turn, the coordinator's host included.
  std::uint32_t spread_node();
  void signal(Child& c, int sig);
  bool dependencies_ready(const Child& c) const;
  void launch_pending();
  void on_ready(Child& c);
  void on_death(Child& c);
  // Kills the children that are still not ready at their deadline; returns the poll timeout until the next one.
  int enforce_ready_deadlines();
  int reap(Child& c);
  // Terminates the given children in reverse of the order given: SIGTERM, SIGKILL after the timeout.
  void terminate(const std::vector<std::size_t>& children, double timeout_s);
  void stop_all(double timeout_s);
  void finish(TopologyExit status);
  bool any_live() const;
  // An event: passed to the sink, and kept for report() when `noteworthy`. Called without mutex_ held.
  void event(const std::string& line, bool noteworthy);
  static std::string state_name(State s);

  Config config_;
  std::map<std::string, ActorObjectEntry> objects_;
  std::vector<Child> children_;  // in start order
  std::thread thread_;
  int wake_fd_ = -1;
  int stop_fd_ = -1;
  EventSink sink_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool started_ = false;       // every actor was ready once
  bool start_failed_ = false;
  bool initial_start_ = true;  // deaths before readiness during the first start fail the start
  bool stop_requested_ = false;
  double stop_timeout_s_ = -1;
  bool stopping_ = false;
  bool killed_any_ = false;
  std::optional<TopologyExit> result_;
  std::string report_;
  std::string topology_state_ = "loaded";
  std::deque<std::chrono::steady_clock::time_point> restart_times_;
  std::size_t spread_next_ = 0;
};

}  // namespace mpx::topology
