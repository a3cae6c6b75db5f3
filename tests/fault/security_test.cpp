// A tcp:// coordinator uses CURVE: a peer without keys, or with keys the allow list does not hold, changes no state and
// is counted; a right key is served; a real child of a tcp session connects with the keys; plain tcp without keys is
// refused with a how-to, and the insecure switch warns. (PROTOCOL.md, "Security"; docs/distributed.md.)
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../temp_dir.hpp"
#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "wire/curve.hpp"
#include "wire/envelope.hpp"
#include "wire/transport.hpp"

extern char** environ;

using namespace mpx;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// This process's session, on tcp with keys: made by the first test that needs it, before the coordinator starts.
struct TcpSession {
  TempDir dir;
  std::string keys = (dir.path / "keys").string();
  TcpSession() {
    mpx::make_keys(keys);
    mpx::set_keys(keys);
    runtime::set_coordinator_endpoint("tcp://127.0.0.1:*");
    runtime::ensure_coordinator();
  }
  const std::string& endpoint() const { return runtime::state().session.coordinator_endpoint; }
};
TcpSession& tcp_session() {
  static TcpSession session;
  return session;
}

// A DEALER that is no mpx channel, with the keys given (or none), and a monitor of its connection's events.
struct RawClient {
  zmq::socket_t socket{runtime::context(), zmq::socket_type::dealer};
  zmq::socket_t monitor{runtime::context(), zmq::socket_type::pair};
  std::uint64_t next_correlation = 1;

  explicit RawClient(const std::optional<wire::CurveClient>& keys) {
    const std::string endpoint = tcp_session().endpoint();
    wire::configure(socket, endpoint);
    if (keys) wire::make_curve_client(socket, *keys);
    socket.set(zmq::sockopt::linger, 0);
    static int clients = 0;  // an inproc endpoint is free again only once its socket is reaped: never reuse one
    const std::string events = "inproc://security-test-monitor-" + std::to_string(++clients);
    REQUIRE(zmq_socket_monitor(socket.handle(), events.c_str(), ZMQ_EVENT_ALL) == 0);
    monitor.connect(events);
    socket.connect(endpoint);
  }
  void send(wire::Envelope e) {
    e.header.correlation = next_correlation++;
    wire::send(socket, e, static_cast<std::uint64_t>(::getpid()));
  }
  std::optional<wire::Envelope> receive(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) != 1) return std::nullopt;
    return wire::recv(socket);
  }
  // Waits for the next event of the connection (each attempt to connect makes some); false if none came in time.
  bool next_event(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) != 1) return false;
    for (bool more = true; more;) {
      zmq::message_t frame;
      (void)monitor.recv(frame);
      more = frame.more();
    }
    return true;
  }
};

// Waits until the coordinator has counted a denial more than `before`, woken by the client's own connection events
// (it retries, and is refused, again and again). False if none within 30 s.
bool denied_after(RawClient& client, std::uint64_t before) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (mpx::metrics().denied > before) return true;
    (void)client.next_event(std::chrono::milliseconds(500));
  }
  return mpx::metrics().denied > before;
}

wire::Envelope queue_put(std::uint64_t queue, int item) {
  auto e = wire::make(wire::Kind::queue_put, queue, 0, std::make_tuple(std::int64_t{0}));
  e.body.push_back(wire::frame_of(encode(item)));
  return e;
}

// The state-changing requests a hostile peer would try: a put, a release of someone else's lock, a trace file.
void send_hostile_requests(RawClient& client, std::uint64_t queue, std::uint64_t lock, const fs::path& trace_file) {
  client.send(queue_put(queue, 666));
  client.send(wire::make(wire::Kind::lock_release, lock, 0, Object{}));
  client.send(wire::make(wire::Kind::trace_enable, 0, 0, std::make_tuple("file:" + trace_file.string())));
}

// Runs this test program again, in a fresh process, on the hidden test case `name`, without MPX_KEYS or
// MPX_INSECURE_TCP in its environment but with `extra`; returns its exit status, its output in `output`.
int run_fresh(const std::string& name, const std::vector<std::string>& extra, const fs::path& output) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "MPX_KEYS=", 9) == 0 || std::strncmp(*e, "MPX_INSECURE_TCP=", 17) == 0) continue;
    env.emplace_back(*e);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string program = fs::read_symlink("/proc/self/exe").string(), test = name;
  char* argv[] = {program.data(), test.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, envp.data()) == 0);
  posix_spawn_file_actions_destroy(&actions);
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  pollfd ended{pidfd, POLLIN, 0};
  const bool in_time = ::poll(&ended, 1, 120000) == 1;
  ::close(pidfd);
  if (!in_time) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  INFO(read_file(output));
  REQUIRE(in_time);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

// What a spawned or forkserved child of the tcp session does with the handles it is given.
void use_queue_and_lock(mpx::Queue<int> queue, mpx::Lock lock, int value) {
  if (!lock.acquire(true, std::chrono::seconds(30))) throw std::runtime_error("the lock was not acquired in 30 s");
  queue.put(value);
  lock.release();
}

void put_one(mpx::Queue<int> queue) { queue.put(7); }

}  // namespace

TEST_CASE("wire: a ZAP handler admits only allowed CURVE keys, and User-Id tells a network peer", "[security][wire]") {
  TempDir dir;
  const std::string keys = (dir.path / "keys").string();
  wire::make_key_directory(keys);
  const auto server_keys = wire::load_curve_server(keys);
  const auto client_keys = wire::load_curve_client(keys);
  REQUIRE(server_keys.allowed.size() == 1);
  CHECK(server_keys.allowed.begin()->second == "client");

  zmq::context_t context(1);  // a ZAP handler of its own: one per context
  zmq::socket_t zap(context, zmq::socket_type::rep);
  zap.bind(wire::zap_endpoint);
  zmq::socket_t router(context, zmq::socket_type::router);
  wire::make_curve_server(router, server_keys);
  const std::string endpoint = wire::bind(router, "tcp://127.0.0.1:*");
  router.bind("inproc://security-wire-test");

  zmq::socket_t good(context, zmq::socket_type::dealer);
  wire::configure(good, endpoint);
  wire::make_curve_client(good, client_keys);
  good.connect(endpoint);
  good.send(wire::encode_header(wire::Header{}), zmq::send_flags::none);
  zmq::pollitem_t zap_item{zap.handle(), 0, ZMQ_POLLIN, 0};
  REQUIRE(zmq::poll(&zap_item, 1, std::chrono::milliseconds(30000)) == 1);
  CHECK(wire::serve_zap(zap, server_keys.allowed) == std::optional<bool>(true));
  zmq::pollitem_t router_item{router.handle(), 0, ZMQ_POLLIN, 0};
  REQUIRE(zmq::poll(&router_item, 1, std::chrono::milliseconds(30000)) == 1);
  zmq::message_t routing;
  wire::Credentials credentials;
  REQUIRE(wire::recv(router, &routing, false, &credentials));
  CHECK(credentials.user_id == "client");
  CHECK(credentials.network);

  zmq::socket_t local(context, zmq::socket_type::dealer);
  local.connect("inproc://security-wire-test");
  local.send(wire::encode_header(wire::Header{}), zmq::send_flags::none);
  REQUIRE(wire::recv(router, &routing, false, &credentials));
  CHECK(credentials.user_id.empty());
  CHECK_FALSE(credentials.network);

  const auto stranger = wire::generate_certificate("stranger");
  zmq::socket_t bad(context, zmq::socket_type::dealer);
  wire::configure(bad, endpoint);
  wire::make_curve_client(bad, wire::CurveClient{client_keys.server_key, stranger.public_key, stranger.secret_key});
  bad.set(zmq::sockopt::linger, 0);
  bad.connect(endpoint);
  REQUIRE(zmq::poll(&zap_item, 1, std::chrono::milliseconds(30000)) == 1);
  CHECK(wire::serve_zap(zap, server_keys.allowed) == std::optional<bool>(false));

  CHECK(wire::open_to_unauthenticated(wire::Kind::ping));
  CHECK(wire::open_to_unauthenticated(wire::Kind::metrics));
  CHECK_FALSE(wire::open_to_unauthenticated(wire::Kind::hello));
  CHECK_FALSE(wire::open_to_unauthenticated(wire::Kind::trace_enable));
  CHECK_FALSE(wire::open_to_unauthenticated(wire::Kind::lock_release));
}

TEST_CASE("a peer without CURVE keys, or with a key not allowed, changes nothing and is counted", "[security]") {
  auto& session = tcp_session();
  REQUIRE(session.endpoint().starts_with("tcp://127.0.0.1:"));
  mpx::Queue<int> queue;
  queue.put(1);
  mpx::Lock lock;
  REQUIRE(lock.acquire());
  TempDir scratch;
  const fs::path trace_file = scratch.path / "forged.mpxt";
  const auto right = wire::load_curve_client(session.keys);
  const auto stranger = wire::generate_certificate("stranger");
  std::optional<wire::CurveClient> keys;
  SECTION("no keys at all") {}
  SECTION("a key pair the allow list does not hold") {
    keys = wire::CurveClient{right.server_key, stranger.public_key, stranger.secret_key};
  }
  SECTION("the right client key, but the wrong coordinator key") {
    keys = wire::CurveClient{stranger.public_key, right.public_key, right.secret_key};
  }
  const auto before = mpx::metrics().denied;
  {
    RawClient client(keys);
    send_hostile_requests(client, queue.id(), lock.id(), trace_file);
    CHECK(denied_after(client, before));
    CHECK_FALSE(client.receive(std::chrono::milliseconds(0)));
  }
  // Nothing of theirs was executed: the queue holds its one item, the lock is still ours, no trace was started.
  CHECK(queue.qsize() == 1);
  CHECK(lock.locked());
  CHECK_FALSE(mpx::trace::enabled());
  CHECK_FALSE(fs::exists(trace_file));
  CHECK(mpx::metrics().unauthenticated == 0);  // none got as far as a message
  lock.release();  // ours to release: nobody else did
  CHECK(queue.get() == 1);
}

TEST_CASE("a client with the right key is served", "[security]") {
  auto& session = tcp_session();
  mpx::Queue<int> queue;
  const auto denied = mpx::metrics().denied;
  RawClient client(wire::load_curve_client(session.keys));
  client.send(wire::make(wire::Kind::ping, 0, 0, Object{}));
  auto pong = client.receive();
  REQUIRE(pong);
  CHECK(pong->header.kind == wire::Kind::pong);
  client.send(queue_put(queue.id(), 5));
  auto ok = client.receive();
  REQUIRE(ok);
  CHECK(ok->header.kind == wire::Kind::ok);
  CHECK(queue.get(true, std::chrono::seconds(30)) == 5);
  CHECK(mpx::metrics().denied == denied);
  // The exposition names both counters.
  const auto text = mpx::metrics_text();
  CHECK_THAT(text, Contains("mpx_coordinator_zap_denied_total"));
  CHECK_THAT(text, Contains("mpx_coordinator_unauthenticated_total 0"));
}

TEST_CASE("a child of a tcp session with keys connects with them: Queue and Lock work", "[security][process]") {
  tcp_session();
  const auto method = GENERATE(mpx::StartMethod::spawn, mpx::StartMethod::forkserver);
  INFO("start method " << mpx::to_string(method));
  mpx::Queue<int> queue;
  mpx::Lock lock;
  const auto denied = mpx::metrics().denied;
  std::vector<mpx::Process> children;
  for (int i = 0; i < 3; ++i) {
    children.emplace_back(mpx::ProcessOptions{"", std::nullopt, method}, use_queue_and_lock, queue, lock, 10 + i);
    children.back().start();
  }
  int sum = 0;
  for (int i = 0; i < 3; ++i) sum += queue.get(true, std::chrono::seconds(60));
  CHECK(sum == 10 + 11 + 12);
  for (auto& child : children) {
    REQUIRE(child.join(std::chrono::seconds(60)));
    CHECK(child.exitcode() == 0);
  }
  CHECK_FALSE(lock.locked());
  CHECK(mpx::metrics().denied == denied);
}

TEST_CASE("a key directory that is not one is refused, naming what is wrong", "[security]") {
  TempDir dir;
  CHECK_THROWS_WITH(runtime::checked_key_directory((dir.path / "none").string()),
                    Contains("is not a directory") && Contains("mpx-run keygen"));
  fs::create_directories(dir.path / "empty");
  CHECK_THROWS_AS(runtime::checked_key_directory((dir.path / "empty").string()), mpx::ValueError);
  CHECK_THROWS_WITH(runtime::checked_key_directory((dir.path / "empty").string()), Contains("coordinator.key_secret"));
  const std::string keys = (dir.path / "keys").string();
  mpx::make_keys(keys);
  CHECK_THROWS_WITH(mpx::make_keys(keys), Contains("never overwritten"));
  fs::remove(fs::path(keys) / "allowed" / "client.key");
  CHECK_THROWS_WITH(runtime::checked_key_directory(keys), Contains("admits nobody"));
}

TEST_CASE("mpx-run keygen makes certificates that load back", "[security][mpx-run]") {
  TempDir dir;
  const fs::path keys = dir.path / "keys";
  const std::string command = std::string(MPX_RUN_PATH) + " keygen " + keys.string() + " > " +
                              (dir.path / "out").string() + " 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
  CHECK_THAT(read_file(dir.path / "out"), Contains("MPX_KEYS=" + keys.string()));
  for (const char* file : {"coordinator.key", "coordinator.key_secret", "client.key", "client.key_secret",
                           "allowed/client.key"}) {
    INFO(file);
    CHECK(fs::is_regular_file(keys / file));
  }
  CHECK((fs::status(keys / "client.key_secret").permissions() & fs::perms::group_all) == fs::perms::none);
  CHECK((fs::status(keys / "coordinator.key_secret").permissions() & fs::perms::others_all) == fs::perms::none);
  const auto client = wire::load_certificate((keys / "client.key_secret").string());
  const auto allowed = wire::load_certificate((keys / "allowed" / "client.key").string());
  const auto coordinator = wire::load_certificate((keys / "coordinator.key").string());
  CHECK(client.public_key.size() == 40);
  CHECK(client.secret_key.size() == 40);
  CHECK(allowed.public_key == client.public_key);
  CHECK(allowed.secret_key.empty());
  CHECK(coordinator.secret_key.empty());
  CHECK(wire::certificate_name(allowed, (keys / "allowed" / "client.key").string()) == "client");
  CHECK_THAT(read_file(keys / "client.key"), Contains("curve\n    public-key = \"" + client.public_key + "\""));
  CHECK(std::system((command + " && false").c_str()) != 0);  // a second run never overwrites
  CHECK_THAT(read_file(dir.path / "out"), Contains("never overwritten"));

  // pyzmq reads them too (tools/install-deps.sh installs Debian's python3-zmq, for Debian's own interpreter, which
  // may not be the first python3 on the PATH).
  std::string python;
  for (const char* candidate : {"/usr/bin/python3", "python3"}) {
    if (std::system((std::string(candidate) + " -c 'import zmq.auth' > /dev/null 2>&1").c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  if (python.empty()) {
    WARN("pyzmq is not installed: its reading of the certificates is not checked");
    return;
  }
  const std::string check = python + " -c 'import sys, zmq.auth; "
                            "p, s = zmq.auth.load_certificate(sys.argv[1] + \"/client.key_secret\"); "
                            "q, _ = zmq.auth.load_certificate(sys.argv[1] + \"/allowed/client.key\"); "
                            "assert p == q and len(s) == 40; "
                            "assert list(zmq.auth.load_certificates(sys.argv[1] + \"/allowed\")) == [p]' " +
                            keys.string();
  CHECK(std::system(check.c_str()) == 0);
}

TEST_CASE("plain tcp without keys is refused with how to make them", "[security]") {
  TempDir dir;
  CHECK(run_fresh("fresh process: plain tcp without keys", {}, dir.path / "out") == 0);
}

TEST_CASE("fresh process: plain tcp without keys", "[.][security-fresh]") {
  CHECK_THROWS_AS(runtime::set_coordinator_endpoint("tcp://127.0.0.1:*"), mpx::ValueError);
  CHECK_THROWS_WITH(runtime::set_coordinator_endpoint("tcp://127.0.0.1:*"),
                    Contains("mpx-run keygen DIR") && Contains("MPX_KEYS=DIR") && Contains("MPX_INSECURE_TCP=1"));
  CHECK_THROWS_AS(mpx::set_keys("/nonexistent/mpx-keys"), mpx::ValueError);
  // The session is still usable on its ipc default.
  mpx::Queue<int> queue;
  queue.put(3);
  CHECK(queue.get() == 3);
  CHECK(runtime::state().session.coordinator_endpoint.starts_with("ipc://"));
}

TEST_CASE("MPX_INSECURE_TCP=1 allows plain tcp and warns at the bind and at each process's connection",
          "[security]") {
  TempDir dir;
  CHECK(run_fresh("fresh process: insecure tcp", {"MPX_INSECURE_TCP=1"}, dir.path / "out") == 0);
  const auto out = read_file(dir.path / "out");
  CHECK_THAT(out, Contains("mpx: WARNING: the coordinator binds tcp://127.0.0.1:* without CURVE (MPX_INSECURE_TCP=1)"));
  CHECK_THAT(out, Contains("connects to the coordinator at tcp://127.0.0.1:"));
}

TEST_CASE("fresh process: insecure tcp", "[.][security-fresh]") {
  runtime::set_coordinator_endpoint("tcp://127.0.0.1:*");
  mpx::Queue<int> queue;
  REQUIRE(runtime::state().session.coordinator_endpoint.starts_with("tcp://127.0.0.1:"));
  mpx::Process child(mpx::ProcessOptions{"", std::nullopt, mpx::StartMethod::spawn}, put_one, queue);
  child.start();
  CHECK(queue.get(true, std::chrono::seconds(60)) == 7);
  REQUIRE(child.join(std::chrono::seconds(60)));
  CHECK(child.exitcode() == 0);
}
