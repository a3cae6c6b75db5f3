// Topologies with real processes: config errors, start order, restarts per type and strategy, escalation, graceful
// stop (through mpx-run and a signal), exec and task actors together, and 200 actors passing a message along.
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <algorithm>
#include <ranges>
#include <tuple>
#include <map>
#include <regex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mpx/mpx.hpp>

#include "runtime/session.hpp"
#include "trace/format.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

// Task actors: this test program started again by the topology. They are registered by static initializers, so that
// they exist before mpx::init runs in the started copy.
void relay_task() {
  const auto& me = mpx::this_actor();
  auto in = me.queue<std::vector<int>>("q" + std::to_string(me.replica()));
  auto out = me.queue<std::vector<int>>("q" + std::to_string(me.replica() + 1));
  auto hops = in.get();
  hops.push_back(me.replica());
  out.put(hops);
}

void append_task() {
  auto in = mpx::this_actor().queue<std::vector<std::string>>("in");
  auto mid = mpx::this_actor().queue<std::vector<std::string>>("mid");
  auto items = in.get();
  items.push_back("task:" + mpx::this_actor().args()["tag"].as_string());
  mid.put(items);
}

// Pool tasks: functions of this program, which the topology pool's workers run.
long cube(int x) { return static_cast<long>(x) * x * x; }
long twice(int x) { return 2L * x; }
long product(int a, int b) { return static_cast<long>(a) * b; }
long slow_square(int x) {
  std::this_thread::sleep_for(2ms);  // the workload: long enough for a worker to be killed mid-map
  return static_cast<long>(x) * x;
}

// Two task actors that use the topology pool "p" at the same time, each through other calls, and report
// [name, sum, all right] on "results".
using PoolReport = std::tuple<std::string, long, bool>;

// Maps `f` over 0 .. n-1 on the pool: [sum of the results, every one equal to expected(x)].
std::pair<long, bool> checked_map(mpx::Pool& pool, long (*f)(int), long (*expected)(int), int n, std::size_t chunksize) {
  std::vector<int> xs(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) xs[static_cast<std::size_t>(i)] = i;
  const auto ys = pool.map(f, xs, chunksize);
  bool right = ys.size() == xs.size();
  long sum = 0;
  for (std::size_t i = 0; right && i < ys.size(); ++i) {
    right = ys[i] == expected(xs[i]);
    sum += ys[i];
  }
  return {sum, right};
}

void cube_mapper() {
  auto pool = mpx::this_actor().pool("p");
  auto results = mpx::this_actor().queue<PoolReport>("results");
  auto [sum, right] = checked_map(pool, cube, cube, 3000, 7);
  std::size_t i = 0;
  for (long y : pool.imap(cube, std::views::iota(0, 500), 3)) right = right && y == cube(static_cast<int>(i++));
  right = right && i == 500 && pool.apply(cube, 11) == 1331;
  results.put({"cube", sum, right});
}

void twice_mapper() {
  auto pool = mpx::this_actor().pool("p");
  auto results = mpx::this_actor().queue<PoolReport>("results");
  long sum = 0;
  std::vector<bool> seen(3000, false);
  for (long y : pool.imap_unordered(twice, std::views::iota(0, 3000), 5)) {
    sum += y;
    seen[static_cast<std::size_t>(y / 2)] = true;
  }
  bool right = std::all_of(seen.begin(), seen.end(), [](bool b) { return b; });
  const auto products = pool.starmap(product, std::vector<std::tuple<int, int>>{{2, 3}, {4, 5}, {6, 7}});
  right = right && products == std::vector<long>{6, 20, 42};
  right = right && pool.apply_async(twice, 21).get(20s) == 42;
  results.put({"twice", sum, right});
}

void slow_mapper() {
  auto pool = mpx::this_actor().pool("p");
  auto results = mpx::this_actor().queue<PoolReport>("results");
  auto [sum, right] = checked_map(pool, slow_square, [](int x) { return static_cast<long>(x) * x; }, 600, 1);
  results.put({"slow", sum, right});
}

const bool registered = [] {
  mpx::register_actor("relay", relay_task);
  mpx::register_actor("append", append_task);
  mpx::register_actor("cube_mapper", cube_mapper);
  mpx::register_actor("twice_mapper", twice_mapper);
  mpx::register_actor("slow_mapper", slow_mapper);
  return true;
}();

std::string actor() { return TOPOLOGY_ACTOR_PATH; }

// A private directory, and TOPOLOGY_TEST_LOG pointing into it, removed at the end of a test.
struct Scratch {
  fs::path dir;
  Scratch() {
    char tmpl[] = "/tmp/mpx-topology-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
    ::setenv("TOPOLOGY_TEST_LOG", (dir / "log").c_str(), 1);
  }
  ~Scratch() {
    ::unsetenv("TOPOLOGY_TEST_LOG");
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // "label pid" lines, in the order the actors started.
  std::vector<std::pair<std::string, pid_t>> log() const {
    std::ifstream in(dir / "log");
    std::vector<std::pair<std::string, pid_t>> lines;
    std::string label;
    pid_t pid;
    while (in >> label >> pid) lines.emplace_back(label, pid);
    return lines;
  }
  fs::path write(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name) << text;
    return dir / name;
  }
};

// An exec actor of tests/integration/topology_actor.cpp.
std::string exec_actor(const std::string& name, const std::string& role, const std::string& extra = "") {
  return "[[actors]]\nname = \"" + name + "\"\nexec = [\"" + actor() + "\", \"" + role + "\", \"" + name + "\"]\n" +
         extra + "\n";
}

// Polls (the test's side only) until `predicate` holds; fails the test after a generous anti-hang bound.
void wait_until(const std::function<bool()>& predicate, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) FAIL("timed out waiting until " << what);
    std::this_thread::sleep_for(5ms);
  }
}

mpx::ActorStatus status_of(const mpx::Topology& t, const std::string& name) {
  for (auto& a : t.status().actors) {
    if (a.name == name) return a;
  }
  FAIL("no actor " << name);
  return {};
}

bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

std::string error_of(const std::string& text) {
  try {
    (void)mpx::Topology::parse(text, "t.toml");
  } catch (const mpx::TopologyError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("every config error names the file, line, column, key and what was expected", "[topology]") {
  const std::string ok_actor = "[[actors]]\nname = \"a\"\ntask = \"relay\"\n";
  CHECK(error_of("bogus = 1\n" + ok_actor) == "t.toml:1:1: bogus: unknown key (expected one of: coordinator, "
                                              "supervisor, objects, actors)");
  CHECK(error_of("[[actors]]\nname = \"a\"\ntask = \"relay\"\nreplica = 2\n") ==
        "t.toml:4:1: actors[0].replica: unknown key (did you mean \"replicas\"? expected one of: name, task, exec, "
        "replicas, args, objects, after, restart, ready_timeout, node, placement)");
  CHECK(error_of(ok_actor + "replicas = \"two\"\n") ==
        "t.toml:4:12: actors[0].replicas: expected an integer >= 1, got a string");
  CHECK(error_of(ok_actor + "replicas = 0\n") == "t.toml:4:12: actors[0].replicas: expected an integer >= 1, got 0");
  CHECK(error_of("[objects.jobs]\ntype = \"queue\"\n" + ok_actor + "objects = [\"jobs\", \"jobz\"]\n") ==
        "t.toml:6:20: actors[0].objects: \"jobz\" is not a defined object (did you mean \"jobs\"? defined: jobs)");
  CHECK(error_of(ok_actor + "after = [\"b\"]\n") ==
        "t.toml:4:10: actors[0].after: \"b\" is not a defined actor (defined: a)");
  CHECK(error_of(ok_actor + "after = [\"b\"]\n[[actors]]\nname = \"b\"\ntask = \"relay\"\nafter = [\"a\"]\n") ==
        "t.toml:4:9: actors[0].after: the start order has a cycle: a -> b -> a");
  CHECK(error_of(ok_actor + "restart = \"always\"\n") ==
        "t.toml:4:11: actors[0].restart: expected one of \"permanent\", \"transient\", \"temporary\", got \"always\"");
  CHECK(error_of("[supervisor]\nstrategy = \"one_for_some\"\n" + ok_actor) ==
        "t.toml:2:12: supervisor.strategy: expected one of \"one_for_one\", \"one_for_all\", \"rest_for_one\", got "
        "\"one_for_some\"; did you mean \"one_for_one\"?");
  CHECK(error_of("[supervisor]\nmax_restarts = 1.5\n" + ok_actor) ==
        "t.toml:2:16: supervisor.max_restarts: expected an integer >= 0, got a float");
  CHECK(error_of("[coordinator]\nshutdown_timeout = \"5s\"\n" + ok_actor) ==
        "t.toml:2:20: coordinator.shutdown_timeout: expected a number of seconds, got a string");
  CHECK(error_of("[coordinator]\nendpoint = \"udp://x\"\n" + ok_actor) ==
        "t.toml:2:12: coordinator.endpoint: expected \"ipc\" (the default), \"ipc:///path\" or \"tcp://host:port\", "
        "got \"udp://x\"");
  CHECK_THAT(error_of("[coordinator]\nendpoint = \"tcp://127.0.0.1:*\"\n" + ok_actor),
             Contains("t.toml:2:12: coordinator.endpoint: the coordinator endpoint tcp://127.0.0.1:* is tcp://, which "
                      "mpx secures with CURVE keys, and this session has none: make a key directory with `mpx-run "
                      "keygen DIR`"));
  CHECK_THAT(error_of("[coordinator]\nkeys = \"/nonexistent/keys\"\n" + ok_actor),
             Contains("t.toml:2:8: coordinator.keys: the key directory '/nonexistent/keys' is not a directory (make one "
                      "with `mpx-run keygen /nonexistent/keys`)"));
  CHECK_THAT(error_of("[[actors]]\nname = \"a\"\n"),
             Contains("t.toml:1:1: actors[0]: missing: expected task = \"name\" (a registered function) or exec"));
  CHECK(error_of(ok_actor + "exec = [\"/bin/true\"]\n") == "t.toml:4:8: actors[0].exec: expected either task or exec, not both");
  CHECK_THAT(error_of("[[actors]]\nname = \"a\"\ntask = \"nope\"\n"),
             Contains("t.toml:3:8: actors[0].task: \"nope\" is not a function registered with mpx::register_actor in "
                      "this program (registered: append, cube_mapper, relay, slow_mapper, twice_mapper)"));
  CHECK(error_of("[[actors]]\nname = \"a\"\nexec = [\"no-such-program-here\"]\n") ==
        "t.toml:3:8: actors[0].exec: expected a program, but 'no-such-program-here' was not found in PATH");
  CHECK(error_of(ok_actor + "[[actors]]\nname = \"a\"\ntask = \"relay\"\n") ==
        "t.toml:5:8: actors[1].name: duplicate actor name \"a\" (actors[0] has it)");
  CHECK(error_of("[objects.gate]\ntype = \"barrier\"\n" + ok_actor) ==
        "t.toml:1:1: objects.gate.parties: missing: a barrier needs parties (an integer >= 1)");
  CHECK(error_of("[objects.gate]\ntype = \"mutex\"\n" + ok_actor) ==
        "t.toml:2:8: objects.gate.type: expected one of \"barrier\", \"event\", \"joinable_queue\", \"lock\", "
        "\"pipe\", \"pool\", \"queue\", \"semaphore\", got \"mutex\"");
  CHECK(error_of("[objects.jobs]\ntype = \"queue\"\nmaxsize = -1\n" + ok_actor) ==
        "t.toml:3:11: objects.jobs.maxsize: expected an integer >= 0, got -1");
  CHECK(error_of("[objects.jobs]\ntype = \"event\"\nmaxsize = 3\n" + ok_actor) ==
        "t.toml:3:1: objects.jobs.maxsize: unknown key (expected one of: type)");
  // A pool's keys: each line below, as the pool's third line, gives that error.
  const std::pair<std::string, std::string> pool_errors[] = {
      {"processes = 0", "3:13: objects.p.processes: expected an integer >= 1, got 0"},
      {"processes = \"two\"", "3:13: objects.p.processes: expected an integer >= 1, got a string"},
      {"processes = 5000", "3:13: objects.p.processes: expected at most 1024 processes, got 5000"},
      {"max_retries = -1", "3:15: objects.p.max_retries: expected an integer >= 0, got -1"},
      {"maxtasksperchild = 1.5", "3:20: objects.p.maxtasksperchild: expected an integer >= 0 (0: no limit), got a float"},
      {"workers = 2", "3:1: objects.p.workers: unknown key (expected one of: type, processes, max_retries, "
                      "maxtasksperchild)"},
  };
  for (const auto& [line, expected] : pool_errors) {
    CHECK(error_of("[objects.p]\ntype = \"pool\"\n" + line + "\n" + ok_actor) == "t.toml:" + expected);
  }
  CHECK(error_of("[coordinator]\n") == "t.toml:1:1: actors: missing: expected at least one [[actors]] table");
  CHECK_THAT(error_of("[[actors]\n"), Contains("t.toml:1:"));
  CHECK_THAT(error_of("[[actors]\n"), Contains("invalid TOML"));
  CHECK_THROWS_AS(mpx::Topology::load("/nonexistent/topology.toml"), mpx::TopologyError);
  CHECK(error_of("[coordinator.trace]\nenabled = true\n" + ok_actor) ==
        "t.toml:1:1: coordinator.trace: enabled = true needs a file to record to");
  CHECK(error_of("[coordinator.trace]\nfile = \"a,b.mpxt\"\n" + ok_actor) ==
        "t.toml:2:8: coordinator.trace.file: expected a path without commas, got \"a,b.mpxt\"");
  CHECK(error_of("[coordinator.trace]\nfile = \"t.mpxt\"\nkinds = [\"queue_put\", \"queue_putt\"]\n" + ok_actor) ==
        "t.toml:3:9: coordinator.trace.kinds: \"queue_putt\" is not a message kind (names as in PROTOCOL.md: "
        "queue_put, ok, ...)");
}

TEST_CASE("a bad file starts nothing: mpx-run --check and a run both exit 2", "[topology]") {
  Scratch s;
  // The first actor is valid; the second's error must stop everything before the first starts.
  const auto file = s.write("bad.toml", exec_actor("a", "wait") + exec_actor("b", "wait", "replicas = 0"));
  for (const char* check : {"--check", ""}) {
    std::vector<std::string> args = {MPX_RUN_PATH, file.string()};
    if (*check) args.insert(args.begin() + 1, check);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    REQUIRE(::posix_spawn(&pid, MPX_RUN_PATH, nullptr, nullptr, argv.data(), environ) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 2);
  }
  CHECK(s.log().empty());
}

TEST_CASE("start order follows after, replicas included", "[topology]") {
  Scratch s;
  auto t = mpx::Topology::parse(exec_actor("c", "wait", "after = [\"b\"]") + exec_actor("a", "wait", "replicas = 2") +
                                exec_actor("b", "wait", "after = [\"a\"]") + exec_actor("d", "wait"));
  t.start();
  const auto log = s.log();
  REQUIRE(log.size() == 5);
  // a and d have no dependency and start at once, in either order; b after both a's; c after b.
  std::vector<std::string> labels;
  for (auto& [label, pid] : log) labels.push_back(label);
  const auto pos = [&](const std::string& l, int nth = 0) {
    int seen = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] == l && seen++ == nth) return static_cast<int>(i);
    }
    return -1;
  };
  CHECK(pos("b") > pos("a", 0));
  CHECK(pos("b") > pos("a", 1));
  CHECK(pos("c") > pos("b"));
  CHECK(t.status().state == "running");
  CHECK(t.stop() == mpx::TopologyExit::ok);
  for (auto& [label, pid] : log) CHECK(gone(pid));
}

TEST_CASE("killing an actor restarts it or not, per restart type", "[topology]") {
  Scratch s;
  auto t = mpx::Topology::parse("[supervisor]\nmax_restarts = 10\n" +
                                exec_actor("perm", "wait", "restart = \"permanent\"") +
                                exec_actor("trans", "wait", "restart = \"transient\"") +
                                exec_actor("done", "wait", "restart = \"transient\"") +
                                exec_actor("temp", "wait", "restart = \"temporary\""));
  t.start();
  const auto before = t.status().actors;
  REQUIRE(before.size() == 4);
  for (auto& a : before) {
    CHECK(a.state == "running");
    CHECK(a.pid > 0);
  }
  auto kill_and_wait = [&](const std::string& name, int sig, const std::function<bool(const mpx::ActorStatus&)>& done) {
    const pid_t pid = status_of(t, name).pid;
    REQUIRE(::kill(pid, sig) == 0);
    wait_until([&] { return done(status_of(t, name)); }, name.c_str());
    CHECK(gone(pid));
  };
  // permanent: restarted whatever the reason.
  kill_and_wait("perm", SIGKILL, [](const mpx::ActorStatus& a) { return a.restarts == 1 && a.state == "running"; });
  CHECK(status_of(t, "perm").last_exitcode == -SIGKILL);
  // transient: restarted after an abnormal end (a signal)...
  kill_and_wait("trans", SIGKILL, [](const mpx::ActorStatus& a) { return a.restarts == 1 && a.state == "running"; });
  // ...but not after a normal exit (SIGUSR1 makes the test actor exit 0).
  kill_and_wait("done", SIGUSR1, [](const mpx::ActorStatus& a) { return a.state == "exited"; });
  CHECK(status_of(t, "done").restarts == 0);
  CHECK(status_of(t, "done").last_exitcode == 0);
  // temporary: never restarted.
  kill_and_wait("temp", SIGKILL, [](const mpx::ActorStatus& a) { return a.state == "failed"; });
  CHECK(status_of(t, "temp").restarts == 0);
  CHECK(gone(status_of(t, "temp").pid));  // its last pid, which ended
  // The others were left alone (one_for_one).
  CHECK(status_of(t, "perm").restarts == 1);
  CHECK(s.log().size() == 6);  // four starts and two restarts
  CHECK_THAT(t.report(), Contains(") ended (killed by signal 9 (SIGKILL)): restarting (one_for_one), restart 1"));
  CHECK_THAT(t.report(), Contains(") ended (killed by signal 9 (SIGKILL)); temporary: not restarted"));
  CHECK(t.stop() == mpx::TopologyExit::ok);
}

TEST_CASE("one_for_all restarts every actor, rest_for_one those started after the dead one", "[topology]") {
  for (const std::string strategy : {"one_for_all", "rest_for_one"}) {
    DYNAMIC_SECTION(strategy) {
      Scratch s;
      auto t = mpx::Topology::parse("[supervisor]\nstrategy = \"" + strategy + "\"\n" + exec_actor("a", "wait") +
                                    exec_actor("b", "wait", "after = [\"a\"]") +
                                    exec_actor("c", "wait", "after = [\"b\"]"));
      t.start();
      const pid_t a = status_of(t, "a").pid, b = status_of(t, "b").pid, c = status_of(t, "c").pid;
      REQUIRE(::kill(b, SIGKILL) == 0);
      wait_until([&] { return status_of(t, "b").restarts == 1 && status_of(t, "c").state == "running" &&
                              status_of(t, "c").restarts == 1; },
                 "b and c restarted");
      CHECK(status_of(t, "b").pid != b);
      CHECK(status_of(t, "c").pid != c);
      CHECK(gone(c));
      if (strategy == "one_for_all") {
        wait_until([&] { return status_of(t, "a").restarts == 1 && status_of(t, "a").state == "running"; }, "a");
        CHECK(status_of(t, "a").pid != a);
        CHECK(gone(a));
        // Restarted in start order: a, then b, then c (after the first three starts).
        const auto log = s.log();
        REQUIRE(log.size() == 6);
        CHECK(log[3].first == "a");
        CHECK(log[4].first == "b");
        CHECK(log[5].first == "c");
      } else {
        CHECK(status_of(t, "a").pid == a);
        CHECK(status_of(t, "a").restarts == 0);
        const auto log = s.log();
        REQUIRE(log.size() == 5);
        CHECK(log[3].first == "b");
        CHECK(log[4].first == "c");
      }
      CHECK(t.stop() == mpx::TopologyExit::ok);
    }
  }
}

TEST_CASE("exceeding max_restarts within the window escalates", "[topology]") {
  Scratch s;
  auto t = mpx::Topology::parse("[supervisor]\nmax_restarts = 2\nwindow = 30\n" + exec_actor("steady", "wait") +
                                exec_actor("crashy", "exit", "args = {}") );
  // The test actor's `exit` role takes its code from argv[3]; this one exits 0, but it is permanent: restarted.
  t.start();
  CHECK(t.wait() == mpx::TopologyExit::escalated);
  CHECK_THAT(t.report(), Contains("more than 2 restarts within 30 s; the supervisor escalates"));
  CHECK(status_of(t, "crashy").restarts == 2);
  CHECK(s.log().size() == 4);  // steady once, crashy three times
  for (auto& [label, pid] : s.log()) CHECK(gone(pid));
  CHECK(t.status().state == "stopped");
}

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs mpx-run with `args`, the examples' actor program in PATH, its output in `out`; returns its exit status.
int run_mpx_run(std::vector<std::string> args, const fs::path& out, std::string program = MPX_RUN_PATH) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::string(*e).rfind("PATH=", 0) != 0) env.emplace_back(*e);
  }
  env.push_back(std::string("PATH=") + EXAMPLES_BUILD_DIR + ":" + std::getenv("PATH"));
  std::vector<char*> envp, argv;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  args.insert(args.begin(), program);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data()) == 0);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + 60s;  // anti-hang bound only
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("mpx-run did not end within 60 s:\n" << read_file(out));
    }
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("the example topologies run through mpx-run", "[topology]") {
  Scratch s;
  const std::string dir = std::string(EXAMPLES_SOURCE_DIR) + "/topologies/";
  SECTION("supervised: a crashy permanent worker escalates, exit status 3") {
    CHECK(run_mpx_run({dir + "supervised.toml"}, s.dir / "out") == 3);
    const auto out = read_file(s.dir / "out");
    CHECK_THAT(out, Contains("mpx-run: actor crashy (pid "));
    CHECK_THAT(out, Contains(") ended (exit code 42): more than 3 restarts within 10 s"));
    CHECK_THAT(out, Contains("escalated: too many restarts (exit status 3)"));
  }
  SECTION("fan-out/fan-in over a tcp coordinator endpoint, with CURVE keys") {
    mpx::make_keys((s.dir / "keys").string());  // relative to the file: its actors are told the absolute path
    const auto file = s.write("tcp.toml", "[coordinator]\nendpoint = \"tcp://127.0.0.1:*\"\nkeys = \"keys\"\n" +
                                              read_file(dir + "fan_out_in.toml"));
    CHECK(run_mpx_run({file.string()}, s.dir / "out") == 0);
    CHECK_THAT(read_file(s.dir / "out"), Contains("collector: 4 partial sums after the barrier: total 499500000 (correct)"));
  }
  SECTION("a tcp coordinator endpoint without keys is refused, saying how to make them") {
    const auto file = s.write("tcp.toml", "[coordinator]\nendpoint = \"tcp://127.0.0.1:*\"\n" +
                                              read_file(dir + "fan_out_in.toml"));
    CHECK(run_mpx_run({file.string()}, s.dir / "out") == 2);  // an invalid file: nothing started
    CHECK_THAT(read_file(s.dir / "out"), Contains("coordinator.endpoint: the coordinator endpoint tcp://127.0.0.1:* "
                                                  "is tcp://, which mpx secures with CURVE keys"));
    CHECK_THAT(read_file(s.dir / "out"), Contains("mpx-run keygen DIR"));
  }
  SECTION("task actors of an application, through mpx::run_main") {
    CHECK(run_mpx_run({dir + "app_tasks.toml"}, s.dir / "out", std::string(EXAMPLES_BUILD_DIR) + "/topology_app") == 0);
    const auto out = read_file(s.dir / "out");
    CHECK_THAT(out, Contains("printer: hello from greeter replica 0 of 3\nprinter: hello from greeter replica 1 of 3\n"
                             "printer: hello from greeter replica 2 of 3\n"));
    CHECK_THAT(out, Contains("topology_app: topology " + dir + "app_tasks.toml ended: ok (exit status 0)"));
  }
  SECTION("a pool shared by task actors of an application, with the status table") {
    CHECK(run_mpx_run({"--status-every", "0.2", dir + "pool_tasks.toml"}, s.dir / "out",
                      std::string(EXAMPLES_BUILD_DIR) + "/topology_app") == 0);
    const auto out = read_file(s.dir / "out");
    CHECK_THAT(out, Contains("reporter: sum of squares 0..59999 from 3 mappers on one pool = 71998200010000 (correct)"));
    CHECK_THAT(out, Contains("pool  squares            queued 0  running 0  workers "));
  }
  SECTION("pipeline: 20000 items, sum checked by the sink") {
    CHECK(run_mpx_run({dir + "pipeline.toml"}, s.dir / "out") == 0);
    CHECK_THAT(read_file(s.dir / "out"), Contains("sink: 20000 items through 4 workers"));
    CHECK_THAT(read_file(s.dir / "out"), Contains("sum of squares correct"));
  }
}

namespace {

// Runs mpx-run on `file` with its output in `out`; returns its pid.
pid_t spawn_mpx_run(const std::string& file, const fs::path& out) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string prog = MPX_RUN_PATH, interval = "--status-every", every = "0.2", f = file;
  char* argv[] = {prog.data(), interval.data(), every.data(), f.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, MPX_RUN_PATH, &actions, nullptr, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

std::vector<fs::path> session_dirs_of(pid_t pid) {
  std::vector<fs::path> found;
  const std::string prefix = "mpx-" + std::to_string(pid) + "-";
  for (auto& e : fs::directory_iterator(mpx::runtime::session_parent_directory())) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) found.push_back(e.path());
  }
  return found;
}

}  // namespace

TEST_CASE("mpx-run's status table shows each actor's message rate", "[topology][mpx-run]") {
  Scratch s;
  const auto file = s.write("t.toml", exec_actor("busy", "busy") + exec_actor("idle", "wait"));
  const pid_t run = spawn_mpx_run(file, s.dir / "out");
  // A failed wait throws: mpx-run (and its busy actor, which never stops on its own) must not outlive the test.
  struct StopOnExit {
    pid_t pid;
    ~StopOnExit() {
      if (pid <= 0) return;
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  } stop{run};
  // The MSGS/S column of an actor's row in the newest table ("-" until two samples saw it).
  const auto rate_of = [&](const std::string& actor) -> std::optional<double> {
    std::ifstream in(s.dir / "out");
    const std::string out(std::istreambuf_iterator<char>(in), {});
    const auto table = out.rfind("--- status at");
    if (table == std::string::npos) return std::nullopt;
    std::istringstream lines(out.substr(table));
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::string name, pid, state, restarts, uptime, rate;
      if (!(fields >> name >> pid >> state >> restarts >> uptime >> rate) || name != actor) continue;
      if (rate == "-") return std::nullopt;
      return std::stod(rate);
    }
    return std::nullopt;
  };
  wait_until([&] { return rate_of("busy").value_or(0) > 100; }, "the busy actor's rate in a status table");
  wait_until([&] { return rate_of("idle").has_value(); }, "the idle actor's rate in a status table");
  CHECK(*rate_of("idle") < 50);
  REQUIRE(::kill(run, SIGTERM) == 0);
  int status = 0;
  stop.pid = 0;
  REQUIRE(::waitpid(run, &status, 0) == run);
  CHECK(WIFEXITED(status));
}

TEST_CASE("SIGTERM to mpx-run stops every actor in reverse order and leaves nothing behind", "[topology]") {
  Scratch s;
  SECTION("actors that stop on SIGTERM: exit status 0") {
    const auto file = s.write("t.toml", "[objects.jobs]\ntype = \"queue\"\n" + exec_actor("a", "wait", "replicas = 3") +
                                            exec_actor("b", "wait", "after = [\"a\"]"));
    const pid_t run = spawn_mpx_run(file, s.dir / "out");
    wait_until([&] { return s.log().size() == 4; }, "four actors started");
    wait_until([&] { return !session_dirs_of(run).empty(); }, "the session directory exists");
    std::string out;
    wait_until([&] {
      std::ifstream in(s.dir / "out");
      out.assign(std::istreambuf_iterator<char>(in), {});
      return out.find("--- status at") != std::string::npos && out.find("queue jobs") != std::string::npos;
    }, "a status table");
    REQUIRE(::kill(run, SIGTERM) == 0);
    int status = 0;
    REQUIRE(::waitpid(run, &status, 0) == run);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    for (auto& [label, pid] : s.log()) CHECK(gone(pid));
    CHECK(session_dirs_of(run).empty());
    std::ifstream in(s.dir / "out");
    out.assign(std::istreambuf_iterator<char>(in), {});
    CHECK_THAT(out, Contains("stop requested by a signal"));
    CHECK_THAT(out, Contains("ended: ok (exit status 0)"));
  }
  SECTION("an actor that ignores SIGTERM is killed after the timeout: exit status 4") {
    const auto file = s.write("t.toml", "[coordinator]\nshutdown_timeout = 0.3\n" + exec_actor("a", "wait") +
                                            exec_actor("stubborn", "stubborn"));
    const pid_t run = spawn_mpx_run(file, s.dir / "out");
    wait_until([&] { return s.log().size() == 2; }, "two actors started");
    wait_until([&] {
      std::ifstream in(s.dir / "out");
      return std::string(std::istreambuf_iterator<char>(in), {}).find("--- status at") != std::string::npos;
    }, "a status table");
    REQUIRE(::kill(run, SIGINT) == 0);
    int status = 0;
    REQUIRE(::waitpid(run, &status, 0) == run);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 4);
    for (auto& [label, pid] : s.log()) CHECK(gone(pid));
    CHECK(session_dirs_of(run).empty());
    std::ifstream in(s.dir / "out");
    CHECK_THAT(std::string(std::istreambuf_iterator<char>(in), {}),
               Contains("actor stubborn did not stop within 0.3 s: killed"));
  }
}

TEST_CASE("exec and task actors in one topology pass a message along", "[topology]") {
  Scratch s;
  auto t = mpx::Topology::parse(
      "[objects.in]\ntype = \"queue\"\n[objects.mid]\ntype = \"queue\"\n[objects.out]\ntype = \"queue\"\n"
      "[[actors]]\nname = \"t\"\ntask = \"append\"\nobjects = [\"in\", \"mid\"]\nargs = { tag = \"x\" }\n"
      "restart = \"transient\"\n" +
      exec_actor("e", "relay", "objects = [\"mid\", \"out\"]\nrestart = \"transient\""));
  t.start();
  CHECK(t.endpoint().rfind("ipc://", 0) == 0);
  t.objects().queue<std::vector<std::string>>("in").put({"start"});
  const auto out = t.objects().queue<std::vector<std::string>>("out").get(true, 20s);
  CHECK(out == std::vector<std::string>{"start", "task:x", "exec"});
  CHECK(t.wait() == mpx::TopologyExit::ok);
  CHECK(status_of(t, "t").state == "exited");
  CHECK(status_of(t, "e").state == "exited");
  CHECK(t.status().queues.size() == 3);
}

TEST_CASE("200 actors start, pass a message through every one of them, and stop", "[topology]") {
  constexpr int n = 200;
  std::string text;
  for (int i = 0; i <= n; ++i) text += "[objects.q" + std::to_string(i) + "]\ntype = \"queue\"\n";
  // 200 processes starting at once on a loaded machine may take longer than the default ready_timeout (10 s).
  text += "[[actors]]\nname = \"relay\"\ntask = \"relay\"\nreplicas = " + std::to_string(n) +
          "\nrestart = \"transient\"\nready_timeout = 120\nobjects = [";
  for (int i = 0; i <= n; ++i) text += (i ? ", " : "") + std::string("\"q") + std::to_string(i) + "\"";
  text += "]\n";
  auto t = mpx::Topology::parse(text);
  t.start();
  const auto st = t.status();
  REQUIRE(st.actors.size() == n);
  for (auto& a : st.actors) CHECK(a.state == "running");
  t.objects().queue<std::vector<int>>("q0").put({});
  const auto hops = t.objects().queue<std::vector<int>>("q" + std::to_string(n)).get(true, 30s);
  REQUIRE(hops.size() == n);
  for (int i = 0; i < n; ++i) CHECK(hops[i] == i);
  CHECK(t.wait() == mpx::TopologyExit::ok);
  for (auto& a : t.status().actors) CHECK(a.state == "exited");
}

TEST_CASE("actor context: a wrong name or type is an error naming what the actor has", "[topology]") {
  mpx::ActorContext ctx("w", 0, 1, mpx::Object(mpx::Object::Map{}), {{"jobs", "queue", {7}}});
  CHECK_THROWS_WITH(ctx.event("jobs"), "mpx: object 'jobs' of actor 'w' is a queue, not a event");
  CHECK_THROWS_WITH(ctx.queue<int>("job"),
                    "mpx: actor 'w' was not given an object named 'job' (it has: jobs); list it in the actor's objects");
  CHECK(ctx.queue<int>("jobs").id() == 7);
  CHECK_FALSE(mpx::is_actor());
  CHECK_THROWS_AS(mpx::this_actor(), mpx::ProcessError);
}

namespace {

namespace tf = mpx::trace::format;

// Two relays pass a message q0 -> q1 -> q2 under [coordinator.trace]; returns the trace's message records.
std::vector<tf::Message> traced_relay_run(const Scratch& scratch, const std::string& trace_table,
                                          std::map<std::string, pid_t>& pids) {
  std::string text = "[coordinator.trace]\n" + trace_table;
  for (int i = 0; i <= 2; ++i) text += "[objects.q" + std::to_string(i) + "]\ntype = \"queue\"\n";
  text += "[[actors]]\nname = \"relay\"\ntask = \"relay\"\nreplicas = 2\nrestart = \"transient\"\n"
          "objects = [\"q0\", \"q1\", \"q2\"]\n";
  auto t = mpx::Topology::parse(text);
  t.start();
  CHECK(mpx::trace::enabled());
  for (const auto& a : t.status().actors) pids[a.name] = a.pid;
  t.objects().queue<std::vector<int>>("q0").put({});
  // Taken here before the run ends, so the relays' puts were in the trace before it closes.
  CHECK(t.objects().queue<std::vector<int>>("q2").get(true, 20s) == std::vector<int>{0, 1});
  CHECK(t.wait() == mpx::TopologyExit::ok);
  CHECK_FALSE(mpx::trace::enabled());  // the end of the run ended the trace

  tf::FileReader reader((scratch.dir / "run.mpxt").string());
  std::vector<tf::Message> messages;
  std::map<std::uint64_t, std::string> names;
  for (const auto& a : reader.header().actors) names[a.id] = a.name;
  while (auto r = reader.next()) {
    if (auto* m = std::get_if<tf::Message>(&*r)) messages.push_back(*m);
    if (auto* a = std::get_if<tf::Actor>(&*r)) names[a->id] = a->name;
  }
  CHECK(reader.problem().empty());  // complete: the sinks were drained and closed
  for (const auto& [name, pid] : pids) CHECK(names[static_cast<std::uint64_t>(pid)] == name);
  return messages;
}

// The gets and puts an actor did on one object, in order: sent to the coordinator, or done on the queue's ring.
std::vector<std::string> sent(const std::vector<tf::Message>& messages, pid_t from, const std::string& object) {
  std::vector<std::string> kinds;
  const auto actor = static_cast<std::uint64_t>(from);
  for (const auto& m : messages) {
    const bool by_actor = m.direction == tf::Direction::in ? m.from == actor : m.lane && m.to == actor;
    if (by_actor && m.object == object &&
        (m.kind_name.starts_with("queue_get") || m.kind_name.starts_with("queue_put"))) {
      kinds.push_back(m.kind_name);
    }
  }
  return kinds;
}

}  // namespace

TEST_CASE("[coordinator.trace] records the run to a file, objects named as in the topology", "[topology]") {
  Scratch scratch;
  std::map<std::string, pid_t> pids;
  const auto messages = traced_relay_run(scratch, "enabled = true\nfile = \"" + (scratch.dir / "run.mpxt").string() + "\"\n", pids);
  REQUIRE(pids.size() == 2);
  // Each relay took from its queue and put into the next, and the trace names the queues as the file does.
  CHECK(sent(messages, pids["relay[0]"], "queue:q0") == std::vector<std::string>{"queue_get"});
  CHECK(sent(messages, pids["relay[0]"], "queue:q1") == std::vector<std::string>{"queue_put"});
  CHECK(sent(messages, pids["relay[1]"], "queue:q1") == std::vector<std::string>{"queue_get"});
  CHECK(sent(messages, pids["relay[1]"], "queue:q2") == std::vector<std::string>{"queue_put"});
  // The queues were created after tracing started: their creation is in the file too.
  std::size_t created = 0;
  for (const auto& m : messages) created += m.kind_name == "queue_create";
  CHECK(created == 3);
}

TEST_CASE("[coordinator.trace] kinds keeps only those kinds", "[topology]") {
  Scratch scratch;
  std::map<std::string, pid_t> pids;
  const auto messages = traced_relay_run(
      scratch, "enabled = true\nfile = \"" + (scratch.dir / "run.mpxt").string() + "\"\nkinds = [\"queue_put\"]\n",
      pids);
  REQUIRE(pids.size() == 2);
  // Our put into q0 and each relay's put: nothing else.
  REQUIRE(messages.size() == 3);
  for (const auto& m : messages) CHECK(m.kind_name == "queue_put");
  CHECK(sent(messages, pids["relay[0]"], "queue:q1") == std::vector<std::string>{"queue_put"});
  CHECK(sent(messages, pids["relay[1]"], "queue:q2") == std::vector<std::string>{"queue_put"});
}

// ---- pools ----

namespace {

std::string pool_topology(const std::string& actors, const std::string& pool_keys = "processes = 2\n") {
  return "[objects.p]\ntype = \"pool\"\n" + pool_keys + "[objects.results]\ntype = \"queue\"\n" + actors;
}

std::string pool_actor(const std::string& name, const std::string& task) {
  return "[[actors]]\nname = \"" + name + "\"\ntask = \"" + task +
         "\"\nobjects = [\"p\", \"results\"]\nrestart = \"transient\"\n";
}

}  // namespace

TEST_CASE("a topology pool: the plan shows it, two actors map over it at once, a stop ends its workers", "[topology][pool]") {
  auto t = mpx::Topology::parse(pool_topology(pool_actor("a", "cube_mapper") + pool_actor("b", "twice_mapper")));
  CHECK_THAT(t.plan(), Contains("    p: pool processes=2 max_retries=3 maxtasksperchild=0\n"));
  t.start();
  auto st = t.status();
  REQUIRE(st.pools.size() == 1);
  CHECK(st.pools[0].name == "p");
  CHECK(st.pools[0].processes == 2);
  const std::vector<pid_t> workers = st.pools[0].pids;
  REQUIRE(workers.size() == 2);
  std::map<std::string, std::pair<long, bool>> reports;
  auto results = t.objects().queue<PoolReport>("results");
  for (int i = 0; i < 2; ++i) {
    auto [name, sum, right] = results.get(true, 30s);
    reports[name] = {sum, right};
  }
  long cubes = 0;
  for (int x = 0; x < 3000; ++x) cubes += cube(x);
  CHECK(reports["cube"] == std::make_pair(cubes, true));
  CHECK(reports["twice"] == std::make_pair(2L * (2999L * 3000L / 2), true));
  CHECK(t.wait() == mpx::TopologyExit::ok);  // both actors are done; the end of the run ends the pool
  for (pid_t w : workers) CHECK(gone(w));
  CHECK(t.status().pools[0].pids.empty());
}

TEST_CASE("a topology pool worker SIGKILLed during an actor's map: the map completes with the right results",
          "[topology][pool]") {
  auto t = mpx::Topology::parse(pool_topology(pool_actor("slow", "slow_mapper")));
  t.start();
  wait_until([&] { return t.status().pools[0].running > 0; }, "the actor's map is running");
  const std::vector<pid_t> before = t.status().pools[0].pids;
  REQUIRE(before.size() == 2);
  REQUIRE(::kill(before[0], SIGKILL) == 0);
  auto [name, sum, right] = t.objects().queue<PoolReport>("results").get(true, 30s);
  CHECK(name == "slow");
  CHECK(right);
  long expected = 0;
  for (long i = 0; i < 600; ++i) expected += i * i;
  CHECK(sum == expected);
  const auto after = t.status().pools[0].pids;
  CHECK(after.size() == 2);
  CHECK(std::find(after.begin(), after.end(), before[0]) == after.end());  // replaced
  CHECK(t.stop() == mpx::TopologyExit::ok);
  for (pid_t w : after) CHECK(gone(w));
  CHECK(gone(before[1]));
}

TEST_CASE("an exec actor's own function is refused by the topology pool, naming it; the pool goes on", "[topology][pool]") {
  Scratch s;
  auto t = mpx::Topology::parse(pool_topology(exec_actor("e", "pool", "objects = [\"p\", \"results\"]\nrestart = "
                                                                        "\"transient\"") +
                                              pool_actor("a", "cube_mapper")));
  t.start();
  auto results = t.objects().queue<PoolReport>("results");
  std::map<std::string, std::pair<long, bool>> reports;
  std::string refusal;
  for (int i = 0; i < 2; ++i) {
    auto [name, sum, right] = results.get(true, 30s);
    if (name == "cube") reports[name] = {sum, right};
    if (name != "cube") refusal = name;
  }
  CHECK_THAT(refusal, Contains("mpx: cannot run the function at offset 0x"));
  CHECK_THAT(refusal, Contains("topology_test_actor in this Pool: it is defined in this program"));
  CHECK_THAT(refusal, Contains("but the pool's workers run another program"));
  CHECK(reports["cube"].second);
  CHECK(t.wait() == mpx::TopologyExit::ok);
}

// ---- mpx-run's live output ----

namespace {

// mpx-run started with its stdout and stderr on a pipe or on a pseudo-terminal, read while it writes.
class Captured {
 public:
  Captured(std::vector<std::string> args, bool terminal) {
    args.insert(args.begin(), MPX_RUN_PATH);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    int write_end = -1;
    if (terminal) {
      fd_ = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
      REQUIRE(fd_ >= 0);
      REQUIRE(::grantpt(fd_) == 0);
      REQUIRE(::unlockpt(fd_) == 0);
      const winsize size{24, 120, 0, 0};
      REQUIRE(::ioctl(fd_, TIOCSWINSZ, &size) == 0);
      posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, ::ptsname(fd_), O_RDWR | O_NOCTTY, 0);
    } else {
      int fds[2];
      REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
      fd_ = fds[0];
      write_end = fds[1];
      posix_spawn_file_actions_adddup2(&actions, write_end, STDOUT_FILENO);
    }
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    REQUIRE(::posix_spawn(&pid_, MPX_RUN_PATH, &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    if (write_end >= 0) ::close(write_end);
    ::fcntl(fd_, F_SETFL, O_NONBLOCK);
  }
  ~Captured() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(fd_);
  }
  pid_t pid() const { return pid_; }
  const std::string& text() const { return text_; }
  bool running() {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, &status_, WNOHANG) == 0) return true;
    pid_ = 0;
    return false;
  }
  // Reads until `predicate` holds of the output; fails after a generous anti-hang bound.
  void read_until(const std::function<bool(const std::string&)>& predicate, const char* what) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!predicate(text_)) {
      if (std::chrono::steady_clock::now() > deadline) FAIL("timed out waiting until " << what << "; output:\n" << text_);
      pump(50);
    }
  }
  // Reads to the end of mpx-run; returns its exit status.
  int finish() {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (running()) {
      if (std::chrono::steady_clock::now() > deadline) FAIL("mpx-run did not end within 60 s; output:\n" << text_);
      pump(50);
    }
    while (pump(0)) {
    }
    REQUIRE(WIFEXITED(status_));
    return WEXITSTATUS(status_);
  }

 private:
  // Reads what there is within `wait_ms`; false once nothing came.
  bool pump(int wait_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return false;
    char buffer[4096];
    const ssize_t n = ::read(fd_, buffer, sizeof buffer);
    if (n <= 0) return false;  // a pty's master reads EIO once every holder of its other end is gone
    text_.append(buffer, static_cast<std::size_t>(n));
    return true;
  }
  pid_t pid_ = 0;
  int fd_ = -1;
  int status_ = 0;
  std::string text_;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("mpx-run prints each supervision event when it happens, time-stamped", "[topology][mpx-run]") {
  Scratch s;
  const auto file = s.write("t.toml", "[supervisor]\nmax_restarts = 10\n" + exec_actor("a", "wait"));
  Captured run({file.string()}, /*terminal=*/false);
  run.read_until([](const std::string& out) { return out.find("mpx-run: actor a (pid ") != std::string::npos &&
                                                      out.find(") is ready") != std::string::npos; },
                 "a start and readiness event");
  REQUIRE(s.log().size() == 1);
  const pid_t first = s.log()[0].second;
  CHECK_THAT(run.text(), Contains("mpx-run: actor a started (pid " + std::to_string(first) + ")\n"));
  REQUIRE(::kill(first, SIGKILL) == 0);
  run.read_until([](const std::string& out) { return out.find(", restart 1\n") != std::string::npos &&
                                                      out.find("started (pid", out.find(", restart 1\n")) != std::string::npos; },
                 "the restart events");
  CHECK(run.running());  // printed while the run goes on, not at its end
  wait_until([&] { return s.log().size() == 2; }, "the restarted actor's log line");
  const pid_t second = s.log().at(1).second;
  CHECK_THAT(run.text(), Contains("mpx-run: actor a (pid " + std::to_string(first) +
                                  ") ended (killed by signal 9 (SIGKILL)): restarting (one_for_one), restart 1\n"));
  CHECK_THAT(run.text(), Contains("mpx-run: actor a started (pid " + std::to_string(second) + "), restart 1\n"));
  REQUIRE(::kill(run.pid(), SIGTERM) == 0);
  CHECK(run.finish() == 0);
  CHECK_THAT(run.text(), Contains("mpx-run: actor a (pid " + std::to_string(second) + ") stopped (exit code 0)\n"));
  const std::regex stamped(R"(^\[\+[0-9]+\.[0-9]{3}s\] mpx-run: .+)");
  const auto lines = lines_of(run.text());
  CHECK(lines.size() >= 6);
  for (const auto& line : lines) CHECK(std::regex_match(line, stamped));
}

TEST_CASE("on a terminal, mpx-run's status line never overwrites or splits an actor's line", "[topology][mpx-run]") {
  Scratch s;
  const int count = 30;
  const auto file = s.write("t.toml", "[[actors]]\nname = \"talker\"\nexec = [\"" + actor() +
                                          "\", \"chatter\", \"talker\", \"" + std::to_string(count) +
                                          "\"]\nrestart = \"transient\"\n");
  Captured run({"--status-every", "0.03", file.string()}, /*terminal=*/true);
  CHECK(run.finish() == 0);
  const std::string& out = run.text();
  // The status line was drawn, and more than once: between the actor's lines.
  std::size_t drawn = 0;
  for (auto at = out.find("] running: 1 running"); at != std::string::npos; at = out.find("] running: 1 running", at + 1)) {
    ++drawn;
  }
  CHECK(drawn >= 2);
  // Nothing moves the cursor up or erases below it: what was printed stays.
  CHECK_FALSE(std::regex_search(out, std::regex("\x1b\\[[0-9]*A")));
  CHECK(out.find("\x1b[J") == std::string::npos);
  // Each of the actor's lines is whole: it starts a line (or follows a cleared status line) and ends one (the
  // terminal turns "\n" into "\r\n").
  for (int i = 0; i <= count; ++i) {
    std::string line = "chatter talker line " + std::to_string(i) + " " + std::string(50, static_cast<char>('a' + i % 26));
    if (i == count) line += " on stderr";
    const auto at = out.find(line);
    INFO("line " << i << " in:\n" << out);
    REQUIRE(at != std::string::npos);
    CHECK((at == 0 || out[at - 1] == '\n' || (at >= 3 && out.compare(at - 3, 3, "\x1b[K") == 0)));
    CHECK(out.compare(at + line.size(), 2, "\r\n") == 0);
  }
  CHECK_THAT(out, Contains("mpx-run: actor talker (pid "));
  CHECK_THAT(out, Contains("--- final status at "));
  // Relayed, the actor still writes to a terminal: its stdio stays line-buffered, so its lines show as it prints them.
  CHECK_THAT(out, Contains("chatter stdout is a terminal: yes\r\n"));
}

TEST_CASE("an exec actor that never calls mpx::init fails after its ready_timeout, with a hint", "[topology][mpx-run]") {
  auto t = mpx::Topology::parse("[[actors]]\nname = \"sleepy\"\nexec = [\"/bin/sleep\", \"60\"]\nready_timeout = 0.5\n");
  CHECK_THAT(t.plan(), Contains("ready within 0.5 s"));
  const auto began = std::chrono::steady_clock::now();
  std::string error;
  try {
    t.start();
  } catch (const mpx::TopologyError& e) {
    error = e.what();
  }
  CHECK(std::chrono::steady_clock::now() - began < 20s);  // anti-hang bound only
  CHECK_THAT(error, Contains("did not call mpx::init within 0.5 s: is it an mpx program?"));
  std::smatch m;
  REQUIRE(std::regex_search(error, m, std::regex(R"(actor sleepy \(pid ([0-9]+)\) did not call)")));
  CHECK(gone(static_cast<pid_t>(std::stoi(m[1]))));
  CHECK(t.status().actors.at(0).state == "failed");
  // A wrong value is named.
  CHECK(error_of("[[actors]]\nname = \"a\"\ntask = \"relay\"\nready_timeout = 0\n") ==
        "t.toml:4:17: actors[0].ready_timeout: expected a number of seconds > 0, got 0.000000");
}

TEST_CASE("a restarted actor that does not become ready within ready_timeout counts as a failed restart",
          "[topology][mpx-run]") {
  Scratch s;
  auto t = mpx::Topology::parse("[supervisor]\nmax_restarts = 1\nwindow = 60\n" +
                                exec_actor("late", "late", "ready_timeout = 0.5"));
  t.start();
  REQUIRE(s.log().size() == 1);
  REQUIRE(::kill(s.log()[0].second, SIGKILL) == 0);
  // Restart 1 hangs before mpx::init and is killed at its deadline; restarting it again exceeds max_restarts.
  const auto exit = t.wait_for(30s);  // anti-hang bound only
  REQUIRE(exit.has_value());
  CHECK(*exit == mpx::TopologyExit::escalated);
  CHECK_THAT(t.report(), Contains("did not call mpx::init within 0.5 s: is it an mpx program?"));
  CHECK_THAT(t.report(), Contains(") ended (killed by signal 9 (SIGKILL)): more than 1 restarts within 60 s"));
  REQUIRE(s.log().size() == 2);
  for (auto& [label, pid] : s.log()) CHECK(gone(pid));
}

TEST_CASE("mpx-run --check reports every error of a file at once, with did-you-mean hints", "[topology][mpx-run]") {
  Scratch s;
  const auto file = s.write("three.toml",
                            "[objects.jobs]\ntype = \"queue\"\n\n"
                            "[[actors]]\nname = \"producer\"\nexec = [\"/bin/true\"]\nreplcias = 2\nobjects = [\"jbos\"]\n\n"
                            "[[actors]]\nname = \"consumer\"\nexec = [\"/bin/true\"]\nafter = [\"prodcer\"]\n");
  CHECK(run_mpx_run({"--check", file.string()}, s.dir / "out") == 2);
  const auto out = read_file(s.dir / "out");
  const std::string name = file.string();
  CHECK_THAT(out, Contains(name + ":7:1: actors[0].replcias: unknown key (did you mean \"replicas\"? expected one of: "));
  CHECK_THAT(out, Contains(name + ":8:12: actors[0].objects: \"jbos\" is not a defined object (did you mean \"jobs\"? "
                                  "defined: jobs)"));
  CHECK_THAT(out, Contains(name + ":13:10: actors[1].after: \"prodcer\" is not a defined actor (did you mean "
                                  "\"producer\"? defined: producer, consumer)"));
  CHECK_THAT(out, Contains(name + ": 3 errors"));
}
