// Queues with real processes: FIFO, Full/Empty, timeouts, exact qsize, JoinableQueue accounting and recovery.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <set>
#include <thread>

using namespace std::chrono_literals;

namespace {

void produce(mpx::Queue<int> q, int producer, int count) {
  for (int i = 0; i < count; ++i) q.put(producer * 1'000'000 + i);
}

void consume(mpx::Queue<int> in, mpx::Queue<std::vector<int>> out, int count) {
  std::vector<int> got;
  got.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) got.push_back(in.get());
  out.put(got);
}

void put_mixed(mpx::Queue<mpx::Object> q) { q.put(mpx::Object::list({42, nullptr, "hello"})); }

void take_and_die(mpx::JoinableQueue<std::string> q) {
  (void)q.get();
  ::raise(SIGKILL);
}

void take_and_finish(mpx::JoinableQueue<std::string> q, mpx::Queue<std::string> done) {
  for (;;) {
    auto item = q.get();
    done.put(item);
    q.task_done();
  }
}

}  // namespace

TEST_CASE("put and get in one process: FIFO, qsize, empty, full", "[queue]") {
  mpx::Queue<std::string> q(3);
  CHECK(q.empty());
  q.put("a");
  q.put("b");
  q.put_nowait("c");
  CHECK(q.qsize() == 3);
  CHECK(q.full());
  CHECK_THROWS_AS(q.put_nowait("d"), mpx::Full);
  CHECK_THROWS_AS(q.put("d", true, 0.05s), mpx::Full);
  CHECK(q.get() == "a");
  CHECK(q.get_nowait() == "b");
  CHECK(q.get(true, 1s) == "c");
  CHECK_THROWS_AS(q.get_nowait(), mpx::Empty);
  const auto begin = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(q.get(true, 0.1s), mpx::Empty);
  CHECK(std::chrono::steady_clock::now() - begin >= 90ms);
  q.close();
  CHECK_THROWS_AS(q.put("e"), mpx::ValueError);
}

TEST_CASE("a Queue of mpx::Object holds mixed values from a child", "[queue]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Queue<mpx::Object> q;
  mpx::Process p(mpx::ProcessOptions{"", std::nullopt, method}, put_mixed, q);
  p.start();
  CHECK(q.get(true, 30s).repr() == "[42, None, 'hello']");
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("a blocked put is let in when a getter makes room; a blocked get is woken by a put", "[queue]") {
  mpx::Queue<int> q(1);
  q.put(1);
  std::thread getter([q]() mutable {
    std::this_thread::sleep_for(50ms);
    CHECK(q.get() == 1);
  });
  q.put(2, true, 30s);  // blocks until the getter took 1
  getter.join();
  CHECK(q.get() == 2);

  std::thread putter([q]() mutable {
    std::this_thread::sleep_for(50ms);
    q.put(3);
  });
  CHECK(q.get(true, 30s) == 3);
  putter.join();
}

TEST_CASE("4 producers, 2 consumers, 100k items: FIFO per producer, nothing lost, nothing duplicated", "[queue]") {
  constexpr int producers = 4, per_producer = 25'000, consumers = 2;
  mpx::Queue<int> q;
  mpx::Queue<std::vector<int>> results;
  std::vector<mpx::Process> procs;
  for (int c = 0; c < consumers; ++c) {
    procs.emplace_back(consume, q, results, producers * per_producer / consumers);
  }
  for (int p = 0; p < producers; ++p) procs.emplace_back(produce, q, p, per_producer);
  for (auto& p : procs) p.start();
  std::vector<std::vector<int>> got;
  for (int c = 0; c < consumers; ++c) got.push_back(results.get(true, 120s));
  for (auto& p : procs) {
    CHECK(p.join(60s));
    CHECK(p.exitcode() == 0);
  }
  std::set<int> seen;
  std::size_t total = 0;
  for (const auto& batch : got) {
    std::vector<int> last(producers, -1);
    for (int v : batch) {
      const int producer = v / 1'000'000, index = v % 1'000'000;
      CHECK(index > last[static_cast<std::size_t>(producer)]);  // FIFO per producer, as seen by each consumer
      last[static_cast<std::size_t>(producer)] = index;
      seen.insert(v);
    }
    total += batch.size();
  }
  CHECK(total == static_cast<std::size_t>(producers * per_producer));
  CHECK(seen.size() == total);
  CHECK(q.empty());
}

TEST_CASE("qsize is exact under concurrent producers", "[queue]") {
  mpx::Queue<int> q;
  std::vector<mpx::Process> procs;
  for (int p = 0; p < 4; ++p) procs.emplace_back(produce, q, p, 500);
  for (auto& p : procs) p.start();
  for (auto& p : procs) p.join();
  CHECK(q.qsize() == 2000);
}

TEST_CASE("JoinableQueue: task_done accounting, join with timeout, too many task_done", "[queue]") {
  mpx::JoinableQueue<int> q;
  q.put(1);
  q.put(2);
  CHECK_FALSE(q.join(0.05s));
  q.get();
  q.task_done();
  CHECK_FALSE(q.join(0.05s));
  q.get();
  q.task_done();
  CHECK(q.join(1s));
  CHECK_THROWS_AS(q.task_done(), mpx::ValueError);
}

TEST_CASE("JoinableQueue: an item taken by a process that died is put back at the head", "[queue]") {
  mpx::JoinableQueue<std::string> q;
  q.put("first");
  q.put("second");
  mpx::Process dies(take_and_die, q);
  dies.start();
  dies.join();
  CHECK(dies.exitcode() == -SIGKILL);
  mpx::Queue<std::string> done;
  mpx::Process worker(take_and_finish, q, done);
  worker.start();
  CHECK(done.get(true, 30s) == "first");  // the dead process's item, back at the head
  CHECK(done.get(true, 30s) == "second");
  CHECK(q.join(30s));
  worker.kill();
  worker.join();
}
