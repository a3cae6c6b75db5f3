// Reading a topology file with toml++: every key is checked against what its table allows, every value against the
// type it must have, every name against what the file defines, and the start order against cycles, all before
// anything starts.
#include "topology/config.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>

#include <unistd.h>

#include <toml++/toml.h>

#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/start_method.hpp>

#include "runtime/security.hpp"
#include "trace/bus.hpp"

namespace mpx::topology {

namespace {

namespace fs = std::filesystem;

constexpr std::int64_t max_replicas = 10000;
constexpr std::int64_t max_pool_processes = 1024;

std::string type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string join(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Converts a TOML value to an Object: tables become maps, arrays lists; dates and times their TOML text.
Object to_object(const toml::node& node) {
  if (auto t = node.as_table()) {
    Object::Map map;
    for (auto&& [key, value] : *t) map.emplace_back(Object(std::string(key.str())), to_object(value));
    return Object(std::move(map));
  }
  if (auto a = node.as_array()) {
    Object::Array list;
    for (auto&& value : *a) list.push_back(to_object(value));
    return Object(std::move(list));
  }
  if (auto v = node.as_string()) return Object(v->get());
  if (auto v = node.as_integer()) return Object(v->get());
  if (auto v = node.as_floating_point()) return Object(v->get());
  if (auto v = node.as_boolean()) return Object(v->get());
  std::ostringstream text;
  node.visit([&text](auto&& v) { text << v; });
  return Object(text.str());
}

// The closest of `candidates` to `word` when it is close enough to be a likely misspelling (an edit distance of at
// most a third of the word's length), for "did you mean" hints; empty when none is.
std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = word.size() / 3 + 1;
  for (const auto& candidate : candidates) {
    // Damerau-Levenshtein (optimal string alignment): a swap of two neighbours ("jbos") is one edit, as typed.
    const std::size_t n = word.size(), m = candidate.size();
    std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
    for (std::size_t i = 0; i <= n; ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= m; ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= n; ++i) {
      for (std::size_t j = 1; j <= m; ++j) {
        const std::size_t cost = word[i - 1] == candidate[j - 1] ? 0 : 1;
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
        if (i > 1 && j > 1 && word[i - 1] == candidate[j - 2] && word[i - 2] == candidate[j - 1]) {
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
      }
    }
    if (d[n][m] < best_distance) {
      best_distance = d[n][m];
      best = candidate;
    }
  }
  return best;
}

// before + "did you mean \"x\"?" + after, when `word` looks like a misspelling of one of `candidates`; else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates, std::string_view before,
                         std::string_view after) {
  const std::string best = closest(word, candidates);
  if (best.empty()) return {};
  return std::string(before) + "did you mean \"" + best + "\"?" + std::string(after);
}

// Reports every problem of a file, not only the first: a check that fails throws (fail() is [[noreturn]], so a
// check needs no error path of its own), and attempt() records what it threw and goes on with the next check.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  template <class Check>
  void attempt(Check check) const {
    try {
      check();
    } catch (const TopologyError& e) {
      errors_.emplace_back(e.what());
    }
  }
  bool failed() const noexcept { return !errors_.empty(); }
  // Throws every recorded error at once, one per line.
  void throw_if_failed() const {
    if (errors_.empty()) return;
    std::string all;
    for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
    if (errors_.size() > 1) all += "\n" + source_ + ": " + std::to_string(errors_.size()) + " errors";
    throw TopologyError(all);
  }

  [[noreturn]] void fail(const toml::source_region& where, const std::string& key, const std::string& what) const {
    throw TopologyError(source_ + ":" + std::to_string(where.begin.line) + ":" + std::to_string(where.begin.column) +
                        ": " + key + ": " + what);
  }

  // Every key of `table` must be one of `allowed`; each other one is recorded as an error.
  void keys(const toml::table& table, const std::string& path, const std::vector<std::string>& allowed) const {
    for (auto&& [key, value] : table) {
      if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end()) {
        attempt([&] {
          fail(key.source(), path.empty() ? std::string(key.str()) : path + "." + std::string(key.str()),
               "unknown key (" + did_you_mean(key.str(), allowed, "", " ") + "expected one of: " + join(allowed) + ")");
        });
      }
    }
  }

  const toml::node* find(const toml::table& table, std::string_view key) const { return table.get(key); }

  template <class T>
  const T* typed(const toml::node& node, const std::string& key, const std::string& expected) const {
    const T* v = nullptr;
    if constexpr (std::is_same_v<T, toml::table>) {
      v = node.as_table();
    } else if constexpr (std::is_same_v<T, toml::array>) {
      v = node.as_array();
    }
    if (!v) fail(node.source(), key, "expected " + expected + ", got " + type_name(node.type()));
    return v;
  }

  std::string string(const toml::node& node, const std::string& key) const {
    if (auto v = node.as_string()) return v->get();
    fail(node.source(), key, "expected a string, got " + type_name(node.type()));
  }
  std::int64_t integer(const toml::node& node, const std::string& key, std::int64_t min, const std::string& what) const {
    auto v = node.as_integer();
    if (!v) fail(node.source(), key, "expected " + what + ", got " + type_name(node.type()));
    if (v->get() < min) fail(node.source(), key, "expected " + what + ", got " + std::to_string(v->get()));
    return v->get();
  }
  // Seconds: an integer or a float, > 0.
  double seconds(const toml::node& node, const std::string& key) const {
    double d = 0;
    if (auto i = node.as_integer()) {
      d = static_cast<double>(i->get());
    } else if (auto f = node.as_floating_point()) {
      d = f->get();
    } else {
      fail(node.source(), key, "expected a number of seconds, got " + type_name(node.type()));
    }
    if (!(d > 0)) fail(node.source(), key, "expected a number of seconds > 0, got " + std::to_string(d));
    return d;
  }
  bool boolean(const toml::node& node, const std::string& key) const {
    if (auto v = node.as_boolean()) return v->get();
    fail(node.source(), key, "expected a boolean (true or false), got " + type_name(node.type()));
  }
  std::vector<std::string> strings(const toml::node& node, const std::string& key) const {
    auto a = typed<toml::array>(node, key, "an array of strings");
    std::vector<std::string> out;
    std::size_t i = 0;
    for (auto&& item : *a) out.push_back(string(item, key + "[" + std::to_string(i++) + "]"));
    return out;
  }
  template <class E>
  E choice(const toml::node& node, const std::string& key, const std::vector<std::pair<std::string, E>>& options) const {
    const std::string s = string(node, key);
    std::vector<std::string> names, quoted;
    for (const auto& [name, value] : options) {
      if (name == s) return value;
      names.push_back(name);
      quoted.push_back("\"" + name + "\"");
    }
    fail(node.source(), key, "expected one of " + join(quoted) + ", got \"" + s + "\"" + did_you_mean(s, names, "; ", ""));
  }

 private:
  std::string source_;
  mutable std::vector<std::string> errors_;
};

const std::map<std::string, std::vector<std::string>>& object_keys() {
  static const std::map<std::string, std::vector<std::string>> keys = {
      {"queue", {"type", "maxsize"}},
      {"joinable_queue", {"type", "maxsize"}},
      {"event", {"type"}},
      {"semaphore", {"type", "value", "bounded"}},
      {"lock", {"type", "recursive"}},
      {"barrier", {"type", "parties", "timeout"}},
      {"pipe", {"type", "duplex"}},
      {"pool", {"type", "processes", "max_retries", "maxtasksperchild"}},
  };
  return keys;
}

std::string resolve_program(const Reader& r, const toml::node& node, const std::string& key, const std::string& program,
                            const std::string& directory) {
  if (program.empty()) r.fail(node.source(), key, "expected a program path, got an empty string");
  if (program.find('/') != std::string::npos) {
    fs::path path(program);
    if (path.is_relative() && !directory.empty()) path = fs::path(directory) / path;
    if (::access(path.c_str(), X_OK) != 0 || fs::is_directory(path)) {
      r.fail(node.source(), key, "expected an executable file, but '" + path.string() + "' is not one");
    }
    return path.lexically_normal().string();
  }
  const char* env = std::getenv("PATH");
  std::string search = env ? env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= search.size()) {
    const auto end = std::min(search.find(':', start), search.size());
    const std::string dir = search.substr(start, end - start);
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / program;
    if (::access(candidate.c_str(), X_OK) == 0 && !fs::is_directory(candidate)) return candidate.string();
    start = end + 1;
  }
  r.fail(node.source(), key, "expected a program, but '" + program + "' was not found in PATH");
}

// Kahn's algorithm, stable in file order; a cycle is reported at the `after` key of one of its actors.
std::vector<std::size_t> start_order(const Reader& r, const std::vector<ActorSpec>& actors,
                                     const std::vector<const toml::node*>& after_nodes) {
  const std::size_t n = actors.size();
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < n; ++i) index[actors[i].name] = i;
  std::vector<std::vector<std::size_t>> deps(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (const auto& a : actors[i].after) deps[i].push_back(index.at(a));
  }
  std::vector<std::size_t> order;
  std::vector<bool> placed(n, false);
  while (order.size() < n) {
    bool progress = false;
    for (std::size_t i = 0; i < n; ++i) {
      if (placed[i]) continue;
      if (std::all_of(deps[i].begin(), deps[i].end(), [&](std::size_t d) { return placed[d]; })) {
        placed[i] = true;
        order.push_back(i);
        progress = true;
      }
    }
    if (progress) continue;
    // Walk unplaced dependencies from the first unplaced actor until one repeats: that is a cycle.
    std::size_t at = 0;
    while (placed[at]) ++at;
    std::vector<std::size_t> path;
    while (std::find(path.begin(), path.end(), at) == path.end()) {
      path.push_back(at);
      for (std::size_t d : deps[at]) {
        if (!placed[d]) {
          at = d;
          break;
        }
      }
    }
    const auto first = std::find(path.begin(), path.end(), at);
    std::string cycle;
    for (auto it = first; it != path.end(); ++it) cycle += actors[*it].name + " -> ";
    cycle += actors[at].name;
    r.fail(after_nodes[at]->source(), "actors[" + std::to_string(at) + "].after",
           "the start order has a cycle: " + cycle);
  }
  return order;
}

}  // namespace

std::string_view to_string(Restart r) noexcept {
  switch (r) {
    case Restart::permanent: return "permanent";
    case Restart::transient: return "transient";
    case Restart::temporary: return "temporary";
  }
  return "?";
}

std::string_view to_string(Strategy s) noexcept {
  switch (s) {
    case Strategy::one_for_one: return "one_for_one";
    case Strategy::one_for_all: return "one_for_all";
    case Strategy::rest_for_one: return "rest_for_one";
  }
  return "?";
}

const ObjectSpec* Config::object(std::string_view name) const {
  for (const auto& o : objects) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

Config parse_config(std::string_view text, const std::string& source, const std::string& directory) {
  const Reader r(source);
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    // toml++ stops at the first syntax error: this one is reported alone.
    throw TopologyError(source + ":" + std::to_string(e.source().begin.line) + ":" +
                        std::to_string(e.source().begin.column) + ": invalid TOML: " + std::string(e.description()));
  }
  Config c;
  c.source = source;
  r.keys(root, "", {"coordinator", "supervisor", "objects", "actors"});

  if (auto node = r.find(root, "coordinator")) r.attempt([&] {
    const auto& t = *r.typed<toml::table>(*node, "coordinator", "a table");
    r.keys(t, "coordinator", {"endpoint", "keys", "shutdown_timeout", "trace"});
    if (auto v = r.find(t, "endpoint")) r.attempt([&] {
      const std::string e = r.string(*v, "coordinator.endpoint");
      if (e != "ipc" && !e.starts_with("ipc://") && !e.starts_with("tcp://")) {
        r.fail(v->source(), "coordinator.endpoint",
               "expected \"ipc\" (the default), \"ipc:///path\" or \"tcp://host:port\", got \"" + e + "\"");
      }
      if (e != "ipc") c.endpoint = e;
    });
    const auto without_mpx = [](const ValueError& e) {
      return std::string(e.what()).substr(std::string_view("mpx: ").size());
    };
    if (auto v = r.find(t, "keys")) r.attempt([&] {
      fs::path keys(r.string(*v, "coordinator.keys"));
      if (keys.is_relative() && !directory.empty()) keys = fs::path(directory) / keys;
      try {
        c.keys = runtime::checked_key_directory(keys.lexically_normal().string());
      } catch (const ValueError& e) {
        r.fail(v->source(), "coordinator.keys", without_mpx(e));
      }
    });
    // A tcp endpoint without keys (here or in MPX_KEYS) would be refused at the start: say so now, with --check too.
    if (auto v = r.find(t, "endpoint"); v != nullptr && c.keys.empty() && !c.endpoint.empty()) r.attempt([&] {
      try {
        runtime::require_keys_for(c.endpoint);
      } catch (const ValueError& e) {
        r.fail(v->source(), "coordinator.endpoint", without_mpx(e));
      }
    });
    if (auto v = r.find(t, "shutdown_timeout")) r.attempt([&] {
      c.shutdown_timeout_s = r.seconds(*v, "coordinator.shutdown_timeout");
    });
    if (auto v = r.find(t, "trace")) r.attempt([&] {
      const auto& tt = *r.typed<toml::table>(*v, "coordinator.trace", "a table");
      r.keys(tt, "coordinator.trace", {"enabled", "file", "kinds"});
      if (auto e = r.find(tt, "enabled")) r.attempt([&] { c.trace.enabled = r.boolean(*e, "coordinator.trace.enabled"); });
      if (auto e = r.find(tt, "file")) r.attempt([&] {
        c.trace.file = r.string(*e, "coordinator.trace.file");
        // The trace spec separates its items with commas (mpx/trace.hpp), so a path cannot hold one.
        if (c.trace.file.empty() || c.trace.file.find(',') != std::string::npos) {
          r.fail(e->source(), "coordinator.trace.file", "expected a path without commas, got \"" + c.trace.file + "\"");
        }
      });
      if (auto e = r.find(tt, "kinds")) r.attempt([&] {
        c.trace.kinds = r.strings(*e, "coordinator.trace.kinds");
        for (const auto& k : c.trace.kinds) {
          if (!trace::kind_number(k)) {
            r.fail(e->source(), "coordinator.trace.kinds",
                   "\"" + k + "\" is not a message kind (names as in PROTOCOL.md: queue_put, ok, ...)");
          }
        }
      });
      if (c.trace.enabled && c.trace.file.empty() && !r.find(tt, "file")) {
        r.attempt([&] { r.fail(tt.source(), "coordinator.trace", "enabled = true needs a file to record to"); });
      }
    });
  });

  if (auto node = r.find(root, "supervisor")) r.attempt([&] {
    const auto& t = *r.typed<toml::table>(*node, "supervisor", "a table");
    r.keys(t, "supervisor", {"strategy", "max_restarts", "window"});
    if (auto v = r.find(t, "strategy")) r.attempt([&] {
      c.strategy = r.choice<Strategy>(*v, "supervisor.strategy",
                                      {{"one_for_one", Strategy::one_for_one},
                                       {"one_for_all", Strategy::one_for_all},
                                       {"rest_for_one", Strategy::rest_for_one}});
    });
    if (auto v = r.find(t, "max_restarts")) r.attempt([&] {
      c.max_restarts = static_cast<int>(r.integer(*v, "supervisor.max_restarts", 0, "an integer >= 0"));
    });
    if (auto v = r.find(t, "window")) r.attempt([&] { c.window_s = r.seconds(*v, "supervisor.window"); });
  });

  if (auto node = r.find(root, "objects")) r.attempt([&] {
    const auto& t = *r.typed<toml::table>(*node, "objects", "a table of [objects.NAME] tables");
    std::vector<std::string> type_names, quoted_type_names;
    for (const auto& [name, keys] : object_keys()) {
      type_names.push_back(name);
      quoted_type_names.push_back("\"" + name + "\"");
    }
    for (auto&& [key, value] : t) {
      const std::string path = "objects." + std::string(key.str());
      ObjectSpec spec;
      spec.name = std::string(key.str());
      // Defined even when invalid: an actor naming it then gets no second, misleading "not a defined object".
      r.attempt([&] {
        const auto& o = *r.typed<toml::table>(value, path, "a table with a type");
        const auto type = r.find(o, "type");
        if (!type) r.fail(value.source(), path + ".type", "missing: expected one of " + join(quoted_type_names));
        spec.type = r.string(*type, path + ".type");
        auto allowed = object_keys().find(spec.type);
        if (allowed == object_keys().end()) {
          r.fail(type->source(), path + ".type",
                 "expected one of " + join(quoted_type_names) + ", got \"" + spec.type + "\"" +
                     did_you_mean(spec.type, type_names, "; ", ""));
        }
        r.keys(o, path, allowed->second);
        if (auto v = r.find(o, "maxsize")) r.attempt([&] { spec.maxsize = r.integer(*v, path + ".maxsize", 0, "an integer >= 0"); });
        if (auto v = r.find(o, "value")) r.attempt([&] { spec.value = r.integer(*v, path + ".value", 0, "an integer >= 0"); });
        if (auto v = r.find(o, "bounded")) r.attempt([&] { spec.bounded = r.boolean(*v, path + ".bounded"); });
        if (auto v = r.find(o, "recursive")) r.attempt([&] { spec.recursive = r.boolean(*v, path + ".recursive"); });
        if (auto v = r.find(o, "timeout")) r.attempt([&] { spec.timeout_s = r.seconds(*v, path + ".timeout"); });
        if (auto v = r.find(o, "duplex")) r.attempt([&] { spec.duplex = r.boolean(*v, path + ".duplex"); });
        if (auto v = r.find(o, "processes")) r.attempt([&] {
          spec.processes = r.integer(*v, path + ".processes", 1, "an integer >= 1");
          if (spec.processes > max_pool_processes) {
            r.fail(v->source(), path + ".processes", "expected at most " + std::to_string(max_pool_processes) +
                                                         " processes, got " + std::to_string(spec.processes));
          }
        });
        if (auto v = r.find(o, "max_retries")) r.attempt([&] {
          spec.max_retries = r.integer(*v, path + ".max_retries", 0, "an integer >= 0");
        });
        if (auto v = r.find(o, "maxtasksperchild")) r.attempt([&] {
          spec.maxtasksperchild = r.integer(*v, path + ".maxtasksperchild", 0, "an integer >= 0 (0: no limit)");
        });
        if (spec.type == "barrier") {
          auto v = r.find(o, "parties");
          if (!v) r.fail(value.source(), path + ".parties", "missing: a barrier needs parties (an integer >= 1)");
          spec.parties = r.integer(*v, path + ".parties", 1, "an integer >= 1");
        }
      });
      c.objects.push_back(std::move(spec));
    }
  });

  const auto actors_node = r.find(root, "actors");
  const toml::array* actors = nullptr;
  r.attempt([&] {
    if (!actors_node) r.fail(root.source(), "actors", "missing: expected at least one [[actors]] table");
    actors = r.typed<toml::array>(*actors_node, "actors", "an array of [[actors]] tables");
    if (actors->empty()) r.fail(actors_node->source(), "actors", "expected at least one [[actors]] table");
  });
  if (!actors) r.throw_if_failed();
  std::vector<std::string> object_names;
  for (const auto& o : c.objects) object_names.push_back(o.name);
  std::vector<const toml::node*> after_nodes;
  for (std::size_t i = 0; i < actors->size(); ++i) {
    const std::string path = "actors[" + std::to_string(i) + "]";
    ActorSpec spec;
    r.attempt([&] {
      const auto& a = *r.typed<toml::table>(*actors->get(i), path, "a table");
      r.keys(a, path, {"name", "task", "exec", "replicas", "args", "objects", "after", "restart", "ready_timeout", "node",
                       "placement"});
      after_nodes.push_back(&a);  // where a cycle through this actor is reported when it has no `after`
      r.attempt([&] {
        const auto name = r.find(a, "name");
        if (!name) r.fail(a.source(), path + ".name", "missing: every actor needs a name");
        spec.name = r.string(*name, path + ".name");
        if (spec.name.empty()) r.fail(name->source(), path + ".name", "expected a non-empty name");
        for (std::size_t j = 0; j < c.actors.size(); ++j) {
          if (c.actors[j].name == spec.name) {
            r.fail(name->source(), path + ".name",
                   "duplicate actor name \"" + spec.name + "\" (actors[" + std::to_string(j) + "] has it)");
          }
        }
      });
      r.attempt([&] {
        const auto task = r.find(a, "task");
        const auto exec = r.find(a, "exec");
        if (task && exec) r.fail(exec->source(), path + ".exec", "expected either task or exec, not both");
        if (!task && !exec) {
          r.fail(a.source(), path, "missing: expected task = \"name\" (a registered function) or exec = [\"program\", ...]");
        }
        if (task) {
          spec.task = r.string(*task, path + ".task");
          if (!is_registered_actor(spec.task)) {
            r.fail(task->source(), path + ".task",
                   "\"" + spec.task + "\" is not a function registered with mpx::register_actor in this program (" +
                       did_you_mean(spec.task, registered_actors(), "", " ") + "registered: " +
                       join(registered_actors()) +
                       "); mpx-run registers none: use exec, or mpx::run_main in a program that registers it");
          }
        }
        if (exec) {
          spec.exec = r.strings(*exec, path + ".exec");
          if (spec.exec.empty()) r.fail(exec->source(), path + ".exec", "expected [\"program\", args...], got an empty array");
          spec.exec[0] = resolve_program(r, *exec, path + ".exec", spec.exec[0], directory);
        }
      });
      if (auto v = r.find(a, "replicas")) r.attempt([&] {
        spec.replicas = static_cast<int>(r.integer(*v, path + ".replicas", 1, "an integer >= 1"));
        if (spec.replicas > max_replicas) {
          r.fail(v->source(), path + ".replicas", "expected at most " + std::to_string(max_replicas) + " replicas");
        }
      });
      if (auto v = r.find(a, "args")) r.attempt([&] {
        spec.args = to_object(*r.typed<toml::table>(*v, path + ".args", "a table"));
      });
      if (auto v = r.find(a, "objects")) r.attempt([&] {
        spec.objects = r.strings(*v, path + ".objects");
        const auto& list = *v->as_array();
        for (std::size_t k = 0; k < spec.objects.size(); ++k) {
          if (c.object(spec.objects[k])) continue;
          r.attempt([&] {
            r.fail(list.get(k)->source(), path + ".objects",
                   "\"" + spec.objects[k] + "\" is not a defined object (" +
                       did_you_mean(spec.objects[k], object_names, "", " ") + "defined: " + join(object_names) + ")");
          });
        }
      });
      if (auto v = r.find(a, "restart")) r.attempt([&] {
        spec.restart = r.choice<Restart>(
            *v, path + ".restart",
            {{"permanent", Restart::permanent}, {"transient", Restart::transient}, {"temporary", Restart::temporary}});
      });
      if (auto v = r.find(a, "ready_timeout")) r.attempt([&] {
        spec.ready_timeout_s = r.seconds(*v, path + ".ready_timeout");
      });
      if (auto v = r.find(a, "after")) r.attempt([&] {
        spec.after = r.strings(*v, path + ".after");
        after_nodes.back() = v;
      });
      if (auto v = r.find(a, "node")) r.attempt([&] {
        spec.node = static_cast<std::uint32_t>(r.integer(*v, path + ".node", 0, "a node id (an integer >= 0)"));
      });
      if (auto v = r.find(a, "placement")) r.attempt([&] {
        spec.spread = r.choice<bool>(*v, path + ".placement", {{"local", false}, {"spread", true}});
        if (spec.spread && spec.node) r.fail(v->source(), path + ".placement", "expected either node or placement, not both");
      });
    });
    if (after_nodes.size() <= i) after_nodes.push_back(actors->get(i));
    c.actors.push_back(std::move(spec));
  }
  // References to actors can point forward, so they are checked once every name is known.
  std::vector<std::string> actor_names;
  for (const auto& x : c.actors) actor_names.push_back(x.name);
  for (std::size_t i = 0; i < c.actors.size(); ++i) {
    const std::string path = "actors[" + std::to_string(i) + "].after";
    for (std::size_t k = 0; k < c.actors[i].after.size(); ++k) {
      r.attempt([&] {
        const auto& target = c.actors[i].after[k];
        const auto& list = *after_nodes[i]->as_array();
        if (target == c.actors[i].name) r.fail(list.get(k)->source(), path, "an actor cannot start after itself");
        if (std::find(actor_names.begin(), actor_names.end(), target) == actor_names.end()) {
          r.fail(list.get(k)->source(), path,
                 "\"" + target + "\" is not a defined actor (" + did_you_mean(target, actor_names, "", " ") +
                     "defined: " + join(actor_names) + ")");
        }
      });
    }
  }
  // The start order needs every reference valid; a cycle is reported with the other errors.
  if (!r.failed()) r.attempt([&] { c.order = start_order(r, c.actors, after_nodes); });
  r.throw_if_failed();
  return c;
}

std::string describe(const Config& c) {
  std::ostringstream out;
  out << "topology " << c.source << "\n";
  out << "  coordinator: " << (c.endpoint.empty() ? "ipc (session directory)" : c.endpoint)
      << ", shutdown timeout " << c.shutdown_timeout_s << " s";
  if (c.trace.enabled) out << ", trace" << (c.trace.file.empty() ? "" : " to " + c.trace.file);
  out << "\n  supervisor: " << to_string(c.strategy) << ", at most " << c.max_restarts << " restarts in "
      << c.window_s << " s\n";
  out << "  objects:\n";
  if (c.objects.empty()) out << "    (none)\n";
  for (const auto& o : c.objects) {
    out << "    " << o.name << ": " << o.type;
    if (o.type == "queue" || o.type == "joinable_queue") out << " maxsize=" << o.maxsize;
    if (o.type == "semaphore") out << " value=" << o.value << (o.bounded ? " bounded" : "");
    if (o.type == "lock" && o.recursive) out << " recursive";
    if (o.type == "barrier") out << " parties=" << o.parties;
    if (o.type == "pipe") out << (o.duplex ? " duplex" : " simplex");
    if (o.type == "pool") {
      out << " processes=" << (o.processes > 0 ? std::to_string(o.processes) : "cpu_count (" + std::to_string(cpu_count()) + ")")
          << " max_retries=" << o.max_retries << " maxtasksperchild=" << o.maxtasksperchild;
    }
    out << "\n";
  }
  out << "  actors, in start order:\n";
  int step = 1;
  for (std::size_t i : c.order) {
    const auto& a = c.actors[i];
    out << "    " << step++ << ". " << a.name;
    if (a.replicas > 1) out << " x" << a.replicas;
    if (!a.task.empty()) {
      out << "  task " << a.task;
    } else {
      out << "  exec";
      for (const auto& e : a.exec) out << " " << e;
    }
    out << "  (" << to_string(a.restart) << ")";
    if (!a.objects.empty()) out << "  objects: " << join(a.objects);
    if (!a.after.empty()) out << "  after: " << join(a.after);
    if (a.ready_timeout_s != default_ready_timeout_s) out << "  ready within " << a.ready_timeout_s << " s";
    if (a.node) out << "  on node " << *a.node;
    if (a.spread) out << "  spread over the nodes";
    if (a.args.size() > 0) out << "  args: " << a.args.repr();
    out << "\n";
  }
  return out.str();
}

}  // namespace mpx::topology
