// Metrics: a real workload (a Queue between processes, a Lock, a Pool map) is counted by the coordinator, seen both in
// the mpx::metrics() snapshot and, scraped with a real HTTP client, in the Prometheus text of the MPX_METRICS server;
// a forged malformed message is counted; the server's address checks name what was wrong.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
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

int raises(int x) {
  if (x % 2 == 1) throw std::runtime_error("odd");
  return x;
}

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

void take_unit(mpx::Semaphore sem) {
  sem.acquire();
  sem.release();
}

void wait_event(mpx::Event event) { (void)event.wait(60s); }

void wait_notified(mpx::Condition cond) {
  cond.acquire();
  (void)cond.wait(60s);
  cond.release();
}

void pass_barrier(mpx::Barrier barrier) { (void)barrier.wait(60s); }

void raise_error() { throw std::runtime_error("this actor fails"); }

void wait_for(mpx::Event event) { (void)event.wait(60s); }

template <class T>
const T* by_id(const std::vector<T>& items, std::uint64_t id) {
  for (const auto& item : items) {
    if (item.id == id) return &item;
  }
  return nullptr;
}

// The pool that was not there before (the test's own).
const mpx::PoolMetrics* new_pool(const mpx::Metrics& m, const std::set<std::uint64_t>& before) {
  for (const auto& p : m.pools) {
    if (!before.count(p.id)) return &p;
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

  const mpx::PoolMetrics* pool = new_pool(m, pools_before);
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

TEST_CASE("an actor's state: running while it lives, exited when it returns, failed when its target raised",
          "[metrics]") {
  mpx_test::Children children;
  mpx::Event release;
  auto& waiting = children.start(wait_for, release);
  auto& failing = children.start(raise_error);
  REQUIRE(failing.join(60s));
  CHECK(failing.exitcode() == 1);
  auto m = metrics_when([&](const mpx::Metrics& s) {
    const auto* w = by_pid(s.actors, waiting.pid());
    const auto* f = by_pid(s.actors, failing.pid());
    return w != nullptr && f != nullptr && !f->alive;
  });
  const auto* root = by_pid(m.actors, ::getpid());
  REQUIRE(root != nullptr);
  CHECK(root->state == "running");
  const auto* live = by_pid(m.actors, waiting.pid());
  REQUIRE(live != nullptr);
  CHECK(live->state == "running");
  const auto* failed = by_pid(m.actors, failing.pid());
  REQUIRE(failed != nullptr);
  CHECK(failed->state == "failed");

  release.set();
  REQUIRE(waiting.join(60s));
  m = metrics_when([&](const mpx::Metrics& s) {
    const auto* w = by_pid(s.actors, waiting.pid());
    return w != nullptr && !w->alive;
  });
  const auto* ended = by_pid(m.actors, waiting.pid());
  REQUIRE(ended != nullptr);
  CHECK(ended->state == "exited");
  const std::string text = mpx::metrics_text(m);
  CHECK(text.find("mpx_actor_state{actor=\"" + waiting.name() + "\",pid=\"" + std::to_string(waiting.pid()) +
                  "\",state=\"exited\"} 1\n") != std::string::npos);
  CHECK(text.find("mpx_actor_state{actor=\"" + waiting.name() + "\",pid=\"" + std::to_string(waiting.pid()) +
                  "\",state=\"running\"} 0\n") != std::string::npos);
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
    const auto* p = new_pool(s, pools_before);
    return p != nullptr && p->done == 1 && p->failed == 1;
  });
  const mpx::PoolMetrics* counted = new_pool(m, pools_before);
  REQUIRE(counted != nullptr);
  CHECK(counted->retried == 1);  // max_retries 1: run again once, then given up
  CHECK(counted->failed == 1);
  CHECK(counted->done == 1);
  CHECK(counted->worker_restarts == 2);
}

TEST_CASE("semaphores, events, conditions and barriers are counted, in the snapshot and in the Prometheus text",
          "[metrics][sync]") {
  mpx_test::Children children;
  mpx::Semaphore sem(1);
  mpx::Event event;
  mpx::Condition cond;
  mpx::Barrier barrier(2);

  // Each child blocks: its wait is seen by the metrics before the root lets it go.
  REQUIRE(sem.acquire());
  auto& unit_taker = children.start(take_unit, sem);
  auto& event_waiter = children.start(wait_event, event);
  auto& notified = children.start(wait_notified, cond);
  auto& party = children.start(pass_barrier, barrier);
  auto m = metrics_when([&](const mpx::Metrics& s) {
    const auto* se = by_id(s.semaphores, sem.id());
    const auto* ev = by_id(s.events, event.id());
    const auto* co = by_id(s.conditions, cond.id());
    const auto* ba = by_id(s.barriers, barrier.id());
    return se && ev && co && ba && se->waiters == 1 && ev->waiters == 1 && co->waiters == 1 && ba->waiting == 1;
  });
  const auto* waiting_sem = by_id(m.semaphores, sem.id());
  REQUIRE(waiting_sem != nullptr);
  CHECK(waiting_sem->value == 0);
  CHECK(waiting_sem->acquisitions == 1);
  CHECK(waiting_sem->waits == 1);
  CHECK(waiting_sem->waiters == 1);
  const auto* waiting_event = by_id(m.events, event.id());
  REQUIRE(waiting_event != nullptr);
  CHECK_FALSE(waiting_event->set);
  CHECK(waiting_event->waiters == 1);
  const auto* waiting_cond = by_id(m.conditions, cond.id());
  REQUIRE(waiting_cond != nullptr);
  CHECK(waiting_cond->waiters == 1);
  CHECK(waiting_cond->waits == 1);
  const auto* waiting_barrier = by_id(m.barriers, barrier.id());
  REQUIRE(waiting_barrier != nullptr);
  CHECK(waiting_barrier->parties == 2);
  CHECK(waiting_barrier->waiting == 1);
  CHECK(waiting_barrier->passes == 0);

  sem.release();
  event.set();
  cond.acquire();
  cond.notify();
  cond.release();
  CHECK(barrier.wait(60s) <= 1);
  for (auto* child : {&unit_taker, &event_waiter, &notified, &party}) {
    REQUIRE(child->join(60s));
    CHECK(child->exitcode() == 0);
  }
  barrier.abort();

  m = mpx::metrics();
  const auto* se = by_id(m.semaphores, sem.id());
  REQUIRE(se != nullptr);
  CHECK(se->value == 1);
  CHECK(se->acquisitions == 2);
  CHECK(se->waiters == 0);
  const auto* ev = by_id(m.events, event.id());
  REQUIRE(ev != nullptr);
  CHECK(ev->set);
  CHECK(ev->sets == 1);
  CHECK(ev->waits == 1);
  CHECK(ev->waiters == 0);
  const auto* co = by_id(m.conditions, cond.id());
  REQUIRE(co != nullptr);
  CHECK(co->notified == 1);
  CHECK(co->waiters == 0);
  CHECK(by_id(m.locks, co->lock) != nullptr);  // its RLock, counted as a lock
  const auto* ba = by_id(m.barriers, barrier.id());
  REQUIRE(ba != nullptr);
  CHECK(ba->passes == 1);
  CHECK(ba->breaks == 1);
  CHECK(ba->broken);
  CHECK(ba->waiting == 0);

  const auto samples = scrape(server_endpoint());
  const auto labels = [](const char* type, std::uint64_t id) {
    return std::string("{") + type + "=\"" + std::to_string(id) + "\",id=\"" + std::to_string(id) + "\"}";
  };
  CHECK(value_of(samples, "mpx_semaphore_value" + labels("semaphore", sem.id())) == 1);
  CHECK(value_of(samples, "mpx_semaphore_acquisitions_total" + labels("semaphore", sem.id())) == 2);
  CHECK(value_of(samples, "mpx_semaphore_waits_total" + labels("semaphore", sem.id())) == 1);
  CHECK(value_of(samples, "mpx_semaphore_waiters" + labels("semaphore", sem.id())) == 0);
  CHECK(value_of(samples, "mpx_event_set" + labels("event", event.id())) == 1);
  CHECK(value_of(samples, "mpx_event_sets_total" + labels("event", event.id())) == 1);
  CHECK(value_of(samples, "mpx_event_waits_total" + labels("event", event.id())) == 1);
  CHECK(value_of(samples, "mpx_event_waiters" + labels("event", event.id())) == 0);
  CHECK(value_of(samples, "mpx_condition_waits_total" + labels("condition", cond.id())) == 1);
  CHECK(value_of(samples, "mpx_condition_notified_total" + labels("condition", cond.id())) == 1);
  CHECK(value_of(samples, "mpx_condition_waiters" + labels("condition", cond.id())) == 0);
  CHECK(value_of(samples, "mpx_barrier_parties" + labels("barrier", barrier.id())) == 2);
  CHECK(value_of(samples, "mpx_barrier_waiting" + labels("barrier", barrier.id())) == 0);
  CHECK(value_of(samples, "mpx_barrier_passes_total" + labels("barrier", barrier.id())) == 1);
  CHECK(value_of(samples, "mpx_barrier_breaks_total" + labels("barrier", barrier.id())) == 1);
  CHECK(value_of(samples, "mpx_barrier_broken" + labels("barrier", barrier.id())) == 1);
}

TEST_CASE("a pool's tasks that raised are counted as failed, not done", "[metrics]") {
  std::set<std::uint64_t> pools_before;
  for (const auto& p : mpx::metrics().pools) pools_before.insert(p.id);
  mpx::Pool pool(2);
  std::vector<mpx::AsyncResult<int>> results;
  for (int x = 0; x < 6; ++x) results.push_back(pool.apply_async(raises, x));  // 1, 3 and 5 raise
  int raised = 0;
  for (auto& r : results) {
    try {
      (void)r.get(60s);
    } catch (const mpx::RemoteError&) {
      ++raised;
    }
  }
  REQUIRE(raised == 3);
  const auto m = metrics_when([&](const mpx::Metrics& s) {
    const auto* p = new_pool(s, pools_before);
    return p != nullptr && p->done + p->failed == 6;
  });
  const mpx::PoolMetrics* counted = new_pool(m, pools_before);
  REQUIRE(counted != nullptr);
  CHECK(counted->done == 3);
  CHECK(counted->failed == 3);
  CHECK(counted->retried == 0);
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

TEST_CASE("per-kind handling time is a Prometheus histogram: buckets by le, monotonic, +Inf equal to the count",
          "[metrics][http]") {
  mpx::Queue<int> q;  // at least one queue_create handled
  CHECK(mpx::metrics_text().find("# TYPE mpx_coordinator_kind_latency_seconds histogram\n") != std::string::npos);
  const auto samples = scrape(server_endpoint());
  const std::string bucket = "mpx_coordinator_kind_latency_seconds_bucket{kind=\"queue_create\",le=\"";
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
  for (const auto& [key, value] : samples) {
    if (!key.starts_with(bucket)) continue;
    const std::string le = key.substr(bucket.size(), key.size() - bucket.size() - 2);  // without the closing "}
    buckets.emplace_back(le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le), value);
  }
  REQUIRE(buckets.size() == mpx::kind_latency_bounds.size() + 1);
  std::sort(buckets.begin(), buckets.end());
  for (std::size_t i = 1; i < buckets.size(); ++i) {
    INFO("bucket le=" << buckets[i].first);
    CHECK(buckets[i].second >= buckets[i - 1].second);
  }
  CHECK(std::isinf(buckets.back().first));
  const double count = value_of(samples, "mpx_coordinator_kind_latency_seconds_count{kind=\"queue_create\"}");
  CHECK(count >= 1);
  CHECK(buckets.back().second == count);
  CHECK(value_of(samples, "mpx_coordinator_kind_latency_seconds_sum{kind=\"queue_create\"}") >= 0);
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

// mpx-run --metrics on a topology file written into a fresh directory (its actors log "LABEL PID" lines to dir/log);
// its stdout and stderr go to dir/out. Killed at the end of the test if it is still running.
struct MpxRun {
  fs::path dir;
  pid_t pid = 0;
  std::string endpoint;

  explicit MpxRun(const std::string& topology) {
    char dir_template[] = "/tmp/mpx-metrics-test-XXXXXX";
    dir = ::mkdtemp(dir_template);
    ::setenv("TOPOLOGY_TEST_LOG", (dir / "log").c_str(), 1);
    std::ofstream(dir / "t.toml") << topology;
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
    const int spawned = ::posix_spawn(&pid, MPX_RUN_PATH, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::unsetenv("TOPOLOGY_TEST_LOG");
    if (inherited) ::setenv("MPX_METRICS", own_metrics.c_str(), 1);
    REQUIRE(spawned == 0);
    wait_until([&] {
      static const std::regex announced(R"(mpx-run: metrics at http://(\S+)/metrics)");
      std::smatch m;
      const std::string out = read_text(dir / "out");
      if (!std::regex_search(out, m, announced)) return false;
      endpoint = m[1].str();
      return true;
    }, "mpx-run announces its metrics address");
  }
  ~MpxRun() {
    if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // The actors started so far, by label: the last pid each label logged.
  std::map<std::string, pid_t> started() const {
    std::ifstream in(dir / "log");
    std::map<std::string, pid_t> pids;
    std::string label;
    pid_t logged = 0;
    while (in >> label >> logged) pids[label] = logged;
    return pids;
  }

  // Ends the run with SIGTERM and waits for it; returns its wait status.
  int stop() {
    REQUIRE(::kill(pid, SIGTERM) == 0);
    int status = 0;
    wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, "mpx-run exits");
    pid = 0;
    return status;
  }
};

std::string actor_labels(const std::string& name, pid_t pid) {
  return "{actor=\"" + name + "\",pid=\"" + std::to_string(pid) + "\"}";
}

std::string state_key(const std::string& name, pid_t pid, const std::string& state) {
  return "mpx_actor_state{actor=\"" + name + "\",pid=\"" + std::to_string(pid) + "\",state=\"" + state + "\"}";
}

}  // namespace

TEST_CASE("mpx-run --metrics serves a topology's names, an actor's restart, and stops with the run", "[metrics][run]") {
  // "later" starts once "waiter" is ready: its line in the log says that the supervisor saw "waiter" ready.
  MpxRun run("[objects.jobs]\ntype = \"queue\"\n\n[[actors]]\nname = \"waiter\"\nexec = [\"" +
             std::string(TOPOLOGY_ACTOR_PATH) + "\", \"wait\", \"waiter\"]\nrestart = \"permanent\"\n\n" +
             "[[actors]]\nname = \"later\"\nexec = [\"" + TOPOLOGY_ACTOR_PATH +
             "\", \"wait\", \"later\"]\nafter = [\"waiter\"]\n");
  // Killed before it is ready, "waiter" would fail the start instead of being restarted.
  wait_until([&] { return run.started().count("later") == 1; }, "both actors started");
  const pid_t first = run.started().at("waiter");
  const std::string first_labels = actor_labels("waiter", first);
  std::map<std::string, double> samples;
  wait_until([&] {
    samples = scrape(run.endpoint);
    return samples.count("mpx_actor_up" + first_labels) == 1;
  }, "the actor is up in a scrape");
  CHECK(sample_starting(samples, "mpx_queue_depth{queue=\"jobs\",id=\"") == 0.0);
  CHECK(value_of(samples, "mpx_actor_restarts_total" + first_labels) == 0);

  // Killed: the supervisor starts another "waiter", which counts one restart; the first shows as exited.
  REQUIRE(::kill(first, SIGKILL) == 0);
  wait_until([&] {
    samples = scrape(run.endpoint);
    for (const auto& [key, value] : samples) {
      if (key.starts_with("mpx_actor_restarts_total{actor=\"waiter\"") && value == 1) return true;
    }
    return false;
  }, "the restarted actor is counted");
  CHECK(value_of(samples, "mpx_actor_up" + first_labels) == 0);

  // A SIGTERM ends the run: the server stops with it, and the exit is clean.
  const int status = run.stop();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const auto colon = run.endpoint.rfind(':');
  httplib::Client client(run.endpoint.substr(0, colon), std::stoi(run.endpoint.substr(colon + 1)));
  client.set_connection_timeout(5, 0);
  CHECK_FALSE(client.Get("/metrics"));
}

TEST_CASE("an actor's state is a Prometheus state set: running, failed when killed, restarting until its replacement "
          "is ready, exited when stopped", "[metrics][run]") {
  // "slow" is ready the first time; its replacement hangs before mpx::init, so it stays "restarting".
  MpxRun run("[[actors]]\nname = \"slow\"\nexec = [\"" + std::string(TOPOLOGY_ACTOR_PATH) +
             "\", \"late\", \"slow\"]\nrestart = \"permanent\"\nready_timeout = 120\n");
  wait_until([&] { return run.started().count("slow") == 1; }, "the actor started");
  const pid_t first = run.started().at("slow");
  std::map<std::string, double> samples;
  wait_until([&] {
    samples = scrape(run.endpoint);
    auto it = samples.find(state_key("slow", first, "running"));
    return it != samples.end() && it->second == 1;
  }, "the actor is running in a scrape");
  for (const auto state : mpx::actor_states) {
    CHECK(value_of(samples, state_key("slow", first, std::string(state))) == (state == "running" ? 1 : 0));
  }

  REQUIRE(::kill(first, SIGKILL) == 0);
  pid_t second = 0;
  wait_until([&] {
    const auto pids = run.started();
    second = pids.count("slow") ? pids.at("slow") : 0;
    if (second == first) return false;
    samples = scrape(run.endpoint);
    auto it = samples.find(state_key("slow", second, "restarting"));
    auto up = samples.find("mpx_actor_up" + actor_labels("slow", first));  // the coordinator saw the first end
    return it != samples.end() && it->second == 1 && up != samples.end() && up->second == 0;
  }, "the replacement is restarting in a scrape");
  CHECK(value_of(samples, state_key("slow", second, "running")) == 0);
  CHECK(value_of(samples, "mpx_actor_restarts_total" + actor_labels("slow", second)) == 1);
  CHECK(value_of(samples, state_key("slow", first, "failed")) == 1);  // killed by a signal
  CHECK(value_of(samples, state_key("slow", first, "running")) == 0);
  CHECK(value_of(samples, "mpx_actor_up" + actor_labels("slow", first)) == 0);

  const int status = run.stop();
  CHECK(WIFEXITED(status));
}
