// Nodes on hosts of their own: network namespaces (tools/netns_hosts.hpp). Host 0 runs a driver, this program again
// on a hidden test case, whose mpx coordinator binds host 0's address; hosts 1..3 run node agents, this program again
// with --mpx-node. The test cuts links and kills processes for real, and reads what the driver saw from files the
// driver writes (`key value` lines) in a directory both share.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <mpx/mpx.hpp>

#include "../../tools/netns_hosts.hpp"
#include "../temp_dir.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr int port = 5555;  // each host has a network stack of its own: no other test can hold this port there

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Rounds of the kill-during-map case: 5 by default; NODES_ROUNDS=100 for the long run (the nodes_netns_100 test).
int kill_map_rounds() {
  const auto text = env_or_empty("NODES_ROUNDS");
  return text.empty() ? 5 : std::max(1, std::atoi(text.c_str()));
}

// ---- the driver's side: runs in host 0 ---------------------------------------------------------------------------

// The driver's report: one `key value` line each, flushed at once, so the test can wait for a key.
struct Report {
  std::ofstream out{env_or_empty("NODES_REPORT"), std::ios::app};
  template <class T>
  void say(const std::string& key, const T& value) {
    out << key << " " << value << std::endl;
  }
};

// Waits (bounded) for the test to create `name` in the shared directory: its word to go on.
bool told(const std::string& name, std::chrono::seconds timeout = 60s) {
  const auto path = fs::path(env_or_empty("NODES_DIR")) / name;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!fs::exists(path)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);  // a bounded poll of the test's word, inside the deadline
  }
  return true;
}

void start_driver_session() {
  mpx::set_coordinator_endpoint("tcp://" + env_or_empty("NODES_ADDRESS") + ":" + std::to_string(port));
}

mpx::ProcessOptions on_node(std::uint32_t node) {
  mpx::ProcessOptions options;
  options.node = node;
  return options;
}

std::vector<std::uint32_t> remote_nodes() {
  std::vector<std::uint32_t> ids;
  for (const auto& n : mpx::nodes()) {
    if (n.id != 0 && n.state == "alive") ids.push_back(n.id);
  }
  return ids;
}

// The driver's session, once the scenario's one node has joined: that node's id.
std::uint32_t driver_with_one_node() {
  start_driver_session();
  mpx::wait_for_nodes(1, 60s);
  return remote_nodes().front();
}

long square(long x) { return x * x; }

// Long enough that a map is still running when the test kills a node's agent.
long slow_square(long x) {
  std::this_thread::sleep_for(5ms);
  return x * x;
}

// Every kind of shared object, used from a process on another host (each travels as its handle).
struct Kit {
  mpx::Queue<std::string> queue;
  mpx::Lock lock;
  mpx::Event event;
  mpx::Semaphore semaphore{0};
  mpx::Condition condition;
  mpx::Barrier barrier{2};
  mpx::Value<long> value{0};
  mpx::Array<int> array{std::vector<int>(4, 0)};
};

void use_everything(mpx::Queue<std::string> queue, mpx::Lock lock, mpx::Event event, mpx::Semaphore semaphore,
                    mpx::Condition condition, mpx::Barrier barrier, mpx::Value<long> value, mpx::Array<int> array,
                    mpx::Connection end, mpx::DictProxy dict) {
  Kit kit{queue, lock, event, semaphore, condition, barrier, value, array};
  const auto node = mpx::current_process().node();
  kit.queue.put("from node " + std::to_string(node));
  {
    std::lock_guard guard(kit.lock);
    kit.value.set(kit.value.value() + 41);
  }
  kit.array[2] = 7;
  dict.set("node", static_cast<std::int64_t>(node));
  kit.semaphore.release();
  kit.event.set();
  (void)kit.barrier.wait(30s);
  end.send(std::string("pipe from node ") + std::to_string(node));
  {
    std::unique_lock guard(kit.condition);
    kit.condition.notify_all();
  }
}

void hold_lock(mpx::Lock lock, mpx::Event held, mpx::Queue<long> pids) {
  lock.acquire();
  pids.put(static_cast<long>(::getpid()));
  held.set();
  for (;;) ::pause();
}

void run_forever(mpx::Queue<long> pids) {
  pids.put(static_cast<long>(::getpid()));
  for (;;) ::pause();
}

}  // namespace

TEST_CASE("driver: a pool map spread over three nodes, and every shared object used from a node", "[.driver-shared]") {
  Report report;
  start_driver_session();
  mpx::wait_for_nodes(3, 60s);
  const auto ids = remote_nodes();
  REQUIRE(ids.size() == 3);

  mpx::PoolOptions options;
  options.processes = 6;
  options.placement = mpx::Placement::pinned;
  options.nodes = ids;
  mpx::Pool pool(options);
  std::vector<long> items(500);
  for (long i = 0; i < 500; ++i) items[static_cast<std::size_t>(i)] = i;
  const auto squares = pool.map(square, items, 1);
  bool right = squares.size() == items.size();
  for (std::size_t i = 0; right && i < items.size(); ++i) right = squares[i] == items[i] * items[i];
  report.say("map_right", right ? 1 : 0);
  pool.close();
  pool.join();

  Kit kit;
  mpx::Manager manager;  // on a tcp session it listens on the coordinator's address, with an authkey of its own
  mpx::DictProxy dict = manager.dict();
  auto [mine, theirs] = mpx::Pipe();
  mpx::Process user(on_node(ids[1]), use_everything, kit.queue, kit.lock, kit.event, kit.semaphore, kit.condition, kit.barrier,
                    kit.value, kit.array, theirs, dict);
  user.start();
  const auto message = kit.queue.get(true, 30s);
  REQUIRE(kit.semaphore.acquire(true, 30s));
  REQUIRE(kit.event.wait(30s));
  (void)kit.barrier.wait(30s);
  const auto piped = mine.recv<std::string>();
  REQUIRE(user.join(30s));
  report.say("queue", message == "from node " + std::to_string(ids[1]) ? 1 : 0);
  report.say("value", kit.value.value());
  report.say("array", static_cast<const mpx::Array<int>&>(kit.array)[2]);
  report.say("pipe", piped == "pipe from node " + std::to_string(ids[1]) ? 1 : 0);
  report.say("exitcode", *user.exitcode());
  report.say("manager", dict.get("node").as_int() == static_cast<std::int64_t>(ids[1]) ? 1 : 0);
  report.say("done", 1);
}

TEST_CASE("driver: a node cut off is lost within 3 s, and comes back as a new node", "[.driver-partition]") {
  Report report;
  const auto node = driver_with_one_node();
  mpx::Lock lock;
  mpx::Event held;
  mpx::Queue<long> pids;
  mpx::Process holder(on_node(node), hold_lock, lock, held, pids);
  holder.start();
  REQUIRE(held.wait(30s));
  report.say("node", node);
  report.say("pid", pids.get(true, 30s));
  report.say("ready", 1);
  REQUIRE(told("cut"));
  const auto cut = std::chrono::steady_clock::now();
  REQUIRE(holder.join(30s));
  report.say("detect_ms", std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - cut).count());
  report.say("exitcode", *holder.exitcode());
  report.say("lock_free", lock.acquire(true, 5s) ? 1 : 0);
  report.say("lost", 1);
  // Healed: the agent joins again, as a new node.
  REQUIRE(told("healed"));
  const auto back = mpx::wait_for_nodes(1, 60s);
  std::uint32_t newest = 0;
  for (const auto& n : back) {
    if (n.state == "alive" && n.id != 0) newest = std::max(newest, n.id);
    if (n.id == node) report.say("old_state", n.state);
  }
  report.say("new_node", newest);
  report.say("done", 1);
}

TEST_CASE("driver: runs processes on a node until it is killed", "[.driver-dies]") {
  Report report;
  const auto node = driver_with_one_node();
  mpx::Queue<long> pids;
  mpx::Process a(on_node(node), run_forever, pids), b(on_node(node), run_forever, pids);
  a.start();
  b.start();
  report.say("pid", pids.get(true, 30s));
  report.say("pid", pids.get(true, 30s));
  report.say("ready", 1);
  for (;;) ::pause();  // until the test kills this coordinator
}

TEST_CASE("driver: maps over a pool on this host and on a node whose agent the test kills", "[.driver-kill-map]") {
  Report report;
  start_driver_session();
  std::uint32_t last = 0;
  for (int round = 0; round < kill_map_rounds(); ++round) {
    // The test starts a new agent each round: wait for a node newer than the last one.
    std::uint32_t node = 0;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (node <= last) {
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      for (const auto id : remote_nodes()) node = std::max(node, id);
      if (node <= last) std::this_thread::sleep_for(20ms);  // a bounded poll of the node table
    }
    last = node;
    mpx::PoolOptions options;
    options.processes = 4;
    options.placement = mpx::Placement::pinned;
    options.nodes = {0, node};
    mpx::Pool pool(options);
    std::vector<long> items(400);
    for (long i = 0; i < 400; ++i) items[static_cast<std::size_t>(i)] = i;
    auto result = pool.map_async(slow_square, items, 1);
    report.say("mapping" + std::to_string(round), 1);
    std::string outcome = "wrong";
    try {
      const auto squares = result.get(60s);
      bool right = squares.size() == items.size();
      for (std::size_t i = 0; right && i < items.size(); ++i) right = squares[i] == items[i] * items[i];
      outcome = right ? "right" : "wrong";
    } catch (const mpx::WorkerLost&) {
      outcome = "right";  // a task given up after its retries is a right answer too: the promise is no hang
    } catch (const std::exception& e) {
      outcome = "error";
      std::fprintf(stderr, "driver: round %d: %s\n", round, e.what());
    }
    report.say("round" + std::to_string(round), outcome);
    pool.terminate();
  }
}

namespace {

// ---- the test's side: runs in the root namespace ---------------------------------------------------------------

struct Scenario {
  mpx_netns::NetnsHosts hosts;
  TempDir dir;
  std::string keys = dir / "keys";
  std::string report = dir / "report";
  std::string self = fs::read_symlink("/proc/self/exe").string();
  pid_t driver = 0;
  std::vector<pid_t> agents;

  explicit Scenario(int agent_count) : hosts(agent_count + 1) {
    ::chmod(dir.path.c_str(), 0755);  // processes of the scenario read and write here
    mpx::make_keys(keys);
    for (int i = 1; i <= agent_count; ++i) mpx::make_node_keys(keys, "h" + std::to_string(i));
  }
  std::string endpoint() const { return "tcp://" + hosts.address(0) + ":" + std::to_string(port); }

  void start_driver(const std::string& tag) {
    driver = hosts.spawn(0, {self, tag}, {"MPX_KEYS=" + keys, "NODES_REPORT=" + report, "NODES_DIR=" + dir.path.string(),
                                          "NODES_ADDRESS=" + hosts.address(0)});
  }
  pid_t start_agent(int host) {
    const pid_t pid = hosts.spawn(host, {self, "--mpx-node", endpoint(), "--mpx-keys", keys + "/nodes/h" + std::to_string(host)},
                                  {"MPX_KEYS="});
    agents.push_back(pid);
    return pid;
  }
  void tell(const std::string& word) { std::ofstream(dir / word) << "go\n"; }

  // The driver's report so far: each key's values, in order.
  std::map<std::string, std::vector<std::string>> read() const {
    std::map<std::string, std::vector<std::string>> values;
    std::ifstream in(report);
    std::string key, value;
    while (in >> key >> value) values[key].push_back(value);
    return values;
  }
  // Waits (bounded) until the driver reported `key`; fails the test with the report if it did not, or if it ended.
  std::map<std::string, std::vector<std::string>> wait_for(const std::string& key, std::chrono::seconds timeout = 90s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto values = read();
      if (values.count(key)) return values;
      if (auto ended = hosts.wait(driver, 0ms)) FAIL("the driver ended with " << *ended << " before reporting " << key);
      if (std::chrono::steady_clock::now() > deadline) FAIL("the driver did not report " << key << " in time");
      std::this_thread::sleep_for(20ms);  // a bounded poll of the report, inside the deadline
    }
  }
  int driver_exit(std::chrono::seconds timeout = 60s) {
    auto code = hosts.wait(driver, std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
    REQUIRE(code);
    return *code;
  }
};

bool process_gone(long pid) { return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

// True once `pid` is gone (or a zombie nobody reaps yet: its state letter is Z), within `timeout`.
bool ends_within(long pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (process_gone(pid)) return true;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    if (auto close = text.rfind(')'); close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'Z') {
      return true;
    }
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);  // a bounded poll of the process table, inside the deadline
  }
}

}  // namespace

TEST_CASE("three nodes on hosts of their own: a spread map, and every shared object used across hosts",
          "[nodes][netns]") {
  Scenario s(3);
  s.start_driver("[.driver-shared]");
  for (int h = 1; h <= 3; ++h) s.start_agent(h);
  auto r = s.wait_for("done");
  CHECK(r["map_right"] == std::vector<std::string>{"1"});
  CHECK(r["queue"] == std::vector<std::string>{"1"});
  CHECK(r["value"] == std::vector<std::string>{"41"});
  CHECK(r["array"] == std::vector<std::string>{"7"});
  CHECK(r["pipe"] == std::vector<std::string>{"1"});
  CHECK(r["exitcode"] == std::vector<std::string>{"0"});
  CHECK(r["manager"] == std::vector<std::string>{"1"});
  CHECK(s.driver_exit() == 0);
}

TEST_CASE("a partitioned node is lost within 3 s, stops its processes, and rejoins as a new node without split brain",
          "[nodes][netns]") {
  Scenario s(1);
  s.start_driver("[.driver-partition]");
  s.start_agent(1);
  auto r = s.wait_for("ready");
  const long pid = std::stol(r["pid"].front());
  s.hosts.link_down(1);
  s.tell("cut");
  r = s.wait_for("lost");
  CHECK(std::stol(r["detect_ms"].front()) < 3000);
  CHECK(r["exitcode"].front() == std::to_string(mpx::node_lost_exitcode));
  CHECK(r["lock_free"].front() == "1");
  // No split brain: the node's agent stopped the process the coordinator counts as dead.
  CHECK(ends_within(pid, 3s));
  s.hosts.link_up(1);
  s.tell("healed");
  r = s.wait_for("done");
  CHECK(r["old_state"].front() == "lost");
  CHECK(std::stoul(r["new_node"].front()) > std::stoul(r["node"].front()));
  CHECK(s.driver_exit() == 0);
}

TEST_CASE("the coordinator's death stops every node's processes within 3 s", "[nodes][netns]") {
  Scenario s(1);
  s.start_driver("[.driver-dies]");
  s.start_agent(1);
  auto r = s.wait_for("ready");
  REQUIRE(r["pid"].size() == 2);
  ::kill(s.driver, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  for (const auto& pid : r["pid"]) CHECK(ends_within(std::stol(pid), 3s));
  CHECK(std::chrono::steady_clock::now() - killed < 3s);
}

TEST_CASE("a node whose agent is SIGKILLed during a map: every result right, and no hang", "[nodes][netns]") {
  const int rounds = kill_map_rounds();
  Scenario s(1);
  s.start_driver("[.driver-kill-map]");
  for (int round = 0; round < rounds; ++round) {
    const pid_t agent = s.start_agent(1);
    s.wait_for("mapping" + std::to_string(round));
    ::kill(agent, SIGKILL);
    (void)s.hosts.wait(agent, 10'000ms);
    auto r = s.wait_for("round" + std::to_string(round));
    CHECK(r["round" + std::to_string(round)].front() == "right");
  }
  CHECK(s.driver_exit(120s) == 0);
}
