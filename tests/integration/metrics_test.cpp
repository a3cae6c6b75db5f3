// Metrics: a real workload (a Queue between processes, a Lock, a Pool map) is counted by the coordinator, seen both in
// the mpx::metrics() snapshot and, scraped with a real HTTP client, in the Prometheus text of the MPX_METRICS server;
// a forged malformed message is counted; the server's address checks name what was wrong.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <httplib.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.hpp>

#include "children.hpp"
#include "runtime/runtime.hpp"
#include "wire/envelope.hpp"
#include "wire/transport.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

extern char** environ;

namespace {

int square(int x) { return x * x; }

int killed(int) {
  ::raise(SIGKILL);  // the worker dies mid-task, every time the task runs
  return 0;
}

void put_items(mpx::Queue<int> q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}

void get_one(mpx::Queue<int> q, mpx::Queue<int> done) { done.put(q.get()); }

void take_lock(mpx::Lock lock, int times) {
  for (int i = 0; i < times; ++i) {
    lock.acquire();
    lock.release();
  }
}

template <class T>
const T* by_id(const std::vector<T>& items, std::uint64_t id) {
  for (const auto& item : items) {
    if (item.id == id) return &item;
  }
  return nullptr;
}

const mpx::ActorMetrics* by_pid(const std::vector<mpx::ActorMetrics>& actors, std::int64_t pid) {
  for (const auto& actor : actors) {
    if (actor.pid == pid) return &actor;
  }
  return nullptr;
}

// The server MPX_METRICS started (the meson test sets it), or one started here when the binary runs without it.
std::string server_endpoint() {
  if (mpx::metrics_endpoint().empty()) mpx::serve_metrics("127.0.0.1:0");
  return mpx::metrics_endpoint();
}

// A scrape over HTTP, parsed: every line must be a comment or `name{labels} value`; samples by "name{labels}".
std::map<std::string, double> scrape(const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  httplib::Client client(endpoint.substr(0, colon), std::stoi(endpoint.substr(colon + 1)));
  client.set_read_timeout(60, 0);
  auto response = client.Get("/metrics");
  INFO("GET http://" << endpoint << "/metrics: " << httplib::to_string(response.error()));
  REQUIRE(response);
  REQUIRE(response->status == 200);
  CHECK(response->get_header_value("Content-Type").starts_with("text/plain; version=0.0.4"));
  static const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?) (\S+))");
  static const std::regex comment(R"(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+)");
  std::map<std::string, double> samples;
  std::istringstream lines(response->body);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, comment)) continue;
    INFO("exposition line: " << line);
    REQUIRE(std::regex_match(line, m, sample));
    samples[m[1].str()] = std::stod(m[3].str());
  }
  return samples;
}

double value_of(const std::map<std::string, double>& samples, const std::string& key) {
  INFO("sample " << key);
  auto it = samples.find(key);
  REQUIRE(it != samples.end());
  return it->second;
}

// Polls the snapshot until `ready` holds: the coordinator handles a posted message some time after it was sent.
template <class Ready>
mpx::Metrics metrics_when(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    auto m = mpx::metrics();
    if (ready(m) || std::chrono::steady_clock::now() > deadline) return m;
    std::this_thread::yield();
  }
}

}  // namespace

TEST_CASE("metrics() counts a queue's puts and gets, a lock's acquisitions, a pool's tasks and the actors",
          "[metrics]") {
  mpx_test::Children children;
  mpx::Queue<int> q;
  auto& producer = children.start(put_items, q, 5);
  for (int i = 0; i < 3; ++i) CHECK(q.get(true, 60s) == i);
  REQUIRE(producer.join(60s));

  mpx::Lock lock;
  auto& locker = children.start(take_lock, lock, 4);
  REQUIRE(locker.join(60s));

  std::set<std::uint64_t> pools_before;
  for (const auto& p : mpx::metrics().pools) pools_before.insert(p.id);
  {
    mpx::Pool pool(2);
    std::vector<int> xs{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK(pool.map(square, xs, 1).size() == xs.size());  // chunksize 1: one task per item
  }

  auto m = mpx::metrics();
  const auto* queue = by_id(m.queues, q.id());
  REQUIRE(queue != nullptr);
  CHECK(queue->puts == 5);
  CHECK(queue->gets == 3);
  CHECK(queue->depth == 2);
  CHECK(queue->waiters == 0);
  CHECK(queue->name == std::to_string(q.id()));

  const auto* locked = by_id(m.locks, lock.id());
  REQUIRE(locked != nullptr);
  CHECK(locked->acquisitions == 4);
  CHECK(locked->waiters == 0);

  const mpx::PoolMetrics* pool = nullptr;
  for (const auto& p : m.pools) {
    if (!pools_before.count(p.id)) pool = &p;
  }
  REQUIRE(pool != nullptr);
  CHECK(pool->done == 10);
  CHECK(pool->queued == 0);
  CHECK(pool->running == 0);
  CHECK(pool->failed == 0);

  const auto* root = by_pid(m.actors, ::getpid());
  REQUIRE(root != nullptr);
  CHECK(root->alive);
  CHECK(root->messages_in > 0);
  CHECK(root->messages_out > 0);
  // The producer exited: it is kept, as dead, with what it sent (its hello and five puts at least).
  m = metrics_when([&](const mpx::Metrics& s) {
    const auto* a = by_pid(s.actors, producer.pid());
    return a != nullptr && !a->alive;
  });
  const auto* gone = by_pid(m.actors, producer.pid());
  REQUIRE(gone != nullptr);
  CHECK_FALSE(gone->alive);
  CHECK(gone->name == producer.name());
  CHECK(gone->messages_in >= 1);

  CHECK(m.messages > 0);
  std::map<std::string, std::uint64_t> counts;
  for (const auto& k : m.kinds) {
    CHECK(k.count > 0);
    CHECK(k.seconds >= 0);
    counts[k.kind] = k.count;
  }
  CHECK(counts["queue_create"] >= 1);
  CHECK(counts["lock_acquire"] >= 4);  // the locker's: a Lock is served by the coordinator
  CHECK(counts["pool_create"] >= 1);
}

TEST_CASE("a lock's waits and waiters are counted while another process holds it", "[metrics]") {
  mpx_test::Children children;
  mpx::Lock lock;
  REQUIRE(lock.acquire());
  auto& blocked = children.start(take_lock, lock, 1);
  auto m = metrics_when([&](const mpx::Metrics& s) {
    const auto* l = by_id(s.locks, lock.id());
    return l != nullptr && l->waiters == 1;
  });
  const auto* waiting = by_id(m.locks, lock.id());
  REQUIRE(waiting != nullptr);
  CHECK(waiting->waiters == 1);
  CHECK(waiting->waits == 1);
  CHECK(waiting->acquisitions == 1);
  lock.release();
  REQUIRE(blocked.join(60s));
  CHECK(blocked.exitcode() == 0);
  m = mpx::metrics();
  const auto* after = by_id(m.locks, lock.id());
  REQUIRE(after != nullptr);
  CHECK(after->waiters == 0);
  CHECK(after->waits == 1);
  CHECK(after->acquisitions == 2);
}

TEST_CASE("a pool's retried and failed tasks and its worker restarts are counted", "[metrics]") {
  std::set<std::uint64_t> pools_before;
  for (const auto& p : mpx::metrics().pools) pools_before.insert(p.id);
  mpx::PoolOptions options;
  options.processes = 1;
  options.max_retries = 1;
  mpx::Pool pool(options);
  CHECK_THROWS_AS(pool.apply(killed, 1), mpx::WorkerLost);
  CHECK(pool.apply(square, 3) == 9);  // on the worker that replaced the second one killed
  const auto m = metrics_when([&](const mpx::Metrics& s) {
    for (const auto& p : s.pools) {
      if (!pools_before.count(p.id)) return p.done == 1 && p.failed == 1;
    }
    return false;
  });
  const mpx::PoolMetrics* counted = nullptr;
  for (const auto& p : m.pools) {
    if (!pools_before.count(p.id)) counted = &p;
  }
  REQUIRE(counted != nullptr);
  CHECK(counted->retried == 1);  // max_retries 1: run again once, then given up
  CHECK(counted->failed == 1);
  CHECK(counted->done == 1);
  CHECK(counted->worker_restarts == 2);
}

TEST_CASE("the metrics endpoint serves Prometheus text that a scrape during the run parses and agrees with",
          "[metrics][http]") {
  const std::string endpoint = server_endpoint();
  REQUIRE_FALSE(endpoint.empty());
  mpx_test::Children children;
  mpx::Queue<int> q;
  mpx::Queue<int> done;
  const std::string labels = "{queue=\"" + std::to_string(q.id()) + "\",id=\"" + std::to_string(q.id()) + "\"}";
  // A getter blocked on the empty queue, seen by a scrape while it waits.
  auto& getter = children.start(get_one, q, done);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  std::map<std::string, double> samples;
  for (;;) {
    samples = scrape(endpoint);
    auto it = samples.find("mpx_queue_waiters" + labels);
    if ((it != samples.end() && it->second == 1) || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::yield();
  }
  CHECK(value_of(samples, "mpx_queue_waiters" + labels) == 1);
  CHECK(value_of(samples, "mpx_queue_depth" + labels) == 0);
  CHECK(value_of(samples, "mpx_actor_up{actor=\"" + getter.name() + "\",pid=\"" + std::to_string(getter.pid()) +
                              "\"}") == 1);

  for (int i = 0; i < 7; ++i) q.put(i);
  CHECK(done.get(true, 60s) == 0);
  REQUIRE(getter.join(60s));
  samples = scrape(endpoint);
  CHECK(value_of(samples, "mpx_queue_puts_total" + labels) == 7);
  CHECK(value_of(samples, "mpx_queue_gets_total" + labels) == 1);
  CHECK(value_of(samples, "mpx_queue_depth" + labels) == 6);
  CHECK(value_of(samples, "mpx_coordinator_messages_total") > 0);
  CHECK(value_of(samples, "mpx_coordinator_kind_latency_seconds_count{kind=\"queue_create\"}") >= 2);
  CHECK(value_of(samples, "mpx_coordinator_kind_latency_seconds_sum{kind=\"queue_create\"}") >= 0);
  CHECK(value_of(samples, "mpx_actor_messages_in_total{actor=\"MainProcess\",pid=\"" + std::to_string(::getpid()) +
                              "\"}") > 0);

  SECTION("a malformed message is counted") {
    const double before = value_of(samples, "mpx_coordinator_malformed_total");
    mpx::runtime::ensure_coordinator();
    zmq::socket_t raw(mpx::runtime::context(), zmq::socket_type::dealer);
    const std::string coordinator = mpx::runtime::state().session.coordinator_endpoint;
    mpx::wire::configure(raw, coordinator);
    raw.set(zmq::sockopt::linger, 0);
    raw.connect(coordinator);
    raw.send(zmq::str_buffer("not an mpx envelope"), zmq::send_flags::none);
    const auto until = std::chrono::steady_clock::now() + 60s;
    double after = before;
    while (after < before + 1 && std::chrono::steady_clock::now() < until) {
      after = value_of(scrape(endpoint), "mpx_coordinator_malformed_total");
    }
    CHECK(after == before + 1);

    // A well-formed envelope whose body `metrics` does not take: answered `error malformed`, and counted.
    mpx::wire::Envelope forged;
    forged.header.kind = mpx::wire::Kind::metrics;
    forged.header.correlation = 7;
    const std::string body = mpx::encode(std::make_tuple(1));
    forged.body.emplace_back(body.data(), body.size());
    mpx::wire::send(raw, forged, static_cast<std::uint64_t>(::getpid()));
    zmq::pollitem_t item{raw.handle(), 0, ZMQ_POLLIN, 0};
    REQUIRE(zmq::poll(&item, 1, std::chrono::milliseconds(60000)) == 1);
    auto reply = mpx::wire::recv(raw);
    REQUIRE(reply);
    CHECK(reply->header.kind == mpx::wire::Kind::error);
    CHECK(value_of(scrape(endpoint), "mpx_coordinator_malformed_total") == before + 2);
  }
}

TEST_CASE("serve_metrics names a bad address and refuses a second server", "[metrics]") {
  const std::string endpoint = server_endpoint();
  CHECK_THROWS_AS(mpx::serve_metrics("127.0.0.1"), mpx::ValueError);
  CHECK_THROWS_AS(mpx::serve_metrics("127.0.0.1:99999"), mpx::ValueError);
  CHECK_THROWS_AS(mpx::serve_metrics(":0"), mpx::ValueError);
  CHECK_THROWS_WITH(mpx::serve_metrics("127.0.0.1:0"), Catch::Contains(endpoint));
  CHECK(mpx::metrics_endpoint() == endpoint);
}

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The value of the one sample whose key starts with `prefix`, if there is one.
std::optional<double> sample_starting(const std::map<std::string, double>& samples, const std::string& prefix) {
  for (const auto& [key, value] : samples) {
    if (key.starts_with(prefix)) return value;
  }
  return std::nullopt;
}

template <class Ready>
void wait_until(Ready ready, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > deadline) FAIL("timed out waiting until " << what);
    std::this_thread::sleep_for(10ms);  // a poll's pace, not a synchronization: the deadline bounds the wait
  }
}

}  // namespace

TEST_CASE("mpx-run --metrics serves a topology's names, an actor's restart, and stops with the run", "[metrics][run]") {
  char dir_template[] = "/tmp/mpx-metrics-test-XXXXXX";
  const fs::path dir = ::mkdtemp(dir_template);
  struct Remove {
    fs::path dir;
    ~Remove() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } remove{dir};
  ::setenv("TOPOLOGY_TEST_LOG", (dir / "log").c_str(), 1);
  // "later" starts once "waiter" is ready: its line in the log says that the supervisor saw "waiter" ready.
  std::ofstream(dir / "t.toml") << "[objects.jobs]\ntype = \"queue\"\n\n[[actors]]\nname = \"waiter\"\nexec = [\""
                                << TOPOLOGY_ACTOR_PATH << "\", \"wait\", \"waiter\"]\nrestart = \"permanent\"\n\n"
                                << "[[actors]]\nname = \"later\"\nexec = [\"" << TOPOLOGY_ACTOR_PATH
                                << "\", \"wait\", \"later\"]\nafter = [\"waiter\"]\n";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string out_path = (dir / "out").string();
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string program = MPX_RUN_PATH, option = "--metrics", address = "127.0.0.1:0", file = (dir / "t.toml").string();
  char* argv[] = {program.data(), option.data(), address.data(), file.data(), nullptr};
  // The address comes from --metrics alone: this test's own MPX_METRICS would start a second server in mpx-run.
  const char* inherited = std::getenv("MPX_METRICS");
  const std::string own_metrics = inherited ? inherited : "";
  ::unsetenv("MPX_METRICS");
  pid_t run = 0;
  const int spawned = ::posix_spawn(&run, MPX_RUN_PATH, &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::unsetenv("TOPOLOGY_TEST_LOG");
  if (inherited) ::setenv("MPX_METRICS", own_metrics.c_str(), 1);
  REQUIRE(spawned == 0);
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reap{run};

  std::string endpoint;
  wait_until([&] {
    static const std::regex announced(R"(mpx-run: metrics at http://(\S+)/metrics)");
    std::smatch m;
    const std::string out = read_text(dir / "out");
    if (!std::regex_search(out, m, announced)) return false;
    endpoint = m[1].str();
    return true;
  }, "mpx-run announces its metrics address");

  const auto started = [&] {
    std::ifstream in(dir / "log");
    std::map<std::string, pid_t> pids;
    std::string label;
    pid_t pid = 0;
    while (in >> label >> pid) pids.emplace(label, pid);
    return pids;
  };
  // Killed before it is ready, "waiter" would fail the start instead of being restarted.
  wait_until([&] { return started().count("later") == 1; }, "both actors started");
  const pid_t first = started().at("waiter");
  const std::string first_labels = "{actor=\"waiter\",pid=\"" + std::to_string(first) + "\"}";
  std::map<std::string, double> samples;
  wait_until([&] {
    samples = scrape(endpoint);
    return samples.count("mpx_actor_up" + first_labels) == 1;
  }, "the actor is up in a scrape");
  CHECK(sample_starting(samples, "mpx_queue_depth{queue=\"jobs\",id=\"") == 0.0);
  CHECK(value_of(samples, "mpx_actor_restarts_total" + first_labels) == 0);

  // Killed: the supervisor starts another "waiter", which counts one restart; the first shows as exited.
  REQUIRE(::kill(first, SIGKILL) == 0);
  wait_until([&] {
    samples = scrape(endpoint);
    for (const auto& [key, value] : samples) {
      if (key.starts_with("mpx_actor_restarts_total{actor=\"waiter\"") && value == 1) return true;
    }
    return false;
  }, "the restarted actor is counted");
  CHECK(value_of(samples, "mpx_actor_up" + first_labels) == 0);

  // A SIGTERM ends the run: the server stops with it, and the exit is clean.
  REQUIRE(::kill(run, SIGTERM) == 0);
  int status = 0;
  wait_until([&] { return ::waitpid(run, &status, WNOHANG) == run; }, "mpx-run exits");
  reap.pid = 0;
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const auto colon = endpoint.rfind(':');
  httplib::Client client(endpoint.substr(0, colon), std::stoi(endpoint.substr(colon + 1)));
  client.set_connection_timeout(5, 0);
  CHECK_FALSE(client.Get("/metrics"));
}
