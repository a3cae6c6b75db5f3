// Tracing with real processes and real sockets: a known program's messages come out in the order it sent them,
// mpx-trace's stats, exports and filters agree with the file, a slow live subscriber costs drops and never a stall,
// a running coordinator is switched on and off from outside, and bad files get clean one-line errors.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.hpp>

#include "children.hpp"
#include "temp_dir.hpp"
#include "trace/format.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace tf = mpx::trace::format;

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

// Tracing is process-wide: whatever a test does, it ends off.
struct TraceOff {
  ~TraceOff() { mpx::trace::disable(); }
};

fs::path tool_path() {
  if (const char* p = std::getenv("MPX_TRACE_TOOL")) return p;
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "tools" / "mpx-trace";
}

struct Run {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Starts a program with its standard output (and error, if `err` is given) going to files.
pid_t start(std::vector<std::string> args, const std::string& out, const std::string& err = {}) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!err.empty()) posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  return pid;
}

// Runs a program to completion, its output captured in files of `dir`.
Run run(const TempDir& dir, std::vector<std::string> args) {
  const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
  const pid_t pid = start(std::move(args), out, err);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  Run r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

Run tool(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), tool_path().string());
  return run(dir, std::move(args));
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

struct Trace {
  tf::FileHeader header;
  std::vector<tf::Message> messages;
  std::vector<tf::Actor> actors;
  std::vector<tf::Drops> drops;
  std::vector<tf::Gauge> gauges;
  std::string problem;
};

Trace read_trace(const std::string& path) {
  tf::FileReader reader(path);
  Trace t;
  t.header = reader.header();
  t.actors = t.header.actors;
  while (auto r = reader.next()) {
    if (auto* m = std::get_if<tf::Message>(&*r)) t.messages.push_back(*m);
    else if (auto* a = std::get_if<tf::Actor>(&*r)) t.actors.push_back(*a);
    else if (auto* d = std::get_if<tf::Drops>(&*r)) t.drops.push_back(*d);
    else if (auto* g = std::get_if<tf::Gauge>(&*r)) t.gauges.push_back(*g);
  }
  t.problem = reader.problem();
  return t;
}

// The kinds `actor` sent to the coordinator, in order.
std::vector<std::string> sent_by(const Trace& t, std::uint64_t actor) {
  std::vector<std::string> kinds;
  for (const auto& m : t.messages) {
    if (m.direction == tf::Direction::in && m.from == actor) kinds.push_back(m.kind_name);
  }
  return kinds;
}

// Whether `want` occurs in `seq` in this order (other kinds may come between).
bool in_order(const std::vector<std::string>& seq, const std::vector<std::string>& want) {
  std::size_t i = 0;
  for (const auto& k : seq) {
    if (i < want.size() && k == want[i]) ++i;
  }
  return i == want.size();
}

std::size_t count_kind(const Trace& t, const std::string& kind) {
  std::size_t n = 0;
  for (const auto& m : t.messages) n += m.kind_name == kind;
  return n;
}

void ponger(mpx::Connection conn) {
  const auto ping = conn.recv<std::string>();
  conn.send(ping == "ping" ? std::string("pong") : std::string("what?"));
}

std::uint64_t self() { return static_cast<std::uint64_t>(::getpid()); }

int square(int x) { return x * x; }

// The known program: a Pipe ping-pong with a child process, a Queue put/get in this process, then a Pool apply on one
// worker, closed and joined so the worker's last messages are in the trace too.
pid_t known_program() {
  auto [here, there] = mpx::Pipe();
  mpx::Process p(mpx::ProcessOptions{"ponger", true, std::nullopt}, ponger, there);
  p.start();
  here.send(std::string("ping"));
  REQUIRE(here.recv<std::string>() == "pong");
  p.join();
  REQUIRE(p.exitcode() == 0);
  mpx::Queue<std::string> q;
  q.put("first");
  q.put("second");
  REQUIRE(q.get() == "first");
  REQUIRE(q.get() == "second");
  mpx::Pool pool(1);
  REQUIRE(pool.apply(square, 7) == 49);
  pool.close();
  pool.join();
  return p.pid();
}

// Records the known program to dir/run.mpxt and returns the child's pid.
pid_t record_known_program(const TempDir& dir) {
  mpx::trace::enable("file:" + (dir / "run.mpxt") + ",body:256");
  const pid_t child = known_program();
  mpx::trace::disable();
  return child;
}

}  // namespace

TEST_CASE("a traced program's messages come out in the order it sent them, with edges, objects and bodies") {
  TraceOff off;
  TempDir dir;
  const pid_t child = record_known_program(dir);
  const auto t = read_trace(dir / "run.mpxt");
  REQUIRE(t.problem.empty());
  REQUIRE(t.header.version == tf::version);

  std::map<std::uint64_t, tf::Actor> actors;
  for (const auto& a : t.actors) actors[a.id] = a;
  REQUIRE(actors.count(tf::coordinator_actor));
  CHECK(actors[tf::coordinator_actor].name == "coordinator");
  REQUIRE(actors.count(self()));
  CHECK(actors[self()].name == "MainProcess");
  REQUIRE(actors.count(static_cast<std::uint64_t>(child)));
  CHECK(actors[static_cast<std::uint64_t>(child)].name == "ponger");

  // Every hop is an edge through the coordinator: into it, or out of it.
  for (const auto& m : t.messages) {
    if (m.direction == tf::Direction::in) CHECK(m.to == tf::coordinator_actor);
    else CHECK(m.from == tf::coordinator_actor);
  }

  const auto mine = sent_by(t, self());
  // The queue's puts are on its shared-memory ring, recorded by this process where they happened.
  CHECK(in_order(mine, {"pipe_create", "pipe_send", "pipe_recv", "queue_create", "queue_put", "queue_put"}));
  const auto childs = sent_by(t, static_cast<std::uint64_t>(child));
  CHECK(in_order(childs, {"hello", "pipe_attach", "pipe_recv", "pipe_send"}));

  // The child's recv was answered with the ping, and our recv with the pong: bodies decoded as JSON.
  bool ping_delivered = false, pong_delivered = false, ping_sent = false;
  for (const auto& m : t.messages) {
    if (!m.body) continue;
    if (m.kind_name == "pipe_send" && m.from == self() && m.body->find("\"ping\"") != std::string::npos) ping_sent = true;
    if (m.kind_name == "ok" && m.to == static_cast<std::uint64_t>(child) && m.body->find("\"ping\"") != std::string::npos)
      ping_delivered = true;
    if (m.kind_name == "ok" && m.to == self() && m.body->find("\"pong\"") != std::string::npos) pong_delivered = true;
  }
  CHECK(ping_sent);
  CHECK(ping_delivered);
  CHECK(pong_delivered);

  // Objects are named by service; the queue's puts and gets name the same queue, and its depth was sampled.
  std::string queue_name;
  for (const auto& m : t.messages) {
    if (m.kind_name == "queue_put" || (m.kind_name == "queue_get" && m.lane)) {
      CHECK(m.object.rfind("queue:", 0) == 0);
      if (queue_name.empty()) queue_name = m.object;
      CHECK(m.object == queue_name);
    }
    if (m.kind_name == "pipe_send") CHECK(m.object.rfind("pipe:", 0) == 0);
  }
  std::size_t lane_puts = 0, lane_gets = 0;
  for (const auto& m : t.messages) {
    lane_puts += m.lane && m.kind_name == "queue_put" && m.from == self();
    lane_gets += m.lane && m.kind_name == "queue_get" && m.to == self();
    if (m.lane && m.kind_name == "queue_get" && m.body) CHECK((*m.body == "\"first\"" || *m.body == "\"second\""));
  }
  CHECK(lane_puts == 2);
  CHECK(lane_gets == 2);
  REQUIRE_FALSE(t.gauges.empty());
  INFO(tool(dir, {"show", dir / "run.mpxt"}).out);  // the whole trace, if anything below fails
  CHECK(t.gauges.back().object == queue_name);
  CHECK(t.gauges.back().value == 0);

  // The pool apply. Its worker is the process that asked for tasks: a PoolWorker, neither us nor the ponger.
  std::uint64_t worker = 0;
  std::set<std::uint64_t> take_ids;  // the correlations of the worker's pool_take requests
  for (const auto& m : t.messages) {
    if (m.direction != tf::Direction::in || m.kind_name != "pool_take") continue;
    if (worker == 0) worker = m.from;
    CHECK(m.from == worker);  // one worker: every take is its
    take_ids.insert(m.correlation);
  }
  REQUIRE(worker != 0);
  CHECK(worker != self());
  CHECK(worker != static_cast<std::uint64_t>(child));
  REQUIRE(actors.count(worker));
  CHECK(actors[worker].name.rfind("PoolWorker-", 0) == 0);
  CHECK(in_order(mine, {"queue_put", "pool_create", "pool_submit", "pool_close"}));
  CHECK(in_order(sent_by(t, worker), {"hello", "pool_take", "pool_take"}));
  CHECK(count_kind(t, "pool_submit") == 1);
  CHECK(count_kind(t, "pool_delivery") == 1);

  // The task's path, in causal order: owner -> coordinator (pool_submit), coordinator -> worker (the task, as the
  // reply to one of its takes), worker -> coordinator (the next take brings the result back), coordinator -> owner
  // (pool_delivery, carrying the worker's result record), all naming the same pool.
  auto find = [&t](std::size_t from, auto&& wanted) {
    for (std::size_t i = from; i < t.messages.size(); ++i) {
      if (wanted(t.messages[i])) return i;
    }
    return t.messages.size();
  };
  const auto submit = find(0, [](const tf::Message& m) {
    return m.direction == tf::Direction::in && m.from == self() && m.kind_name == "pool_submit";
  });
  REQUIRE(submit < t.messages.size());
  const std::string pool_name = t.messages[submit].object;
  CHECK(pool_name.rfind("pool:", 0) == 0);
  const auto task = find(submit, [&](const tf::Message& m) {
    return m.direction == tf::Direction::out && m.to == worker && m.kind_name == "ok" && take_ids.count(m.correlation);
  });
  REQUIRE(task < t.messages.size());
  CHECK(t.messages[task].object == pool_name);
  const auto result = find(task, [&](const tf::Message& m) {
    return m.direction == tf::Direction::in && m.from == worker && m.kind_name == "pool_take";
  });
  REQUIRE(result < t.messages.size());
  CHECK(t.messages[result].object == pool_name);
  const auto delivery = find(result, [](const tf::Message& m) {
    return m.direction == tf::Direction::out && m.to == self() && m.kind_name == "pool_delivery";
  });
  REQUIRE(delivery < t.messages.size());
  CHECK(t.messages[delivery].object == pool_name);
  REQUIRE(t.messages[delivery].body);
  CHECK(t.messages[delivery].body->find("," + std::to_string(worker) + ",") != std::string::npos);

  // The closing drop count: nothing was lost.
  REQUIRE_FALSE(t.drops.empty());
  CHECK(t.drops.back().queue == 0);
}

TEST_CASE("mpx-trace stats, show and the exports agree with the file") {
  TraceOff off;
  TempDir dir;
  const pid_t child = record_known_program(dir);
  const auto t = read_trace(dir / "run.mpxt");
  const std::string file = dir / "run.mpxt";

  SECTION("stats: counts per kind and per edge match the records; latencies for request kinds") {
    const auto r = tool(dir, {"stats", file});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    std::map<std::string, std::size_t> kinds;
    for (const auto& m : t.messages) ++kinds[m.kind_name];
    for (const auto& [kind, n] : kinds) {
      std::smatch match;
      const std::regex re("\\n  " + kind + " +([0-9]+) +[0-9]+\\n");
      REQUIRE(std::regex_search(r.out, match, re));
      CHECK(std::stoul(match[1]) == n);
    }
    std::size_t child_to_coordinator = 0;
    for (const auto& m : t.messages) child_to_coordinator += m.from == static_cast<std::uint64_t>(child);
    std::smatch match;
    const std::regex edge("\\n  ponger\\(" + std::to_string(child) + "\\) -> coordinator +([0-9]+) ");
    REQUIRE(std::regex_search(r.out, match, edge));
    CHECK(std::stoul(match[1]) == child_to_coordinator);
    CHECK(std::regex_search(r.out, std::regex("\\n  queue_create +1 +[0-9.]+ +[0-9.]+ +[0-9.]+\\n")));
    // The ring's operations are sampled once per drain of the trace rings, so the peak may fall between samples.
    CHECK(std::regex_search(r.out, std::regex("\\n  queue:[0-9]+ +samples [0-9]+, max [0-2], final 0")));
    CHECK(r.out.find("drops: 0 in the sink queue") != std::string::npos);
  }

  SECTION("show: filters by kind, actor and object; a reply matches its request's kind") {
    auto r = tool(dir, {"show", file, "--kind", "queue_get"});
    REQUIRE(r.rc == 0);
    const auto lines = lines_of(r.out);
    std::size_t lines_wanted = 0;  // a request and its reply, or one get on the queue's ring
    for (const auto& m : t.messages) lines_wanted += m.kind_name != "queue_get" ? 0 : m.lane ? 1 : 2;
    CHECK(lines_wanted >= 2);
    CHECK(lines.size() == lines_wanted);
    for (const auto& l : lines) CHECK(l.find("queue_get") != std::string::npos);

    r = tool(dir, {"show", file, "--actor", "ponger", "--grep", "\"ping\""});
    REQUIRE(r.rc == 0);
    REQUIRE(lines_of(r.out).size() == 1);
    CHECK(lines_of(r.out)[0].find("coordinator -> ponger(") != std::string::npos);
    CHECK(lines_of(r.out)[0].find("ok(pipe_recv)") != std::string::npos);
    CHECK(r.out.find("\033[") == std::string::npos);  // piped: no colour
    r = tool(dir, {"--color", "always", "show", file, "--actor", "ponger", "--grep", "\"ping\""});
    CHECK(r.out.find("\033[") != std::string::npos);

    r = tool(dir, {"show", file, "--object", "pipe"});
    REQUIRE(r.rc == 0);
    CHECK(lines_of(r.out).size() >= 6);
    for (const auto& l : lines_of(r.out)) CHECK(l.find("pipe:") != std::string::npos);
  }

  SECTION("chrome: valid JSON, one track per actor, every flow start has its end") {
    const auto out = dir / "run.json";
    auto r = tool(dir, {"export", "--format", "chrome", file, "-o", out});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const std::string check =
        "import json, sys\n"
        "d = json.load(open(sys.argv[1]))\n"
        "ev = d['traceEvents']\n"
        "names = {e['args']['name'] for e in ev if e['ph'] == 'M' and e['name'] == 'thread_name'}\n"
        "assert 'coordinator' in names and any(n.startswith('ponger(') for n in names), names\n"
        "s = sorted(e['id'] for e in ev if e['ph'] == 's')\n"
        "f = sorted(e['id'] for e in ev if e['ph'] == 'f')\n"
        "assert s == f and len(s) == len(set(s)) and s, (s, f)\n"
        "assert all(e['ts'] >= 0 for e in ev if 'ts' in e)\n"
        "print(len(s))\n";
    r = run(dir, {"python3", "-c", check, out});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(std::stoul(r.out) >= 5);
  }

  SECTION("sequence: a well formed Mermaid sequence diagram of the first N messages") {
    auto r = tool(dir, {"export", "--format", "sequence", "--first", "12", file});
    REQUIRE(r.rc == 0);
    const auto lines = lines_of(r.out);
    REQUIRE(lines.size() > 2);
    CHECK(lines[0] == "sequenceDiagram");
    const std::regex participant("    participant (a[0-9]+) as [^;#:\"]+");
    const std::regex arrow("    (a[0-9]+)--?>>(a[0-9]+): [^;#\"]+");
    const std::regex more("    %% [0-9]+ more messages not shown \\(--first\\)");
    std::set<std::string> declared;
    std::size_t arrows = 0;
    for (std::size_t i = 1; i < lines.size(); ++i) {
      std::smatch m;
      if (std::regex_match(lines[i], m, participant)) {
        CHECK(arrows == 0);  // every participant before the first message
        declared.insert(m[1]);
      } else if (std::regex_match(lines[i], m, arrow)) {
        ++arrows;
        CHECK(declared.count(m[1]));
        CHECK(declared.count(m[2]));
      } else {
        CHECK(std::regex_match(lines[i], more));
      }
    }
    CHECK(arrows == 12);
  }

  SECTION("dot: graphviz accepts the graph of actors and objects; edge labels are item counts") {
    const auto out = dir / "run.dot";
    auto r = tool(dir, {"export", "--format", "dot", file, "-o", out});
    REQUIRE(r.rc == 0);
    std::size_t child_sent = 0;
    for (const auto& m : t.messages) child_sent += m.from == static_cast<std::uint64_t>(child) && m.kind_name == "pipe_send";
    REQUIRE(child_sent == 1);
    CHECK(std::regex_search(slurp(out), std::regex("a" + std::to_string(child) + " -> o[0-9]+ \\[label=\"1\", ")));
    r = run(dir, {"dot", "-Tsvg", out, "-o", dir / "run.svg"});
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(slurp(dir / "run.svg").find("<svg") != std::string::npos);
  }
}

TEST_CASE("mpx-trace: missing, corrupted and truncated files, bad formats and unreachable endpoints") {
  TraceOff off;
  TempDir dir;
  record_known_program(dir);
  const std::string good = dir / "run.mpxt";
  const std::string bytes = slurp(good);
  auto one_line = [](const Run& r) { return r.err.size() > 0 && r.err.find('\n') == r.err.size() - 1; };

  SECTION("missing file") {
    auto r = tool(dir, {"show", dir / "nope.mpxt"});
    CHECK(r.rc == 1);
    CHECK(one_line(r));
    CHECK(r.err.find("cannot open") != std::string::npos);
  }
  SECTION("not a trace file") {
    std::ofstream(dir / "junk.mpxt") << "this is not a trace file at all";
    auto r = tool(dir, {"stats", dir / "junk.mpxt"});
    CHECK(r.rc == 1);
    CHECK(one_line(r));
    CHECK(r.err.find("not an mpx trace file") != std::string::npos);
  }
  SECTION("truncated: prints what it can and says where it stopped") {
    std::ofstream(dir / "cut.mpxt", std::ios::binary) << bytes.substr(0, bytes.size() - 3);
    auto r = tool(dir, {"show", dir / "cut.mpxt"});
    CHECK(r.rc == 2);
    CHECK(one_line(r));
    CHECK(r.err.find("truncated at byte") != std::string::npos);
    CHECK(lines_of(r.out).size() >= 10);
  }
  SECTION("a corrupted record in the middle") {
    // The header frame, then the first record: replace that record's first byte with one msgpack never uses.
    std::string bad = bytes;
    const std::uint32_t header_len = static_cast<unsigned char>(bad[0]) | (static_cast<unsigned char>(bad[1]) << 8);
    bad[4 + header_len + 4] = static_cast<char>(0xc1);
    std::ofstream(dir / "bad.mpxt", std::ios::binary) << bad;
    auto r = tool(dir, {"show", dir / "bad.mpxt"});
    CHECK(r.rc == 2);
    CHECK(one_line(r));
    CHECK(r.err.find("corrupted record 1 at byte " + std::to_string(4 + header_len)) != std::string::npos);
  }
  SECTION("an unknown export format") {
    auto r = tool(dir, {"export", "--format", "svg", good});
    CHECK(r.rc == 1);
    CHECK(one_line(r));
    CHECK(r.err.find("unknown export format 'svg'") != std::string::npos);
  }
  SECTION("an unreachable endpoint") {
    auto r = tool(dir, {"live", "ipc://" + (dir / "nobody.sock"), "--connect-timeout", "0.5"});
    CHECK(r.rc == 1);
    CHECK(one_line(r));
    CHECK(r.err.find("cannot reach") != std::string::npos);
    r = tool(dir, {"status", "ipc://" + (dir / "nobody.sock"), "--timeout", "0.5"});
    CHECK(r.rc == 1);
    CHECK(one_line(r));
  }
}

TEST_CASE("a slow live subscriber costs drops, counted in the trace, and never stalls the program") {
  TraceOff off;
  TempDir dir;
  const std::string endpoint = "ipc://" + (dir / "live.sock");
  mpx::trace::enable("file:" + (dir / "run.mpxt") + ",pub:" + endpoint + ",hwm:1,body:2048");
  // A subscriber that never reads.
  zmq::context_t context;
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::rcvhwm, 1);
  sub.set(zmq::sockopt::linger, 0);
  sub.connect(endpoint);
  sub.set(zmq::sockopt::subscribe, "");

  mpx::Queue<std::string> q;
  const std::string item(1500, 'x');
  const auto start = Clock::now();
  int ops = 0;
  for (; ops < 20000 && mpx::trace::status().pub_dropped == 0; ++ops) {
    q.put(item);
    (void)q.get();
  }
  const auto elapsed = Clock::now() - start;
  const auto status = mpx::trace::status();
  CHECK(status.pub_dropped > 0);
  CHECK(status.dropped == 0);
  CHECK(elapsed < 30s);  // an anti-hang bound, not a performance claim
  mpx::trace::disable();

  const auto t = read_trace(dir / "run.mpxt");
  REQUIRE(t.problem.empty());
  REQUIRE_FALSE(t.drops.empty());
  CHECK(t.drops.back().pub >= status.pub_dropped);
  CHECK(count_kind(t, "queue_put") == static_cast<std::size_t>(ops));  // the file lost nothing
}

TEST_CASE("a running coordinator is switched on and off from outside; live shows it as it happens") {
  TraceOff off;
  TempDir dir;
  mpx::Queue<int> q;  // the coordinator is running
  const std::string coordinator = mpx::trace::coordinator_endpoint();
  const std::string endpoint = "ipc://" + (dir / "live.sock");

  auto r = tool(dir, {"on", coordinator, "pub:" + endpoint + ",body:64"});
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("live at " + endpoint) != std::string::npos);
  CHECK(mpx::trace::enabled());

  // mpx-trace live in the background, until it has printed 3 queue_get lines.
  const std::string out = dir / "live.txt";
  // mpx-trace live until it has printed 3 queue_get lines, and mpx-trace record until it has 20 messages, both in
  // the background while this process keeps the queue busy.
  const std::string recorded = dir / "recorded.mpxt";
  std::map<pid_t, int> children;
  children[start({tool_path().string(), "live", endpoint, "--kind", "queue_get", "--count", "3"}, out)] = -1;
  children[start({tool_path().string(), "record", endpoint, "-o", recorded, "--count", "20"}, dir / "record.txt",
                 dir / "record.err")] = -1;
  const auto deadline = Clock::now() + 20s;
  std::size_t running = children.size();
  for (int i = 0; running > 0 && Clock::now() < deadline; ++i) {
    q.put(i);
    (void)q.get();
    for (auto& [pid, status] : children) {
      if (status == -1 && ::waitpid(pid, &status, WNOHANG) == pid) --running;
    }
  }
  for (auto& [pid, status] : children) {
    if (status == -1) {  // an anti-hang bound: kill what is still running, and fail below
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  REQUIRE(running == 0);
  const auto lines = lines_of(slurp(out));
  REQUIRE(lines.size() == 3);
  for (const auto& l : lines) {
    CHECK(l.find("queue_get") != std::string::npos);
    CHECK(l.find("MainProcess(" + std::to_string(::getpid()) + ")") != std::string::npos);  // the actor table arrived
  }
  const auto rec = read_trace(recorded);
  CHECK(rec.problem.empty());
  CHECK(rec.messages.size() == 20);
  bool named = false;
  for (const auto& a : rec.actors) named = named || (a.id == self() && a.name == "MainProcess");
  CHECK(named);

  r = tool(dir, {"status", coordinator});
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("tracing on: pub:" + endpoint) != std::string::npos);
  r = tool(dir, {"off", coordinator});
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("tracing off:") != std::string::npos);
  CHECK_FALSE(mpx::trace::enabled());
  r = tool(dir, {"on", coordinator, "body:12"});
  CHECK(r.rc == 1);
  CHECK(r.err.find("name no sink") != std::string::npos);
  CHECK_FALSE(mpx::trace::enabled());
}

TEST_CASE("trace options: the MPX_TRACE syntax and its errors") {
  TraceOff off;
  const auto o = mpx::trace::Options::parse("file:run.mpxt,pub:tcp://127.0.0.1:5999,body:256,queue:100,hwm:7");
  CHECK(o.file == "run.mpxt");
  CHECK(o.pub == "tcp://127.0.0.1:5999");
  CHECK(o.body == 256);
  CHECK(o.queue == 100);
  CHECK(o.hwm == 7);
  CHECK(mpx::trace::Options::parse(o.to_string()).to_string() == o.to_string());
  CHECK(o.kinds.empty());
  const auto filtered = mpx::trace::Options::parse("file:x,kind:queue_put,kind:ok");
  CHECK(filtered.kinds == std::vector<std::string>{"queue_put", "ok"});
  CHECK(mpx::trace::Options::parse(filtered.to_string()).kinds == filtered.kinds);
  CHECK_THROWS_WITH(mpx::trace::Options::parse("file:x,kind:queue_putt"), Catch::Contains("kind:queue_putt"));
  CHECK_THROWS_AS(mpx::trace::Options::parse(""), mpx::ValueError);
  CHECK_THROWS_AS(mpx::trace::Options::parse("body:10"), mpx::ValueError);
  CHECK_THROWS_AS(mpx::trace::Options::parse("file:x,body:ten"), mpx::ValueError);
  CHECK_THROWS_AS(mpx::trace::Options::parse("file:x,colour:red"), mpx::ValueError);
  CHECK_THROWS_AS(mpx::trace::Options::parse("file:x,queue:0"), mpx::ValueError);
  CHECK_THROWS_AS(mpx::trace::enable("file:/nonexistent-dir/x.mpxt"), mpx::Error);
  CHECK_FALSE(mpx::trace::enabled());
  CHECK(mpx::trace::compiled_in());
}

// Run only by the next test, in a child test process started with MPX_TRACE set (hidden from a normal run).
TEST_CASE("traced by MPX_TRACE: a queue round trip", "[.]") {
  mpx::Queue<int> q;
  q.put(7);
  REQUIRE(q.get() == 7);
}

TEST_CASE("MPX_TRACE traces a whole program from its start, and its exit completes the file") {
  TempDir dir;
  const std::string file = dir / "env.mpxt";
  const auto self_exe = fs::read_symlink("/proc/self/exe").string();
  const auto r = run(dir, {"env", "MPX_TRACE=file:" + file + ",body:32", self_exe, "traced by MPX_TRACE: a queue round trip"});
  INFO(r.out + r.err);
  REQUIRE(r.rc == 0);
  const auto t = read_trace(file);
  CHECK(t.problem.empty());
  REQUIRE_FALSE(t.drops.empty());  // the closing drop count, written at exit
  CHECK(t.drops.back().queue == 0);
  CHECK(count_kind(t, "queue_create") == 1);
  bool got_seven = false;
  for (const auto& m : t.messages) got_seven = got_seven || (m.kind_name == "queue_put" && m.lane && m.body == "7");
  CHECK(got_seven);
  bool main_named = false;
  for (const auto& a : t.actors) main_named = main_named || (a.name == "MainProcess" && a.id != self());
  CHECK(main_named);
}

TEST_CASE("name_object: a service or a program names an object in traces") {
  TraceOff off;
  TempDir dir;
  mpx::Queue<std::string> q;
  mpx::trace::name_object(q.id(), "queue:jobs");
  mpx::trace::enable("file:" + (dir / "named.mpxt"));
  q.put("job");
  REQUIRE(q.get() == "job");
  mpx::trace::disable();
  const auto t = read_trace(dir / "named.mpxt");
  std::size_t named = 0;
  for (const auto& m : t.messages) {
    if (m.object_id == q.id()) {
      CHECK(m.object == "queue:jobs");
      ++named;
    }
  }
  CHECK(named >= 2);  // the put and the get, on the queue's ring
  REQUIRE_FALSE(t.gauges.empty());
  CHECK(t.gauges.back().object == "queue:jobs");
}

TEST_CASE("a bad MPX_TRACE is reported on stderr and ignored; the program still runs") {
  TempDir dir;
  const auto self_exe = fs::read_symlink("/proc/self/exe").string();
  const auto r = run(dir, {"env", "MPX_TRACE=file:" + (dir / "x.mpxt") + ",body:lots", self_exe,
                           "traced by MPX_TRACE: a queue round trip"});
  CHECK(r.rc == 0);
  CHECK(r.err.find("mpx: ignoring MPX_TRACE=") != std::string::npos);
  CHECK(r.err.find("body:lots is not a number") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "x.mpxt"));
}

TEST_CASE("a sink queue that overflows drops records, and the file accounts for every one") {
  TraceOff off;
  TempDir dir;
  mpx::Queue<int> q;
  // A one-record queue: a burst of posted puts outruns the sink thread.
  mpx::trace::enable("file:" + (dir / "small.mpxt") + ",queue:1");
  for (int i = 0; i < 5000; ++i) q.put(i);
  int in_order = 0;
  for (int i = 0; i < 5000; ++i) in_order += q.get() == i;
  CHECK(in_order == 5000);  // dropping records changes nothing for the program
  mpx::trace::disable();
  const auto status = mpx::trace::status();
  const auto t = read_trace(dir / "small.mpxt");
  REQUIRE(t.problem.empty());
  REQUIRE_FALSE(t.drops.empty());
  // What reached the file is exactly what was queued; what was not is the closing drop count.
  CHECK(t.messages.size() + t.gauges.size() == status.recorded);
  CHECK(t.drops.back().queue == status.dropped);
  CHECK(status.recorded + status.dropped >= 10000);  // at least every put and its depth sample
  if (status.dropped == 0) WARN("the sink kept up with a one-record queue; nothing was dropped this time");
}

namespace {

constexpr int pipeline_items = 300;

void pipeline_producer(mpx::Queue<int> jobs, int workers) {
  for (int i = 0; i < pipeline_items; ++i) jobs.put(i);
  for (int w = 0; w < workers; ++w) jobs.put(-1);
}

void pipeline_worker(mpx::Queue<int> jobs, mpx::Queue<int> results) {
  for (int x = jobs.get(); x >= 0; x = jobs.get()) results.put(2 * x);
}

// producer -> queue "jobs" -> worker[0], worker[1] -> queue "results" -> this process, traced to dir/pipeline.mpxt.
void record_pipeline(const TempDir& dir) {
  mpx::trace::enable("file:" + (dir / "pipeline.mpxt"));
  {
    mpx::Queue<int> jobs({.maxsize = 64, .name = "jobs"});
    mpx::Queue<int> results({.name = "results"});
    mpx_test::Children children;
    for (const char* name : {"worker[0]", "worker[1]"}) {
      children.start(mpx::ProcessOptions{name, true, std::nullopt}, pipeline_worker, jobs, results);
    }
    children.start(mpx::ProcessOptions{"producer", true, std::nullopt}, pipeline_producer, jobs, 2);
    long sum = 0;
    for (int i = 0; i < pipeline_items; ++i) sum += results.get(true, 60s);
    CHECK(sum == static_cast<long>(pipeline_items) * (pipeline_items - 1));
    for (auto& p : children.procs) {
      CHECK(p.join(60s));  // a bound against a hang: a worker still running fails here, not in exitcode()
      CHECK(p.exitcode() == 0);
    }
  }
  mpx::trace::disable();
}

// Reads a dot or mermaid graph export and prints its item edges as `from -> to count`, actors by name (the pid cut
// off), one line each, sorted; dashed edges (other requests) are left out.
const char* const graph_edges_script = R"PY(
import re, sys
text = open(sys.argv[2]).read()
labels, edges = {}, {}
if sys.argv[1] == 'dot':
    assert text.startswith('digraph mpx {') and text.rstrip().endswith('}'), text[:80]
    for node, label in re.findall(r'^  (\w+) \[shape=\w+, label="([^"]*)"\];$', text, re.M):
        labels[node] = label
    for a, b, n, rest in re.findall(r'^  (\w+) -> (\w+) \[label="(\d+)", penwidth=[0-9.]+(.*)\];$', text, re.M):
        if 'dashed' not in rest:
            edges[(a, b)] = int(n)
else:
    lines = text.splitlines()
    assert lines[0] == 'flowchart LR', lines[0]
    for line in lines[1:]:
        m = re.fullmatch(r'    (\w+)\["([^"]*)"\]', line) or re.fullmatch(r'    (\w+)\[\("([^"]*)"\)\]', line)
        if m:
            labels[m.group(1)] = m.group(2)
            continue
        m = re.fullmatch(r'    (\w+) (-->|-\.->)\|(\d+)\| (\w+)', line)
        assert m, line
        if m.group(2) == '-->':
            edges[(m.group(1), m.group(4))] = int(m.group(3))
name = lambda node: re.sub(r'\(\d+\)$', '', labels[node])
for line in sorted('%s -> %s %d' % (name(a), name(b), n) for (a, b), n in edges.items()):
    print(line)
)PY";

std::vector<std::string> graph_edges(const TempDir& dir, const std::string& format, const std::string& path) {
  const auto r = run(dir, {"python3", "-c", graph_edges_script, format, path});
  INFO(r.err);
  REQUIRE(r.rc == 0);
  return lines_of(r.out);
}

}  // namespace

TEST_CASE("queue operations on the shared-memory ring are recorded where they happen, with the right counts") {
  TraceOff off;
  TempDir dir;
  record_pipeline(dir);
  const auto t = read_trace(dir / "pipeline.mpxt");
  REQUIRE(t.problem.empty());
  std::map<std::string, std::size_t> lane_ops;  // "object kind"
  for (const auto& m : t.messages) {
    if (m.lane) ++lane_ops[m.object + " " + m.kind_name];
    // The coordinator's path carries none of the items: they stayed on the rings.
    CHECK(m.kind_name != "queue_put_posted");
  }
  const std::size_t jobs = pipeline_items + 2;
  CHECK(lane_ops["queue:jobs queue_put"] == jobs);
  CHECK(lane_ops["queue:jobs queue_get"] == jobs);
  CHECK(lane_ops["queue:results queue_put"] == pipeline_items);
  CHECK(lane_ops["queue:results queue_get"] == pipeline_items);
  REQUIRE_FALSE(t.drops.empty());
  CHECK(t.drops.back().queue == 0);

  const auto r = tool(dir, {"stats", dir / "pipeline.mpxt"});
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto items = [&r](const std::string& object) {
    std::smatch m;
    REQUIRE(std::regex_search(r.out, m, std::regex("\\n  " + object + " +([0-9]+) +([0-9]+)  \\(([0-9]+), ([0-9]+)\\)\\n")));
    return std::vector<std::size_t>{std::stoul(m[1]), std::stoul(m[2]), std::stoul(m[3]), std::stoul(m[4])};
  };
  CHECK(items("queue:jobs") == std::vector<std::size_t>{jobs, jobs, jobs, jobs});
  CHECK(items("queue:results") ==
        std::vector<std::size_t>{pipeline_items, pipeline_items, pipeline_items, pipeline_items});
  CHECK(std::regex_search(r.out, std::regex("\\n  queue:jobs +samples [0-9]+, max [0-9]+, final 0")));
}

TEST_CASE("dot and mermaid exports draw producer -> jobs -> workers -> results -> sink with item counts") {
  TraceOff off;
  TempDir dir;
  record_pipeline(dir);
  const std::string file = dir / "pipeline.mpxt";
  const auto n = std::to_string(pipeline_items), jobs = std::to_string(pipeline_items + 2);

  // The workers share the items between them: the two edges of each side add up.
  const auto check_graph = [&](const std::vector<std::string>& edges) {
    std::string all;
    for (const auto& e : edges) all += e + "\n";
    INFO(all);
    std::size_t from_jobs = 0, to_results = 0;
    bool produced = false, sunk = false;
    for (const auto& e : edges) {
      std::smatch m;
      if (e == "producer -> queue:jobs " + jobs) produced = true;
      else if (e == "queue:results -> MainProcess " + n) sunk = true;
      else if (std::regex_match(e, m, std::regex("queue:jobs -> worker\\[[01]\\] ([0-9]+)"))) from_jobs += std::stoul(m[1]);
      else if (std::regex_match(e, m, std::regex("worker\\[[01]\\] -> queue:results ([0-9]+)"))) to_results += std::stoul(m[1]);
      else FAIL_CHECK("an edge that is not in the pipeline: " << e);
    }
    CHECK(produced);
    CHECK(sunk);
    CHECK(from_jobs == pipeline_items + 2);
    CHECK(to_results == pipeline_items);
  };
  for (const std::string format : {"dot", "mermaid"}) {
    const auto out = dir / ("pipeline." + format);
    const auto r = tool(dir, {"export", "--format", format, file, "-o", out});
    INFO(format << ": " << r.err);
    REQUIRE(r.rc == 0);
    check_graph(graph_edges(dir, format, out));
  }
  const auto r = run(dir, {"dot", "-Tsvg", dir / "pipeline.dot", "-o", dir / "pipeline.svg"});
  INFO(r.err);
  CHECK(r.rc == 0);
}

TEST_CASE("export takes show's filters; an actor name matches its replicas") {
  TraceOff off;
  TempDir dir;
  record_pipeline(dir);
  const std::string file = dir / "pipeline.mpxt", out = dir / "filtered.dot";

  // `worker` is worker[0] and worker[1]: only their edges are left.
  auto r = tool(dir, {"export", "--format", "dot", file, "-o", out, "--actor", "worker"});
  REQUIRE(r.rc == 0);
  auto edges = graph_edges(dir, "dot", out);
  // Each worker got at least its end marker from jobs; one of them may have had every item, so the edges to results
  // are one or two.
  CHECK(edges.size() >= 3);
  CHECK(edges.size() <= 4);
  for (const auto& e : edges) CHECK(e.find("worker[") != std::string::npos);
  r = tool(dir, {"show", file, "--actor", "worker", "--kind", "queue_put"});
  REQUIRE(r.rc == 0);
  CHECK(lines_of(r.out).size() == static_cast<std::size_t>(pipeline_items));
  r = tool(dir, {"show", file, "--actor", "work", "--kind", "queue_put"});  // a prefix is not a replica's name
  CHECK(r.out.empty());

  // By object and kind: one edge.
  r = tool(dir, {"export", "--format", "mermaid", file, "-o", out, "--object", "queue:results", "--kind", "queue_get"});
  REQUIRE(r.rc == 0);
  CHECK(graph_edges(dir, "mermaid", out) ==
        std::vector<std::string>{"queue:results -> MainProcess " + std::to_string(pipeline_items)});

  // A time window after the end holds nothing; one from the start to past the end holds everything.
  r = tool(dir, {"export", "--format", "dot", file, "-o", out, "--since", "1000"});
  REQUIRE(r.rc == 0);
  CHECK(graph_edges(dir, "dot", out).empty());
  r = tool(dir, {"export", "--format", "dot", file, "-o", out, "--since", "0", "--until", "1000"});
  REQUIRE(r.rc == 0);
  const auto windowed = graph_edges(dir, "dot", out);
  r = tool(dir, {"export", "--format", "dot", file, "-o", out});
  REQUIRE(r.rc == 0);
  CHECK(windowed == graph_edges(dir, "dot", out));
  CHECK(windowed.size() >= 5);
  r = tool(dir, {"show", file, "--until", "0"});
  REQUIRE(r.rc == 0);
  CHECK(lines_of(r.out).size() >= 1);
  CHECK(lines_of(r.out).size() < 10);
}
