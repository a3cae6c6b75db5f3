// Nodes on one host: this test program is the coordinator (tcp on loopback, with keys), and starts itself again as
// node agents (--mpx-node), each with a key of its own. Processes run on the nodes, share objects with the
// coordinator's host, fail, and are lost with their node; a key that speaks for another node's actors is refused.
// The same scenarios across network namespaces, with partitions, are in nodes_netns_test.cpp.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mpx/mpx.hpp>

#include "../temp_dir.hpp"
#include "runtime/runtime.hpp"
#include "wire/actor_id.hpp"
#include "wire/curve.hpp"
#include "wire/envelope.hpp"
#include "wire/stream_framing.hpp"
#include "wire/transport.hpp"

using namespace mpx;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// An agent this test started: SIGKILLed and reaped when it goes, if it has not ended already.
struct Agent {
  pid_t pid = 0;
  Agent() = default;
  explicit Agent(pid_t p) : pid(p) {}
  Agent(Agent&& other) noexcept : pid(std::exchange(other.pid, 0)) {}
  Agent& operator=(Agent&&) = delete;
  ~Agent() { kill(); }
  void kill() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid = 0;
  }
  // Waits for it to exit by itself; its exit status, or -1 if it did not within `timeout`.
  int wait_exit(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        pid = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      ::usleep(10'000);  // a bounded poll of the child's state, inside the deadline
    }
    return -1;
  }
};

// This process's session: a tcp coordinator on loopback with keys, and keys for nodes h1..h4.
struct Cluster {
  TempDir dir;
  std::string keys = (dir.path / "keys").string();
  Cluster() {
    mpx::make_keys(keys);
    for (const char* name : {"h1", "h2", "h3", "h4"}) mpx::make_node_keys(keys, name);
    mpx::set_keys(keys);
    mpx::set_coordinator_endpoint("tcp://127.0.0.1:*");
    (void)mpx::nodes();  // starts the coordinator
  }
  std::string endpoint() const { return runtime::state().session.coordinator_endpoint; }
  std::string node_keys(const std::string& name) const { return keys + "/nodes/" + name; }

  // Starts `program` (this test program unless given) as a node agent with the keys of `name`; its stderr goes to
  // `log` when given.
  // `via`: the endpoint the agent connects to, when not the coordinator's own (a proxy in between).
  Agent start_agent(const std::string& name, const std::string& program = "/proc/self/exe",
                    const std::string& log = {}, const std::string& via = {}) const {
    const std::string self = fs::read_symlink("/proc/self/exe").string();
    const std::string exe = program == "/proc/self/exe" ? self : program;
    const std::string keys_dir = name.empty() ? keys : node_keys(name);
    const std::string ep = via.empty() ? endpoint() : via;
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (!log.empty()) {
        FILE* f = std::freopen(log.c_str(), "w", stderr);
        (void)f;
      }
      ::unsetenv("MPX_KEYS");
      ::execl(exe.c_str(), exe.c_str(), "--mpx-node", ep.c_str(), "--mpx-keys", keys_dir.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    REQUIRE(pid > 0);
    return Agent(pid);
  }
};
Cluster& cluster() {
  static Cluster c;
  return c;
}

// A TCP proxy on loopback that holds every chunk `delay` in each direction, in order: a link whose round trip is
// longer than the agents' 250 ms heartbeat (this machine's kernel has no netem). Debian's python3 runs it.
struct SlowLink {
  pid_t pid = 0;
  std::string endpoint;
  SlowLink(const std::string& target, double delay_s) {
    const auto colon = target.rfind(':');
    const std::string host = target.substr(6, colon - 6), port = target.substr(colon + 1);
    static const char* program = R"(
import asyncio, sys, time
host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def pump(reader, writer):
    chunks = asyncio.Queue()
    async def deliver():
        while True:
            due, data = await chunks.get()
            if not data:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()
    delivering = asyncio.create_task(deliver())
    while True:
        data = await reader.read(65536)
        await chunks.put((time.monotonic() + delay, data))
        if not data:
            break
    await delivering
async def handle(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer), return_exceptions=True)
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
)";
    int out[2];
    REQUIRE(::pipe(out) == 0);
    pid = ::fork();
    if (pid == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      const std::string d = std::to_string(delay_s);
      ::execl("/usr/bin/python3", "python3", "-c", program, host.c_str(), port.c_str(), d.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char ch = 0;
    while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;  // its port, once it listens
    ::close(out[0]);
    REQUIRE(!line.empty());
    endpoint = "tcp://127.0.0.1:" + line;
  }
  ~SlowLink() {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
};

std::size_t alive_nodes() {
  std::size_t n = 0;
  for (const auto& node : mpx::nodes()) n += node.id != 0 && node.state == "alive";
  return n;
}

std::uint32_t newest_node() {
  std::uint32_t id = 0;
  for (const auto& node : mpx::nodes()) id = std::max(id, node.id);
  return id;
}

// Starts an agent with node `name`'s key (through `via`, if given) and waits until it has joined; its node id in `id`.
Agent join_node(const std::string& name, std::uint32_t& id, const std::string& via = {}) {
  auto& c = cluster();  // first: it chooses the keys and the endpoint before the coordinator starts
  const auto before = newest_node();
  auto agent = c.start_agent(name, "/proc/self/exe", {}, via);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while ((id = newest_node()) <= before) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    ::usleep(10'000);  // a bounded poll of the coordinator's table, inside the deadline
  }
  return agent;
}

// Waits until the node's state is `state`; false if not within `timeout`.
bool node_becomes(std::uint32_t id, const std::string& state, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    for (const auto& node : mpx::nodes()) {
      if (node.id == id && node.state == state) return true;
    }
    if (std::chrono::steady_clock::now() > deadline) return false;
    ::usleep(20'000);  // a bounded poll of the coordinator's table, inside the deadline
  }
}

ProcessOptions on(std::uint32_t node) {
  ProcessOptions options;
  options.node = node;
  return options;
}

void report_where(mpx::Queue<std::vector<std::int64_t>> out, std::int64_t tag) {
  out.put({tag, static_cast<std::int64_t>(mpx::current_process().node()), static_cast<std::int64_t>(::getpid())});
}

void raise_value_error() { throw mpx::ValueError("bad value on a node"); }

void exit_with(int code) { std::exit(code); }

void hold_lock_and_wait(mpx::Lock lock, mpx::Semaphore unit, mpx::Event held, mpx::Event never) {
  lock.acquire();
  unit.acquire();
  held.set();
  (void)never.wait(60s);
}

// A process on `node` that holds `lock` and the one unit of `unit` until it is killed (or its node is lost).
struct LockHolder {
  mpx::Lock lock;
  mpx::Semaphore unit{1};
  mpx::Event held, never;
  mpx::Process process;
  explicit LockHolder(std::uint32_t node) : process(on(node), hold_lock_and_wait, lock, unit, held, never) {
    process.start();
    REQUIRE(held.wait(30s));
  }
};

void take_one_and_wait(mpx::Queue<int> queue, mpx::Queue<int> taken, mpx::Event never) {
  taken.put(queue.get(true, 30s));
  (void)never.wait(120s);
}

long apply_square(long x) { return x * x; }

void use_pool(mpx::ObjectRef ref, mpx::Queue<long> out) {
  mpx::Pool pool = mpx::Pool::attach(ref);
  out.put(pool.apply(apply_square, 12L));
}

// A topology task actor: reports its replica and node, then runs until it is stopped (or its node is lost).
void report_node() {
  const auto& me = mpx::this_actor();
  me.queue<std::vector<std::int64_t>>("out").put(
      {static_cast<std::int64_t>(me.replica()), static_cast<std::int64_t>(mpx::current_process().node())});
  (void)me.event("never").wait(120s);
}
// Before mpx::init (in main): a node's processes, started by its agent, find it too.
const bool report_node_registered = (mpx::register_actor("report_node", report_node), true);

void wait_forever(mpx::Event started, mpx::Event never) {
  started.set();
  (void)never.wait(120s);
}

void put_then_die(mpx::Queue<int> queue, int n) {
  for (int i = 0; i < n; ++i) queue.put(i);
  ::kill(::getpid(), SIGKILL);  // right after the last put returned
}

// Writes to its agent's relay a lock_release that names `victim` as its sender, and reports what came of it: 0 when
// the agent closed the connection (and released nothing), 1 when something else came back, -1 with no relay.
void forge_through_relay(std::uint64_t lock_id, std::uint64_t victim, mpx::Queue<int> out) {
  const auto address = wire::unix_address(runtime::node_relay_path());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!address || fd < 0 || !wire::connect_unix(fd, *address)) {
    out.put(-1);
    return;
  }
  auto release = wire::make(wire::Kind::lock_release, lock_id, 1, Object{});
  std::string packet;
  wire::append_packet(packet, release, victim);
  (void)::send(fd, packet.data(), packet.size(), MSG_NOSIGNAL);
  pollfd readable{fd, POLLIN, 0};
  char byte = 0;
  const bool closed = ::poll(&readable, 1, 30'000) == 1 && ::recv(fd, &byte, 1, 0) == 0;
  ::close(fd);
  out.put(closed ? 0 : 1);
}

}  // namespace

TEST_CASE("nodes join with keys of their own, and run processes that share objects with the coordinator's host",
          "[nodes]") {
  auto& c = cluster();
  auto a1 = c.start_agent("h1");
  auto a2 = c.start_agent("h2");
  const auto before = alive_nodes();
  auto listed = mpx::wait_for_nodes(2, 30s);
  REQUIRE(listed.front().id == 0);
  REQUIRE(listed.size() >= 3);
  REQUIRE(before <= 2);

  std::vector<std::uint32_t> ids;
  for (const auto& n : listed) {
    if (n.id != 0 && n.state == "alive") ids.push_back(n.id);
  }
  REQUIRE(ids.size() >= 2);
  for (const auto& n : listed) CHECK(n.cpus > 0);

  mpx::Queue<std::vector<std::int64_t>> out;
  std::vector<mpx::Process> ps;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ps.emplace_back(on(ids[i]), report_where, out, static_cast<std::int64_t>(i));
    ps.back().start();
    CHECK(ps.back().node() == ids[i]);
  }
  std::set<std::int64_t> seen_nodes;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = out.get(true, 30s);
    REQUIRE(r.size() == 3);
    CHECK(r[1] == ids[static_cast<std::size_t>(r[0])]);
    seen_nodes.insert(r[1]);
  }
  CHECK(seen_nodes.size() == ids.size());
  for (auto& p : ps) {
    REQUIRE(p.join(30s));
    CHECK(p.exitcode() == 0);
    CHECK_FALSE(p.is_alive());
  }
}

TEST_CASE("a process on a node reports its exit code, its exception and its signals", "[nodes]") {
  (void)cluster();
  std::uint32_t node = 0;
  auto a = join_node("h3", node);

  mpx::Process raises(on(node), raise_value_error);
  raises.start();
  REQUIRE(raises.join(30s));
  CHECK(raises.exitcode() == 1);
  REQUIRE(raises.exception());
  CHECK_THAT(raises.exception()->what(), Catch::Matchers::Contains("bad value on a node"));

  mpx::Process exits(on(node), exit_with, 7);
  exits.start();
  REQUIRE(exits.join(30s));
  CHECK(exits.exitcode() == 7);

  mpx::Event started, never;
  mpx::Process runs(on(node), wait_forever, started, never);
  runs.start();
  REQUIRE(started.wait(30s));
  CHECK(runs.is_alive());
  CHECK_FALSE(runs.join(0.2s));
  runs.terminate();
  REQUIRE(runs.join(30s));
  CHECK(runs.exitcode() == -SIGTERM);
}

TEST_CASE("a lock held on a node is released when its holder dies there", "[nodes]") {
  std::uint32_t node = 0;
  auto a = join_node("h4", node);
  LockHolder h(node);
  CHECK_FALSE(h.lock.acquire(false));
  h.process.kill();
  REQUIRE(h.process.join(30s));
  CHECK(h.process.exitcode() == -SIGKILL);
  REQUIRE(h.lock.acquire(true, 30s));
  h.lock.release();
}

TEST_CASE("a node whose agent is SIGKILLed is lost within 3 s: its processes end with NodeLost", "[nodes]") {
  (void)cluster();
  std::uint32_t node = 0;
  auto a = join_node("h1", node);
  LockHolder h(node);
  auto& lock = h.lock;
  auto& holder = h.process;

  const auto killed = std::chrono::steady_clock::now();
  a.kill();
  REQUIRE(holder.join(10s));
  const auto detected = std::chrono::steady_clock::now() - killed;
  CHECK(detected < 3s);
  CHECK(holder.exitcode() == mpx::node_lost_exitcode);
  REQUIRE(holder.exception());
  CHECK_THAT(holder.exception()->what(), Catch::Matchers::Contains("node " + std::to_string(node)));
  CHECK(node_becomes(node, "lost", 1s));
  REQUIRE(lock.acquire(true, 10s));  // the lost holder's lock is released
  lock.release();
  REQUIRE(h.unit.acquire(true, 10s));  // and its semaphore unit
  h.unit.release();
  // A start on a lost node is refused with NodeLost.
  mpx::Process late(on(node), exit_with, 0);
  CHECK_THROWS_AS(late.start(), mpx::NodeLost);
}

TEST_CASE("a key that speaks for another node's actors changes nothing, and is counted", "[nodes][security]") {
  auto& c = cluster();
  std::uint32_t victim_node = 0;
  auto a = join_node("h2", victim_node);
  LockHolder h(victim_node);
  auto& lock = h.lock;
  auto& holder = h.process;
  const auto victim = wire::actor_id(victim_node, static_cast<std::uint64_t>(holder.pid()));

  // A raw client with node h3's key (admitted, not h2's node): it releases the lock as its holder, and as node 0.
  zmq::socket_t socket(runtime::context(), zmq::socket_type::dealer);
  wire::configure(socket, c.endpoint());
  wire::make_curve_client(socket, wire::load_curve_client(c.node_keys("h3")));
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(c.endpoint());
  const auto forged_before = mpx::metrics().forged;
  std::uint64_t correlation = 1;
  for (const auto sender : {victim, wire::actor_id(0, static_cast<std::uint64_t>(::getpid()))}) {
    auto release = wire::make(wire::Kind::lock_release, lock.id(), correlation++, Object{});
    wire::send(socket, release, sender);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    REQUIRE(zmq::poll(&item, 1, std::chrono::milliseconds(30'000)) == 1);
    auto reply = wire::recv(socket);
    REQUIRE(reply);
    CHECK(reply->header.kind == wire::Kind::error);
  }
  CHECK(mpx::metrics().forged >= forged_before + 2);
  CHECK_FALSE(lock.acquire(false));  // still held by its holder
  holder.kill();
  REQUIRE(holder.join(30s));
}

TEST_CASE("a node is refused when it runs another build, or uses the coordinator host's own key", "[nodes]") {
  auto& c = cluster();
  const std::string log = c.dir / "agent.log";
  auto other_build = c.start_agent("h3", TOPOLOGY_ACTOR_PATH, log);
  REQUIRE(other_build.wait_exit(30s) == 1);
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Catch::Matchers::Contains("runs build") && Catch::Matchers::Contains("the coordinator build"));

  const std::string own_log = c.dir / "own.log";
  auto own_key = c.start_agent("", "/proc/self/exe", own_log);
  REQUIRE(own_key.wait_exit(30s) == 1);
  std::ifstream own_in(own_log);
  std::string own_text((std::istreambuf_iterator<char>(own_in)), std::istreambuf_iterator<char>());
  CHECK_THAT(own_text, Catch::Matchers::Contains("mpx-run keygen DIR --node NAME"));
}

TEST_CASE("a lost node's consumer gives back what the queue lent it", "[nodes]") {
  std::uint32_t node = 0;
  auto a = join_node("h3", node);
  mpx::Queue<int> queue, taken;
  for (int i = 0; i < 100; ++i) queue.put(i);
  mpx::Event never;
  mpx::Process consumer(on(node), take_one_and_wait, queue, taken, never);
  consumer.start();
  const int first = taken.get(true, 30s);
  a.kill();
  REQUIRE(consumer.join(10s));
  CHECK(consumer.exitcode() == mpx::node_lost_exitcode);
  // Whatever the consumer's get was lent beyond the item it took is back: 99 items, in order.
  std::vector<int> rest;
  for (int i = 0; i < 99; ++i) rest.push_back(queue.get(true, 10s));
  std::vector<int> expected;
  for (int i = 0; i < 100; ++i) {
    if (i != first) expected.push_back(i);
  }
  CHECK(rest == expected);
  CHECK(queue.empty());
}

TEST_CASE("a pool handle passed to a process on a node runs tasks from there", "[nodes]") {
  std::uint32_t node = 0;
  auto a = join_node("h4", node);
  mpx::Pool pool(2);
  mpx::Queue<long> out;
  mpx::Process user(on(node), use_pool, pool.ref(), out);
  user.start();
  CHECK(out.get(true, 30s) == 144);
  REQUIRE(user.join(30s));
  CHECK(user.exitcode() == 0);
}

TEST_CASE("topology task actors run on the node they name, or spread, and restart on a surviving node", "[nodes]") {
  REQUIRE(report_node_registered);
  std::uint32_t node = 0;
  auto a = join_node("h2", node);
  // Agents of earlier cases were killed: spread must see only this one, once their nodes are declared lost.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (alive_nodes() != 1) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    ::usleep(20'000);  // a bounded poll of the coordinator's table, inside the deadline
  }
  auto topology = mpx::Topology::parse(R"(
[objects.out]
type = "queue"

[objects.never]
type = "event"

[[actors]]
name = "pinned"
task = "report_node"
node = )" + std::to_string(node) + R"(
restart = "temporary"
objects = ["out", "never"]

[[actors]]
name = "spread"
task = "report_node"
placement = "spread"
replicas = 2
objects = ["out", "never"]
)", "placed.toml");
  topology.start();
  auto out = topology.objects().queue<std::vector<std::int64_t>>("out");
  std::multiset<std::vector<std::int64_t>> reports;
  for (int i = 0; i < 3; ++i) reports.insert(out.get(true, 30s));
  // pinned (replica 0) on the node; spread's replicas over the alive nodes in turn: this host, then the node.
  const std::multiset<std::vector<std::int64_t>> expected{
      {0, static_cast<std::int64_t>(node)}, {0, 0}, {1, static_cast<std::int64_t>(node)}};
  CHECK(reports == expected);
  // The node is lost: spread's replica 1 is restarted on a node still alive (this host); pinned is temporary.
  a.kill();
  CHECK(out.get(true, 15s) == std::vector<std::int64_t>{1, 0});
  (void)topology.stop(10s);
}

TEST_CASE("a topology file places an actor by node or spread, not both", "[nodes]") {
  CHECK_THROWS_WITH(mpx::Topology::parse(R"(
[[actors]]
name = "x"
task = "report_node"
node = 1
placement = "spread"
)", "bad.toml"), Catch::Matchers::Contains("either node or placement"));
}

TEST_CASE("a topology exec actor runs on the node it names, joined, and its exit code comes back", "[nodes]") {
  std::uint32_t node = 0;
  auto a = join_node("h1", node);
  auto topology = mpx::Topology::parse(R"(
[objects.out]
type = "queue"

[[actors]]
name = "where"
exec = [")" + std::string(TOPOLOGY_ACTOR_PATH) + R"(", "where", "w", "3"]
node = )" + std::to_string(node) + R"(
restart = "temporary"
objects = ["out"]
)", "exec_on_node.toml");
  topology.start();
  const auto where = topology.objects().queue<std::vector<std::int64_t>>("out").get(true, 30s);
  REQUIRE(where.size() == 2);
  CHECK(where[0] == static_cast<std::int64_t>(node));
  // Ended with its own exit code (the agent is its parent and reaps it), reported as a temporary actor's failure.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  std::optional<int> code;
  while (!code) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    for (const auto& actor : topology.status().actors) {
      if (actor.name == "where" && actor.last_exitcode) code = actor.last_exitcode;
    }
    if (!code) ::usleep(20'000);  // a bounded poll of the supervisor's table, inside the deadline
  }
  CHECK(*code == 3);
  (void)topology.stop(10s);
}

TEST_CASE("a node behind a link slower than its heartbeat stays joined, and its process runs on", "[nodes]") {
  // 300 ms each way: every answer to a beat arrives after the next beat went out.
  SlowLink link(cluster().endpoint(), 0.3);
  std::uint32_t node = 0;
  auto a = join_node("h3", node, link.endpoint);
  mpx::Event started, never;
  mpx::Process runs(on(node), wait_forever, started, never);
  runs.start();
  REQUIRE(started.wait(30s));
  // Two and a half node timeouts: an agent that took the late answers for silence would have stopped it by now.
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    REQUIRE(runs.is_alive());
    ::usleep(100'000);  // a bounded watch that nothing ends, until the deadline
  }
  CHECK(node_becomes(node, "alive", 1s));
  runs.kill();
  REQUIRE(runs.join(30s));
}

TEST_CASE("a node process SIGKILLed right after its puts returned: when join returns, every item is queued", "[nodes]") {
  // Its puts are posts through the agent's relay, not waited for: the agent reports the death only after the
  // coordinator handled all of them.
  std::uint32_t node = 0;
  auto a = join_node("h2", node);
  constexpr int n = 5000;
  mpx::Queue<int> queue;
  mpx::Process producer(on(node), put_then_die, queue, n);
  producer.start();
  REQUIRE(producer.join(30s));
  CHECK(producer.exitcode() == -SIGKILL);
  int got = 0;
  try {
    for (; got < n; ++got) REQUIRE(queue.get(false) == got);
  } catch (const mpx::Empty&) {
  }
  CHECK(got == n);
  CHECK(queue.empty());
}

TEST_CASE("a process on a node cannot speak for another through its agent's relay", "[nodes][security]") {
  std::uint32_t node = 0;
  auto a = join_node("h4", node);
  LockHolder h(node);
  const auto victim = wire::actor_id(node, static_cast<std::uint64_t>(h.process.pid()));
  mpx::Queue<int> out;
  mpx::Process forger(on(node), forge_through_relay, h.lock.id(), victim, out);
  forger.start();
  CHECK(out.get(true, 30s) == 0);  // the agent closed its connection
  REQUIRE(forger.join(30s));
  CHECK_FALSE(h.lock.acquire(false));  // still held by its holder
  h.process.kill();
  REQUIRE(h.process.join(30s));
}
