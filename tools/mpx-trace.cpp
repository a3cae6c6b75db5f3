// mpx-trace: reads the trace bus, live (a PUB endpoint) or recorded (a .mpxt file), in mpx's own vocabulary.
//
//   mpx-trace live tcp://127.0.0.1:5999 [--actor A] [--kind K] [--object O] [--grep RE]
//   mpx-trace record tcp://127.0.0.1:5999 -o run.mpxt [--count N] [--duration S]
//   mpx-trace show run.mpxt [filters]
//   mpx-trace stats run.mpxt
//   mpx-trace export --format chrome|mermaid|dot|sequence run.mpxt [filters] [-o out] [--first N]
//   mpx-trace on|off|status COORDINATOR_ENDPOINT [SPEC]    (switch the bus of a running coordinator)
//
// Exit status: 0 ok; 1 an error (one line on stderr); 2 a file that stopped early (what could be read was printed,
// and stderr says where it stopped). framework/PROTOCOL.md ("Tracing") specifies the record format.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>
#include <zmq.hpp>

#include <mpx/errors.hpp>
#include <mpx/object.hpp>
#include <mpx/version.hpp>

#include "trace/format.hpp"
#include "wire/curve.hpp"
#include "wire/envelope.hpp"
#include "wire/transport.hpp"

namespace {

namespace tf = mpx::trace::format;
using Clock = std::chrono::steady_clock;

// The one-line error every command ends with when something is wrong.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::atomic<bool> interrupted{false};
void on_signal(int) { interrupted.store(true); }

std::string strip_mpx(std::string s) {
  if (s.rfind("mpx: ", 0) == 0) s.erase(0, 5);
  return s;
}

// ---- what the records mean: actor names, and which request a reply answers -----------------------------------------

class Model {
 public:
  void add_actor(const tf::Actor& a) { actors_[a.id] = a; }

  std::string label(std::uint64_t id) const {
    auto it = actors_.find(id);
    if (it == actors_.end()) return id == tf::coordinator_actor ? "coordinator" : "pid " + std::to_string(id);
    if (id == tf::coordinator_actor) return it->second.name;
    return it->second.name + "(" + std::to_string(it->second.pid) + ")";
  }
  std::string name(std::uint64_t id) const {
    auto it = actors_.find(id);
    return it == actors_.end() ? label(id) : it->second.name;
  }
  const std::map<std::uint64_t, tf::Actor>& actors() const { return actors_; }

  static bool is_reply(const tf::Message& m) {
    return m.direction == tf::Direction::out && (m.kind_name == "ok" || m.kind_name == "error" || m.kind_name == "pong");
  }

  // For a reply, the request kind it answers and when that request arrived; requests are remembered by (actor,
  // correlation), oldest first, since the threads of one process share an actor id.
  struct Answer {
    std::string kind;
    std::uint64_t request_ts = 0;
    std::uint64_t request_index = 0;
  };
  std::optional<Answer> note(const tf::Message& m, std::uint64_t index) {
    if (m.correlation == 0) return std::nullopt;  // posted messages and pushes expect no reply
    if (is_reply(m)) {
      auto it = pending_.find({m.to, m.correlation});
      if (it == pending_.end() || it->second.empty()) return std::nullopt;
      Answer a = it->second.front();
      it->second.pop_front();
      if (it->second.empty()) pending_.erase(it);
      return a;
    }
    if (m.direction == tf::Direction::in) pending_[{m.from, m.correlation}].push_back(Answer{m.kind_name, m.ts_ns, index});
    return std::nullopt;
  }

 private:
  std::map<std::uint64_t, tf::Actor> actors_;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::deque<Answer>> pending_;
};

std::string kind_label(const tf::Message& m, const std::optional<Model::Answer>& answer) {
  return answer ? m.kind_name + "(" + answer->kind + ")" : m.kind_name;
}

// What a message means for the logical graph (actors and the objects between them): an item into an object, an item
// out of one, another use of one (create, size, a lock's acquire...), or nothing (no object, or a reply that carries
// no item: a put's ok).
enum class Flow { none, into, out_of, use };
Flow flow_of(const tf::Message& m, const std::optional<Model::Answer>& answer) {
  if (m.object.empty()) return Flow::none;
  static const std::set<std::string> puts = {"queue_put", "queue_put_posted", "pipe_send", "pool_submit"};
  static const std::set<std::string> answered_with_items = {"queue_get", "pipe_recv", "pool_take"};
  if (m.direction == tf::Direction::in) {
    if (puts.count(m.kind_name)) return Flow::into;
    return answered_with_items.count(m.kind_name) ? Flow::none : Flow::use;  // its reply is the edge
  }
  if (m.lane) return m.kind_name == "queue_get" ? Flow::out_of : Flow::none;
  if (answer) return m.kind_name == "ok" && answered_with_items.count(answer->kind) ? Flow::out_of : Flow::none;
  return Model::is_reply(m) ? Flow::none : Flow::out_of;  // a push: pool_delivery, pipe_direct...
}

// ---- filters and printing -------------------------------------------------------------------------------------------

struct Filters {
  std::vector<std::string> actors, kinds, objects;
  std::string grep;
  std::optional<std::regex> grep_re;
  std::optional<double> since, until;  // seconds after the first message

  void add(CLI::App* app) {
    app->add_option("--actor", actors, "only messages from or to this actor (name, pid, or name(pid)); a name "
                                       "matches its replicas too (worker: worker[0], worker[1]...); repeatable");
    app->add_option("--kind", kinds, "only this kind (queue_get, or a prefix ending in *: queue_*); a reply "
                                     "matches the kind of its request too; repeatable");
    app->add_option("--object", objects, "only this object (queue:7, or a service: queue); repeatable");
    app->add_option("--grep", grep, "only lines matching this regular expression (ECMAScript)");
    app->add_option("--since", since, "only messages at least this many seconds after the first one");
    app->add_option("--until", until, "only messages at most this many seconds after the first one");
  }
  void prepare() {
    if (grep.empty()) return;
    try {
      grep_re.emplace(grep);
    } catch (const std::regex_error& e) {
      throw Failure("--grep '" + grep + "' is not a regular expression: " + e.what());
    }
  }

  static bool kind_matches(const std::string& pattern, const std::string& kind) {
    if (!pattern.empty() && pattern.back() == '*') return kind.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
    return kind == pattern;
  }
  // A topology's replicas are named `worker[0]`, `worker[1]`...: `worker` means them all.
  static bool replica_of(const std::string& name, const std::string& actor) {
    return name.size() > actor.size() + 2 && name.compare(0, actor.size(), actor) == 0 && name[actor.size()] == '[' &&
           name.back() == ']';
  }
  bool actor_matches(const Model& model, std::uint64_t id) const {
    for (const auto& a : actors) {
      const auto name = model.name(id);
      if (a == name || a == model.label(id) || a == std::to_string(id) || replica_of(name, a)) return true;
    }
    return false;
  }
  // `t0`: the first message's time, which --since and --until count from.
  bool matches(const Model& model, const tf::Message& m, const std::optional<Model::Answer>& answer,
               const std::string& line, std::uint64_t t0) const {
    const double at = (static_cast<double>(m.ts_ns) - static_cast<double>(t0)) / 1e9;
    if ((since && at < *since) || (until && at > *until)) return false;
    if (!actors.empty() && !actor_matches(model, m.from) && !actor_matches(model, m.to)) return false;
    if (!kinds.empty()) {
      bool any = false;
      for (const auto& k : kinds) any = any || kind_matches(k, m.kind_name) || (answer && kind_matches(k, answer->kind));
      if (!any) return false;
    }
    if (!objects.empty()) {
      bool any = false;
      for (const auto& o : objects) {
        any = any || o == m.object || (o.find(':') == std::string::npos && m.object.rfind(o + ":", 0) == 0);
      }
      if (!any) return false;
    }
    if (grep_re && !std::regex_search(line, *grep_re)) return false;
    return true;
  }
};

struct Style {
  bool colour = false;
  std::string paint(const char* code, const std::string& text) const {
    return colour ? std::string("\033[") + code + "m" + text + "\033[0m" : text;
  }
};

std::string human_bytes(std::uint64_t n) {
  char buf[32];
  if (n < 1024) std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(n));
  else if (n < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1fKiB", n / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.1fMiB", n / (1024.0 * 1024.0));
  return buf;
}

// One message on one line: time, edge, kind, object, correlation, size, body.
std::string format_line(const Model& model, const tf::Message& m, const std::optional<Model::Answer>& answer,
                        std::uint64_t t0, const Style& s) {
  char ts[32];
  std::snprintf(ts, sizeof ts, "%+.6f", (static_cast<double>(m.ts_ns) - static_cast<double>(t0)) / 1e9);
  const char* kind_colour = m.kind_name == "error" ? "31" : Model::is_reply(m) ? "32" : "33";
  std::string line = s.paint("2", ts) + "  " + s.paint("36", model.label(m.from)) + " -> " +
                     s.paint("36", model.label(m.to)) + "  " + s.paint(kind_colour, kind_label(m, answer));
  if (!m.object.empty()) line += "  " + s.paint("35", m.object);
  if (m.correlation) line += "  #" + std::to_string(m.correlation);
  if (m.lane) line += "  " + s.paint("2", "(lane)");
  line += "  " + human_bytes(m.size);
  if (m.body) line += "  " + *m.body;
  return line;
}

std::string drops_line(const tf::Drops& d) {
  return "-- drops so far: " + std::to_string(d.queue) + " lost in the sink queue, " + std::to_string(d.pub) +
         " not delivered to live subscribers --";
}

// Prints records that pass the filters; shared by live and show.
class Printer {
 public:
  Printer(Filters filters, Style style) : filters_(std::move(filters)), style_(style) { filters_.prepare(); }
  Model& model() { return model_; }

  void operator()(const tf::Record& record) {
    if (auto* a = std::get_if<tf::Actor>(&record)) {
      model_.add_actor(*a);
    } else if (auto* m = std::get_if<tf::Message>(&record)) {
      if (!t0_) t0_ = m->ts_ns;
      const auto answer = model_.note(*m, index_++);
      Style plain;
      const auto text = format_line(model_, *m, answer, *t0_, plain);
      if (!filters_.matches(model_, *m, answer, text, *t0_)) return;
      std::cout << (style_.colour ? format_line(model_, *m, answer, *t0_, style_) : text) << '\n';
      ++printed_;
    } else if (auto* d = std::get_if<tf::Drops>(&record)) {
      if (d->queue || d->pub) std::cout << style_.paint("31", drops_line(*d)) << '\n';
    }
  }
  std::uint64_t printed() const { return printed_; }

 private:
  Filters filters_;
  Style style_;
  Model model_;
  std::optional<std::uint64_t> t0_;
  std::uint64_t index_ = 0;
  std::uint64_t printed_ = 0;
};

Style style_for(const std::string& colour) {
  Style s;
  if (colour == "always") s.colour = true;
  else if (colour == "auto") s.colour = ::isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
  return s;
}

// ---- files ----------------------------------------------------------------------------------------------------------

// Reads a whole file, handing each record to `each`. Returns 2 (and says so on stderr) if it stopped early.
template <class F>
int read_file(const std::string& path, F&& each) {
  std::optional<tf::FileReader> reader;
  try {
    reader.emplace(path);
  } catch (const mpx::Error& e) {
    throw Failure(strip_mpx(e.what()));
  }
  for (const auto& a : reader->header().actors) each(tf::Record(a));
  while (auto r = reader->next()) each(*r);
  if (!reader->problem().empty()) {
    std::cout.flush();
    std::cerr << "mpx-trace: " << path << ": " << reader->problem() << "; read " << reader->records()
              << " records before it\n";
    return 2;
  }
  return 0;
}

// ---- live sources ---------------------------------------------------------------------------------------------------

// A SUB socket that is connected, or a Failure: ZeroMQ would otherwise retry an unreachable endpoint forever.
zmq::socket_t subscribe(zmq::context_t& context, const std::string& endpoint, double connect_timeout) {
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(tf::max_record_bytes));
  const std::string monitor_endpoint = "inproc://mpx-trace-monitor";
  if (zmq_socket_monitor(sub.handle(), monitor_endpoint.c_str(), ZMQ_EVENT_CONNECTED) != 0) {
    throw Failure("cannot monitor the connection: " + std::string(zmq_strerror(zmq_errno())));
  }
  zmq::socket_t monitor(context, zmq::socket_type::pair);
  monitor.connect(monitor_endpoint);
  try {
    sub.connect(endpoint);
  } catch (const zmq::error_t& e) {
    throw Failure("cannot connect to " + endpoint + ": " + e.what());
  }
  sub.set(zmq::sockopt::subscribe, "");
  zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
  const auto deadline = Clock::now() + std::chrono::duration<double>(connect_timeout);
  bool connected = false;
  while (!connected && Clock::now() < deadline && !interrupted.load()) {
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    if (item.revents & ZMQ_POLLIN) {
      zmq::message_t event, address;
      (void)monitor.recv(event);
      if (event.more()) (void)monitor.recv(address);
      connected = true;
    }
  }
  zmq_socket_monitor(sub.handle(), nullptr, 0);
  if (!connected) {
    throw Failure("cannot reach " + endpoint + ": no connection within " + std::to_string(connect_timeout).substr(0, 4) +
                  " s (is tracing on with pub:" + endpoint + "?)");
  }
  return sub;
}

struct LiveLimits {
  std::uint64_t count = 0;  // stop after this many messages; 0: no limit
  double duration = 0;      // stop after this many seconds; 0: no limit
  double connect_timeout = 3;
  void add(CLI::App* app) {
    app->add_option("--count", count, "stop after this many messages");
    app->add_option("--duration", duration, "stop after this many seconds");
    app->add_option("--connect-timeout", connect_timeout, "seconds to wait for the endpoint (default 3)");
  }
};

// Receives records until a limit or a signal; `each` gets the raw bytes and the decoded record, and returns whether
// the record counts toward --count.
template <class F>
void receive(const std::string& endpoint, const LiveLimits& limits, F&& each) {
  zmq::context_t context(1);
  auto sub = subscribe(context, endpoint, limits.connect_timeout);
  const auto start = Clock::now();
  std::uint64_t counted = 0, malformed = 0;
  zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
  // The bus answers a new subscription with its actor table (actor records, then a drops record), but the
  // subscription may take effect for published records a moment before the bus sees it: records until the table
  // are skipped, as if this subscriber had come a moment later, so every record shown can be named.
  bool have_actor = false, have_table = false;
  while (!interrupted.load()) {
    if (limits.count && counted >= limits.count) break;
    if (limits.duration > 0 && Clock::now() - start >= std::chrono::duration<double>(limits.duration)) break;
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    zmq::message_t m;
    while (sub.recv(m, zmq::recv_flags::dontwait)) {
      const std::string_view bytes(static_cast<const char*>(m.data()), m.size());
      try {
        const tf::Record record = tf::decode_record(bytes);
        if (!have_table) {
          have_actor = have_actor || std::holds_alternative<tf::Actor>(record);
          have_table = have_actor && std::holds_alternative<tf::Drops>(record);
          if (!std::holds_alternative<tf::Actor>(record)) continue;
        }
        if (each(bytes, record)) ++counted;
      } catch (const mpx::ProtocolError& e) {
        if (malformed++ == 0) std::cerr << "mpx-trace: skipping a malformed record: " << strip_mpx(e.what()) << '\n';
      }
      if (limits.count && counted >= limits.count) break;
    }
  }
  if (malformed > 1) std::cerr << "mpx-trace: skipped " << malformed << " malformed records\n";
}

std::uint64_t clock_ns(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// ---- stats ----------------------------------------------------------------------------------------------------------

struct Stats {
  struct Count {
    std::uint64_t n = 0, bytes = 0;
  };
  std::map<std::pair<std::uint64_t, std::uint64_t>, Count> edges;  // by actor id: names may come later
  std::map<std::string, Count> kinds;
  std::map<std::string, std::vector<double>> latency_us;  // per request kind
  struct Depth {
    std::vector<std::pair<std::uint64_t, std::int64_t>> samples;
  };
  std::map<std::string, Depth> depths;
  struct Items {
    std::uint64_t in = 0, out = 0, lane_in = 0, lane_out = 0;
  };
  std::map<std::string, Items> items;  // by object
  tf::Drops drops;
  std::uint64_t messages = 0, bytes = 0, first_ts = 0, last_ts = 0;
  Model model;
  std::uint64_t index = 0;

  void operator()(const tf::Record& r) {
    if (auto* a = std::get_if<tf::Actor>(&r)) {
      model.add_actor(*a);
    } else if (auto* m = std::get_if<tf::Message>(&r)) {
      first_ts = messages ? std::min(first_ts, m->ts_ns) : m->ts_ns;
      last_ts = std::max(last_ts, m->ts_ns);
      ++messages;
      bytes += m->size;
      auto& e = edges[{m->from, m->to}];
      ++e.n;
      e.bytes += m->size;
      auto& k = kinds[m->kind_name];
      ++k.n;
      k.bytes += m->size;
      const auto answer = model.note(*m, index++);
      if (answer) latency_us[answer->kind].push_back(static_cast<double>(m->ts_ns - answer->request_ts) / 1e3);
      if (const auto flow = flow_of(*m, answer); flow == Flow::into || flow == Flow::out_of) {
        auto& i = items[m->object];
        (flow == Flow::into ? i.in : i.out) += 1;
        (flow == Flow::into ? i.lane_in : i.lane_out) += m->lane;
      }
    } else if (auto* d = std::get_if<tf::Drops>(&r)) {
      drops = *d;
    } else if (auto* g = std::get_if<tf::Gauge>(&r)) {
      if (g->name == "depth") depths[g->object].samples.emplace_back(g->ts_ns, g->value);
    }
  }

  static double percentile(std::vector<double>& v, double p) {
    std::sort(v.begin(), v.end());
    const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];  // nearest rank
  }

  void print(std::ostream& out) {
    char line[256];
    const double span = messages ? static_cast<double>(last_ts - first_ts) / 1e9 : 0.0;
    std::snprintf(line, sizeof line, "%llu messages, %llu bytes, %.3f s, %zu actors\n",
                  static_cast<unsigned long long>(messages), static_cast<unsigned long long>(bytes), span,
                  model.actors().size());
    out << line;
    out << "\nedges (sender -> receiver)             messages      bytes\n";
    for (const auto& [edge, c] : edges) {
      std::snprintf(line, sizeof line, "  %-36s %10llu %10llu\n", (model.label(edge.first) + " -> " + model.label(edge.second)).c_str(),
                    static_cast<unsigned long long>(c.n), static_cast<unsigned long long>(c.bytes));
      out << line;
    }
    out << "\nkinds                                  messages      bytes\n";
    for (const auto& [kind, c] : kinds) {
      std::snprintf(line, sizeof line, "  %-36s %10llu %10llu\n", kind.c_str(), static_cast<unsigned long long>(c.n),
                    static_cast<unsigned long long>(c.bytes));
      out << line;
    }
    out << "\nitems per object                           in        out  (lane in, out)\n";
    for (const auto& [object, i] : items) {
      std::snprintf(line, sizeof line, "  %-36s %10llu %10llu  (%llu, %llu)\n", object.c_str(),
                    static_cast<unsigned long long>(i.in), static_cast<unsigned long long>(i.out),
                    static_cast<unsigned long long>(i.lane_in), static_cast<unsigned long long>(i.lane_out));
      out << line;
    }
    out << "\nlatency request -> reply (us)           replies       p50        p90        p99\n";
    for (auto& [kind, v] : latency_us) {
      std::snprintf(line, sizeof line, "  %-36s %8zu %10.1f %10.1f %10.1f\n", kind.c_str(), v.size(),
                    percentile(v, 50), percentile(v, 90), percentile(v, 99));
      out << line;
    }
    out << "\nqueue depth over time (max per tenth of the trace)\n";
    for (const auto& [object, d] : depths) {
      std::int64_t max = 0;
      for (const auto& s : d.samples) max = std::max(max, s.second);
      std::vector<std::int64_t> buckets(10, -1);
      const auto t0 = d.samples.front().first;
      const auto width = std::max<std::uint64_t>(1, d.samples.back().first - t0 + 1);
      for (const auto& [ts, v] : d.samples) {
        auto& b = buckets[std::min<std::size_t>(9, static_cast<std::size_t>((ts - t0) * 10 / width))];
        b = std::max(b, v);
      }
      std::string series;
      for (auto b : buckets) series += (series.empty() ? "" : " ") + (b < 0 ? std::string("-") : std::to_string(b));
      std::snprintf(line, sizeof line, "  %-20s samples %llu, max %lld, final %lld: ", object.c_str(),
                    static_cast<unsigned long long>(d.samples.size()), static_cast<long long>(max),
                    static_cast<long long>(d.samples.back().second));
      out << line << series << '\n';
    }
    std::snprintf(line, sizeof line, "\ndrops: %llu in the sink queue, %llu to live subscribers\n",
                  static_cast<unsigned long long>(drops.queue), static_cast<unsigned long long>(drops.pub));
    out << line;
  }
};

// ---- exports --------------------------------------------------------------------------------------------------------

std::string json_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
    else out += static_cast<char>(c);
  }
  return out;
}

// Every message (a reply's request may be filtered out), and which of them pass the filters.
struct Collected {
  explicit Collected(Filters f) : filters(std::move(f)) { filters.prepare(); }
  Filters filters;
  Model model;
  std::vector<tf::Message> messages;
  std::vector<std::optional<Model::Answer>> answers;
  std::vector<bool> shown;
  std::optional<std::uint64_t> t0;
  void operator()(const tf::Record& r) {
    if (auto* a = std::get_if<tf::Actor>(&r)) {
      model.add_actor(*a);
    } else if (auto* m = std::get_if<tf::Message>(&r)) {
      if (!t0) t0 = m->ts_ns;
      answers.push_back(model.note(*m, messages.size()));
      const auto line = filters.grep_re ? format_line(model, *m, answers.back(), *t0, Style{}) : std::string();
      shown.push_back(filters.matches(model, *m, answers.back(), line, *t0));
      messages.push_back(*m);
    }
  }
};

// Chrome trace-event JSON (Perfetto, chrome://tracing): one track (thread) per actor, a slice per message on its
// sender's track, and a flow arrow from each request to its reply.
void export_chrome(const Collected& c, std::ostream& out) {
  std::map<std::uint64_t, int> tid;
  auto track = [&](std::uint64_t id) {
    auto [it, fresh] = tid.emplace(id, static_cast<int>(tid.size()) + 1);
    (void)fresh;
    return it->second;
  };
  for (const auto& [id, a] : c.model.actors()) track(id);
  std::uint64_t t0 = UINT64_MAX;
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    if (!c.shown[i]) continue;
    track(c.messages[i].from);
    track(c.messages[i].to);
    t0 = std::min(t0, c.messages[i].ts_ns);
  }
  auto us = [t0](std::uint64_t ts) { return static_cast<double>(ts - t0) / 1e3; };
  out << "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  out << R"({"ph":"M","name":"process_name","pid":1,"tid":0,"args":{"name":"mpx"}})";
  for (const auto& [id, t] : tid) {
    out << ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":" << t << ",\"args\":{\"name\":\""
        << json_escape(c.model.label(id)) << "\"}}";
  }
  char ts[64];
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    if (!c.shown[i]) continue;
    const auto& m = c.messages[i];
    std::snprintf(ts, sizeof ts, "%.3f", us(m.ts_ns));
    out << ",\n{\"ph\":\"X\",\"cat\":\"message\",\"name\":\"" << json_escape(kind_label(m, c.answers[i]))
        << "\",\"pid\":1,\"tid\":" << track(m.from) << ",\"ts\":" << ts << ",\"dur\":1,\"args\":{\"to\":\""
        << json_escape(c.model.label(m.to)) << "\",\"object\":\"" << json_escape(m.object)
        << "\",\"correlation\":" << m.correlation << ",\"size\":" << m.size;
    if (m.body) out << ",\"body\":\"" << json_escape(*m.body) << "\"";
    out << "}}";
  }
  // Flows only for matched pairs, so every start has its end.
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    if (!c.answers[i] || !c.shown[i] || !c.shown[c.answers[i]->request_index]) continue;
    const auto& reply = c.messages[i];
    const auto& request = c.messages[c.answers[i]->request_index];
    char a[64], b[64];
    std::snprintf(a, sizeof a, "%.3f", us(request.ts_ns));
    std::snprintf(b, sizeof b, "%.3f", us(reply.ts_ns));
    const auto name = json_escape(c.answers[i]->kind);
    out << ",\n{\"ph\":\"s\",\"cat\":\"reply\",\"name\":\"" << name << "\",\"id\":" << i << ",\"pid\":1,\"tid\":"
        << track(request.from) << ",\"ts\":" << a << "}";
    out << ",\n{\"ph\":\"f\",\"bp\":\"e\",\"cat\":\"reply\",\"name\":\"" << name << "\",\"id\":" << i
        << ",\"pid\":1,\"tid\":" << track(reply.from) << ",\"ts\":" << b << "}";
  }
  out << "\n]}\n";
}

// A participant id Mermaid accepts, and a label without the characters its grammar treats specially.
std::string mermaid_id(std::uint64_t id) { return "a" + std::to_string(id); }
// A message's text runs from the first colon to the end of the line, so later colons (queue:7) are kept.
std::string mermaid_text(std::string s, bool keep_colons = false) {
  for (auto& ch : s) {
    if (ch == ';' || ch == '#' || (ch == ':' && !keep_colons) || ch == '\n' || ch == '"' || ch == '%' || ch == '<' ||
        ch == '>')
      ch = ' ';
  }
  return s;
}

// The message sequence of the first N shown messages, every hop through the coordinator.
void export_sequence(const Collected& c, std::size_t first, std::ostream& out) {
  std::vector<std::size_t> drawn;
  std::size_t shown = 0;
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    if (!c.shown[i]) continue;
    ++shown;
    if (drawn.size() < first) drawn.push_back(i);
  }
  std::vector<std::uint64_t> order;  // participants in order of appearance
  for (auto i : drawn) {
    for (auto id : {c.messages[i].from, c.messages[i].to}) {
      if (std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
    }
  }
  out << "sequenceDiagram\n";
  for (auto id : order) out << "    participant " << mermaid_id(id) << " as " << mermaid_text(c.model.label(id)) << "\n";
  for (auto i : drawn) {
    const auto& m = c.messages[i];
    std::string text = kind_label(m, c.answers[i]);
    if (!m.object.empty()) text += " " + m.object;
    out << "    " << mermaid_id(m.from) << (Model::is_reply(m) ? "-->>" : "->>") << mermaid_id(m.to) << ": "
        << mermaid_text(text, true) << "\n";
  }
  if (shown > drawn.size()) out << "    %% " << shown - drawn.size() << " more messages not shown (--first)\n";
}

// The logical graph: actors and the objects between them, an edge per direction an item moved (solid, with the
// number of items) or an actor used an object otherwise (dashed, with the number of requests).
struct Graph {
  struct Key {
    std::string from, to;  // node ids
    bool items = false;
    auto operator<=>(const Key&) const = default;
  };
  std::map<std::uint64_t, std::string> actors;  // id -> label
  std::map<std::string, std::string> objects;   // name -> node id
  std::map<Key, std::uint64_t> edges;

  explicit Graph(const Collected& c) {
    for (std::size_t i = 0; i < c.messages.size(); ++i) {
      if (!c.shown[i]) continue;
      const auto& m = c.messages[i];
      const auto flow = flow_of(m, c.answers[i]);
      if (flow == Flow::none) continue;
      const std::uint64_t actor = m.direction == tf::Direction::in ? m.from : m.to;
      actors.emplace(actor, c.model.label(actor));
      auto [o, fresh] = objects.emplace(m.object, "o" + std::to_string(objects.size()));
      (void)fresh;
      const std::string a = "a" + std::to_string(actor);
      const bool items = flow != Flow::use;
      ++edges[flow == Flow::out_of ? Key{o->second, a, items} : Key{a, o->second, items}];
    }
  }
};

void export_graph_mermaid(const Collected& c, std::ostream& out) {
  const Graph g(c);
  out << "flowchart LR\n";
  for (const auto& [id, label] : g.actors) out << "    a" << id << "[\"" << mermaid_text(label) << "\"]\n";
  for (const auto& [name, node] : g.objects) out << "    " << node << "[(\"" << mermaid_text(name, true) << "\")]\n";
  for (const auto& [key, n] : g.edges) {
    out << "    " << key.from << (key.items ? " -->|" : " -.->|") << n << "| " << key.to << "\n";
  }
}

void export_dot(const Collected& c, std::ostream& out) {
  const Graph g(c);
  std::uint64_t max = 1;
  for (const auto& [key, n] : g.edges) max = std::max(max, n);
  out << "digraph mpx {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n";
  for (const auto& [id, label] : g.actors) out << "  a" << id << " [shape=box, label=\"" << json_escape(label) << "\"];\n";
  for (const auto& [name, node] : g.objects) {
    out << "  " << node << " [shape=cylinder, label=\"" << json_escape(name) << "\"];\n";
  }
  for (const auto& [key, n] : g.edges) {
    char pen[32];
    std::snprintf(pen, sizeof pen, "%.2f", 1.0 + 4.0 * static_cast<double>(n) / static_cast<double>(max));
    out << "  " << key.from << " -> " << key.to << " [label=\"" << n << "\", penwidth=" << pen
        << (key.items ? "" : ", style=dashed") << "];\n";
  }
  out << "}\n";
}

// ---- control of a running coordinator -------------------------------------------------------------------------------

mpx::wire::Envelope control(const std::string& endpoint, mpx::wire::Kind kind, std::string body, double timeout) {
  zmq::context_t context(1);
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  try {
    mpx::wire::configure(dealer, endpoint);
    // A tcp coordinator admits CURVE clients only: the session's keys (docs/distributed.md, "Keys and security").
    if (const char* keys = std::getenv("MPX_KEYS");
        keys != nullptr && mpx::wire::transport_of(endpoint) == mpx::wire::Transport::tcp) {
      mpx::wire::make_curve_client(dealer, mpx::wire::load_curve_client(keys));
    }
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint);
  } catch (const std::exception& e) {
    throw Failure("cannot connect to " + endpoint + ": " + strip_mpx(e.what()));
  }
  mpx::wire::Envelope request;
  request.header.kind = kind;
  request.header.correlation = 1;
  request.body.emplace_back(body.data(), body.size());
  mpx::wire::send(dealer, request, static_cast<std::uint64_t>(::getpid()));
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(static_cast<long>(timeout * 1000)));
  if (!(item.revents & ZMQ_POLLIN)) {
    throw Failure("no reply from a coordinator at " + endpoint + " within " + std::to_string(timeout).substr(0, 4) + " s");
  }
  std::optional<mpx::wire::Envelope> reply;
  try {
    reply = mpx::wire::recv(dealer);
  } catch (const mpx::ProtocolError& e) {
    throw Failure("malformed reply from " + endpoint + ": " + strip_mpx(e.what()));
  }
  if (reply->header.kind == mpx::wire::Kind::error) {
    auto [code, message] = reply->body_as<std::tuple<std::uint16_t, std::string>>();
    (void)code;
    throw Failure(strip_mpx(message));
  }
  return std::move(*reply);
}

std::string nil_body() { return mpx::encode(mpx::Object{}); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mpx-trace: watch, record, and analyse the messages of an mpx program"};
  app.set_version_flag("--version", "mpx-trace (mpx) " + std::string(mpx::version()));
  app.require_subcommand(1);
  std::string colour = "auto";
  app.add_option("--color", colour, "colour: auto (on a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}));

  std::string endpoint, file, output, format, spec;
  Filters filters;
  LiveLimits limits;
  std::size_t first = 100;
  double timeout = 3;

  auto* live = app.add_subcommand("live", "print records from a PUB endpoint as they happen");
  live->add_option("endpoint", endpoint, "the trace PUB endpoint (MPX_TRACE=pub:...)")->required();
  filters.add(live);
  limits.add(live);

  auto* record = app.add_subcommand("record", "write records from a PUB endpoint to a file");
  record->add_option("endpoint", endpoint, "the trace PUB endpoint")->required();
  record->add_option("-o,--output", output, "the record file to write")->required();
  limits.add(record);

  auto* show = app.add_subcommand("show", "print a record file");
  show->add_option("file", file, "a record file (.mpxt)")->required();
  filters.add(show);

  auto* stats = app.add_subcommand("stats", "counts, bytes, latencies, queue depths and drops of a record file");
  stats->add_option("file", file, "a record file (.mpxt)")->required();

  auto* exporter = app.add_subcommand("export", "convert a record file: chrome (Perfetto), mermaid or dot (the "
                                                "graph of actors and objects), sequence (a Mermaid sequence diagram)");
  exporter->add_option("--format", format, "chrome, mermaid, dot or sequence")->required();
  filters.add(exporter);
  exporter->add_option("file", file, "a record file (.mpxt)")->required();
  exporter->add_option("-o,--output", output, "where to write (default: standard output)");
  exporter->add_option("--first", first, "sequence: how many messages to draw (default 100)");

  auto* on = app.add_subcommand("on", "switch tracing on in a running coordinator");
  on->add_option("coordinator", endpoint, "the coordinator's endpoint (mpx::trace::coordinator_endpoint())")->required();
  on->add_option("spec", spec, "MPX_TRACE syntax, e.g. pub:tcp://127.0.0.1:5999,body:256")->required();
  on->add_option("--timeout", timeout, "seconds to wait for the coordinator (default 3)");
  auto* off = app.add_subcommand("off", "switch tracing off in a running coordinator");
  off->add_option("coordinator", endpoint, "the coordinator's endpoint")->required();
  off->add_option("--timeout", timeout, "seconds to wait for the coordinator (default 3)");
  auto* status = app.add_subcommand("status", "show a running coordinator's tracing state");
  status->add_option("coordinator", endpoint, "the coordinator's endpoint")->required();
  status->add_option("--timeout", timeout, "seconds to wait for the coordinator (default 3)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mpx-trace: " << e.what() << " (see --help)\n";
    return 1;
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    const Style style = style_for(colour);
    if (*live) {
      Printer printer(filters, style);
      receive(endpoint, limits, [&](std::string_view, const tf::Record& r) {
        const auto before = printer.printed();
        printer(r);
        std::cout.flush();
        return printer.printed() > before;
      });
      return 0;
    }
    if (*record) {
      std::ofstream out(output, std::ios::binary | std::ios::trunc);
      if (!out) throw Failure("cannot write " + output);
      tf::FileHeader header;
      header.wall_ns = static_cast<std::int64_t>(clock_ns(CLOCK_REALTIME));
      header.mono_ns = clock_ns(CLOCK_MONOTONIC);
      std::string frame;
      tf::append_framed(frame, tf::encode(header));
      std::uint64_t n = 0;
      receive(endpoint, limits, [&](std::string_view bytes, const tf::Record& r) {
        tf::append_framed(frame, bytes);
        out.write(frame.data(), static_cast<std::streamsize>(frame.size()));
        frame.clear();
        const bool message = std::holds_alternative<tf::Message>(r);
        n += message;
        return message;
      });
      out.write(frame.data(), static_cast<std::streamsize>(frame.size()));
      out.close();
      if (!out) throw Failure("cannot write " + output);
      std::cerr << "mpx-trace: recorded " << n << " messages to " << output << '\n';
      return 0;
    }
    if (*show) {
      Printer printer(filters, style);
      return read_file(file, [&](const tf::Record& r) { printer(r); });
    }
    if (*stats) {
      Stats s;
      const int rc = read_file(file, [&](const tf::Record& r) { s(r); });
      s.print(std::cout);
      return rc;
    }
    if (*exporter) {
      if (format != "chrome" && format != "mermaid" && format != "dot" && format != "sequence") {
        throw Failure("unknown export format '" + format + "' (chrome, mermaid, dot, sequence)");
      }
      Collected c(filters);
      const int rc = read_file(file, [&](const tf::Record& r) { c(r); });
      std::ofstream file_out;
      if (!output.empty() && output != "-") {
        file_out.open(output, std::ios::trunc);
        if (!file_out) throw Failure("cannot write " + output);
      }
      std::ostream& out = file_out.is_open() ? file_out : std::cout;
      if (format == "chrome") export_chrome(c, out);
      else if (format == "mermaid") export_graph_mermaid(c, out);
      else if (format == "sequence") export_sequence(c, first, out);
      else export_dot(c, out);
      out.flush();
      if (!out) throw Failure("cannot write " + output);
      return rc;
    }
    if (*on) {
      auto reply = control(endpoint, mpx::wire::Kind::trace_enable, mpx::encode(std::make_tuple(spec)), timeout);
      auto [pub] = reply.body_as<std::tuple<std::string>>();
      std::cout << "tracing on" << (pub.empty() ? "" : ", live at " + pub) << '\n';
      return 0;
    }
    if (*off) {
      auto reply = control(endpoint, mpx::wire::Kind::trace_disable, nil_body(), timeout);
      auto [recorded, dropped, pub_dropped] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>>();
      std::cout << "tracing off: " << recorded << " records, " << dropped << " dropped, " << pub_dropped
                << " not delivered live\n";
      return 0;
    }
    if (*status) {
      auto reply = control(endpoint, mpx::wire::Kind::trace_status, nil_body(), timeout);
      auto [is_on, current, pub, recorded, dropped, pub_dropped] =
          reply.body_as<std::tuple<bool, std::string, std::string, std::uint64_t, std::uint64_t, std::uint64_t>>();
      if (!is_on) {
        std::cout << "tracing off\n";
      } else {
        std::cout << "tracing on: " << current << (pub.empty() ? "" : " (live at " + pub + ")") << "; " << recorded
                  << " records, " << dropped << " dropped, " << pub_dropped << " not delivered live\n";
      }
      return 0;
    }
  } catch (const Failure& e) {
    std::cout.flush();
    std::cerr << "mpx-trace: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "mpx-trace: " << strip_mpx(e.what()) << '\n';
    return 1;
  }
  return 1;
}
