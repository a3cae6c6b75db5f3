// The topology file's model: what toml++ parsed, validated completely (types, references, start order) before
// anything is started. Every error names the source, line, column, key and what was expected.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <mpx/object.hpp>

namespace mpx::topology {

enum class Restart { permanent, transient, temporary };
enum class Strategy { one_for_one, one_for_all, rest_for_one };

std::string_view to_string(Restart r) noexcept;
std::string_view to_string(Strategy s) noexcept;

struct ObjectSpec {
  std::string name;
  std::string type;           // queue, joinable_queue, event, semaphore, lock, barrier, pipe, pool
  std::int64_t maxsize = 0;   // queue, joinable_queue (0: unbounded)
  std::int64_t value = 1;     // semaphore
  bool bounded = false;       // semaphore
  bool recursive = false;     // lock
  std::int64_t parties = 0;   // barrier
  double timeout_s = -1;      // barrier's default wait; < 0: none
  bool duplex = true;         // pipe
  std::int64_t processes = 0; // pool (0: cpu_count)
  std::int64_t max_retries = 3;       // pool
  std::int64_t maxtasksperchild = 0;  // pool (0: workers live as long as the pool)
};

// An exec program that is not an mpx program never signals readiness: this bounds the wait for it.
constexpr double default_ready_timeout_s = 30.0;  // generous: 200 actors starting on a busy 2-core machine took over 10 s

struct ActorSpec {
  std::string name;
  std::string task;               // a registered function; or
  std::vector<std::string> exec;  // a program and its arguments (exec[0] resolved to a path)
  int replicas = 1;
  Object args = Object(Object::Map{});
  std::vector<std::string> objects;
  std::vector<std::string> after;
  Restart restart = Restart::permanent;
  // How long it may take from its start to mpx::init's readiness signal; then it is killed and counts as failed.
  double ready_timeout_s = default_ready_timeout_s;
  // Where a task actor runs (many hosts, distributed.md): a node id, or spread over the nodes alive at each start
  // (node 0 is the coordinator's host). Unset and false: the coordinator's host.
  std::optional<std::uint32_t> node;
  bool spread = false;
};

struct TraceSpec {
  bool enabled = false;
  std::string file;                 // where a trace is recorded; empty: none
  std::vector<std::string> kinds;   // only these message kinds; empty: all
};

struct Config {
  std::string source;              // the file name, for messages
  std::string endpoint;            // empty: the session's ipc default
  std::string keys;                // the key directory of a tcp:// endpoint (absolute); empty: MPX_KEYS
  TraceSpec trace;
  double shutdown_timeout_s = 5.0;
  Strategy strategy = Strategy::one_for_one;
  int max_restarts = 3;
  double window_s = 5.0;
  std::vector<ObjectSpec> objects;
  std::vector<ActorSpec> actors;
  std::vector<std::size_t> order;  // actor indices in start order (every actor after those it names in `after`)

  const ObjectSpec* object(std::string_view name) const;
};

// Parses and validates. `directory` resolves relative exec paths; a `task` must be registered in this program
// (mpx::register_actor) before this is called. Throws mpx::TopologyError listing every problem of the file, one per
// line (with a "did you mean" for a misspelled key or name), not just the first.
Config parse_config(std::string_view text, const std::string& source, const std::string& directory);

// The plan as text: coordinator, supervision, objects, actors in start order.
std::string describe(const Config& config);

}  // namespace mpx::topology
