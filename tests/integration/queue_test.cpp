// Queues with real processes: FIFO, Full/Empty, timeouts, exact qsize, JoinableQueue accounting and recovery, and the
// shared-memory lane of Queue and SimpleQueue: kills mid-put, mid-get and holding its lock, wrap-around, the remote
// mode, handles under every start method, and its segment's clean-up.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "children.hpp"
#include "runtime/channel.hpp"
#include "shm/ring.hpp"
#include "trace/format.hpp"

using namespace std::chrono_literals;

namespace {

using mpx_test::ScopedEnv;

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

void take_and_die_int(mpx::JoinableQueue<int> q) {
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

// Puts through handles rebuilt from ones the parent closed: close is the closing handle's business only.
void put_on_each(mpx::Queue<int> q, mpx::SimpleQueue<int> sq, mpx::JoinableQueue<int> jq) {
  q.put(1);
  sq.put(2);
  jq.put(3);
}

// Another process's view of the same queue with another item type: a string between two numbers.
void put_number_text_number(mpx::Queue<int> numbers, mpx::Queue<std::string> texts) {
  numbers.put(1);
  texts.put("not a number");
  numbers.put(2);
}

// Enough numbers that the sole consumer of a JoinableQueue is lent a batch, with a string in the middle of it.
void put_numbers_around_text(mpx::JoinableQueue<int> numbers, mpx::JoinableQueue<std::string> texts) {
  for (int i = 0; i < 20; ++i) numbers.put(i);
  texts.put("in the middle");
  for (int i = 20; i < 40; ++i) numbers.put(i);
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

// Python's Queue.get and put on a closed queue raise ValueError at once (they never block); other handles, in this
// process or in a child, are still open.
TEST_CASE("get and put on a closed Queue, SimpleQueue or JoinableQueue raise ValueError in the closing process",
          "[queue][close]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Queue<int> q;
  mpx::SimpleQueue<int> sq;
  mpx::JoinableQueue<int> jq;
  auto q_open = q;
  auto sq_open = sq;
  auto jq_open = jq;
  q.close();
  sq.close();
  jq.close();
  const auto begin = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(q.get(), Catch::Contains("Queue " + std::to_string(q.id()) + " is closed"));
  CHECK_THROWS_AS(q.get(true, 30s), mpx::ValueError);
  CHECK_THROWS_AS(q.get_nowait(), mpx::ValueError);
  CHECK_THROWS_AS(q.put(1), mpx::ValueError);
  CHECK_THROWS_AS(q.put_nowait(1), mpx::ValueError);
  CHECK_THROWS_AS(sq.get(), mpx::ValueError);
  CHECK_THROWS_AS(sq.put(1), mpx::ValueError);
  CHECK_THROWS_AS(jq.get(), mpx::ValueError);
  CHECK_THROWS_AS(jq.get(true, 30s), mpx::ValueError);
  CHECK_THROWS_AS(jq.put(1), mpx::ValueError);
  CHECK(std::chrono::steady_clock::now() - begin < 20s);  // raised, not waited out

  mpx_test::Children children;
  children.start(mpx::ProcessOptions{"", std::nullopt, method}, put_on_each, q, sq, jq);
  CHECK(q_open.get(true, 30s) == 1);
  CHECK(sq_open.get() == 2);
  CHECK(jq_open.get(true, 30s) == 3);
  jq_open.task_done();
  children.join_all();
  CHECK_THROWS_AS(q.get_nowait(), mpx::ValueError);  // the items went to the open handles; this one stays closed
}

// A get whose item is not its T raises SerializationError naming the queue, the type it wanted and what the item
// holds, and the item is not lost: it stays at the head, for a retry or a getter of the right type.
TEST_CASE("an item of another type stays at the head of the queue; the error names the queue and both types",
          "[queue][decode]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx_test::Children children;
  SECTION("a Queue (its lane)") {
    mpx::Queue<int> numbers;
    mpx::Queue<std::string> texts(mpx::adopt, numbers.ref());
    mpx::Queue<mpx::Object> anything(mpx::adopt, numbers.ref());
    children.start(mpx::ProcessOptions{"", std::nullopt, method}, put_number_text_number, numbers, texts);
    CHECK(numbers.get(true, 30s) == 1);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (numbers.qsize() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    try {
      (void)numbers.get(true, 30s);
      FAIL("an int was decoded from a string");
    } catch (const mpx::SerializationError& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains("Queue " + std::to_string(numbers.id())));
      CHECK_THAT(what, Catch::Contains("not a int"));
      CHECK_THAT(what, Catch::Contains("str 'not a number'"));
    }
    CHECK(numbers.qsize() == 2);
    CHECK_THROWS_AS(numbers.get(true, 30s), mpx::SerializationError);  // a retry finds it still there
    CHECK(anything.get(true, 30s).as_string() == "not a number");
    CHECK(numbers.get(true, 30s) == 2);
    children.join_all();
  }
  SECTION("a JoinableQueue (the coordinator, with a batch lent)") {
    mpx::JoinableQueue<int> numbers;
    mpx::JoinableQueue<std::string> texts(mpx::adopt, numbers.ref());
    children.start(mpx::ProcessOptions{"", std::nullopt, method}, put_numbers_around_text, numbers, texts);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (numbers.qsize() < 41 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    REQUIRE(numbers.qsize() == 41);
    for (int i = 0; i < 20; ++i) {
      REQUIRE(numbers.get(true, 30s) == i);
      numbers.task_done();
    }
    CHECK_THROWS_WITH(numbers.get(true, 30s), Catch::Contains("str 'in the middle'"));  // from the lent batch
    CHECK_THROWS_WITH(numbers.get(true, 30s), Catch::Contains("str 'in the middle'"));  // from the coordinator
    CHECK(numbers.qsize() == 21);
    CHECK_FALSE(numbers.join(0.05s));
    CHECK(texts.get(true, 30s) == "in the middle");
    texts.task_done();
    for (int i = 20; i < 40; ++i) {
      REQUIRE(numbers.get(true, 30s) == i);
      numbers.task_done();
    }
    CHECK(numbers.join(30s));
    children.join_all();
  }
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

// ---- the lane --------------------------------------------------------------------------------------------------

namespace {

// Polls `done` until it holds or 60 s pass (the poll interval decides nothing but how soon it is seen).
template <class Pred>
bool eventually(Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// The ring segment of queue `id` made in this root session: mpx-<session id>-<creator>-q<id>, the session id starting
// with this process's pid. Empty if there is none.
std::string ring_name(std::uint64_t id, pid_t root = ::getpid()) {
  const std::string prefix = "mpx-" + std::to_string(root) + "-";
  const std::string suffix = "-q" + std::to_string(id);
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && name.ends_with(suffix)) return name;
  }
  return {};
}

// An item that says who put it and when: "<index>:<padding>".
std::string numbered(std::int64_t index, std::size_t padding) {
  return std::to_string(index) + ":" + std::string(padding, 'p');
}
std::int64_t index_of(const std::string& item) { return std::stoll(item.substr(0, item.find(':'))); }

void put_forever(mpx::Queue<std::string> q, mpx::Value<std::int64_t> completed) {
  for (std::int64_t i = 0;; ++i) {
    q.put(numbered(i, 4000));
    completed.store(i + 1);
  }
}

void get_forever(mpx::Queue<std::string> q, mpx::Value<std::int64_t> completed) {
  for (;;) {
    (void)q.get();
    completed.fetch_add(1);
  }
}

// Takes the ring's lock as a put would, commits one item "x" without counting it, leaves junk past the tail, and dies
// holding the lock: the next holder must recover the lock, recount, and keep the committed item.
void die_holding_the_ring_lock(std::string name) {
  mpx::runtime::ensure_known();  // the coordinator watches this process, so it sees it die
  auto opened = mpx::shm::open(name);
  auto* h = reinterpret_cast<mpx::shm::RingHeader*>(opened.mapping->base());
  if (mpx::shm::lock(&h->lock, std::nullopt, false) != mpx::shm::Locked::yes) ::_exit(3);
  std::byte* data = opened.mapping->base() + mpx::shm::ring_data_offset;
  const std::uint64_t head = h->position >> 32, used = h->position & 0xffffffffu;
  const std::uint64_t tail = (head + used) % h->capacity;
  const std::string record("\x02\x00\x00\x00\xa1x", 6);  // u32 length 2, then msgpack "x"
  for (std::size_t i = 0; i < record.size(); ++i) data[(tail + i) % h->capacity] = std::byte(record[i]);
  for (std::size_t i = 0; i < 32; ++i) data[(tail + record.size() + i) % h->capacity] = std::byte{0x7f};
  __atomic_store_n(&h->position, (head << 32) | (used + record.size()), __ATOMIC_RELEASE);
  ::raise(SIGKILL);
}

void produce_numbered(mpx::Queue<std::string> q, int producer, int count) {
  for (int i = 0; i < count; ++i) {
    q.put(std::to_string(producer * 1'000'000 + i) + ":" + std::string(static_cast<std::size_t>(i % 300), 'z'));
  }
}

void consume_numbered(mpx::Queue<std::string> in, mpx::Queue<std::vector<int>> out, int count) {
  std::vector<int> got;
  for (int i = 0; i < count; ++i) got.push_back(static_cast<int>(index_of(in.get())));
  out.put(got);
}

// Items whose size varies from 0 to ~1.5 KB, each filled with a byte that depends on its index.
std::string mixed(int i) {
  return std::string(static_cast<std::size_t>((i * 397) % 1500), static_cast<char>('a' + i % 26));
}

void put_mixed_sizes(mpx::Queue<std::string> q, int count) {
  for (int i = 0; i < count; ++i) q.put(mixed(i));
}

void echo(mpx::Queue<std::string> in, mpx::Queue<std::string> out) {
  for (;;) {
    auto item = in.get();
    if (item == "stop") return;
    out.put("echo " + item);
  }
}

void fill(mpx::Queue<int> q, int count) {
  for (int i = 0; i < count; ++i) q.put(i);
}

void put_later(mpx::Queue<int> q, int value) {
  std::this_thread::sleep_for(100ms);
  q.put(value);
}

// As a process on another host: every queue through the coordinator, which does the ring operations for it.
void remote_worker(mpx::Queue<std::string> to_parent, mpx::Queue<int> from_parent, int count) {
  if (std::getenv("MPX_SHM_REMOTE") == nullptr) ::_exit(4);
  for (int i = 0; i < count; ++i) {
    const int got = from_parent.get(true, 60s);
    to_parent.put("remote:" + std::to_string(got));
  }
}

// Its puts give up after 30 s: a producer left asleep while there is room ends with Full, never hangs.
void produce_bounded(mpx::Queue<int> q, int producer, int count) {
  for (int i = 0; i < count; ++i) q.put(producer * 1'000'000 + i, true, 30s);
}

// How many threads a ring's header counts asleep in `word` (getters_waiting or putters_waiting): its low 16 bits.
std::uint32_t sleeping(const std::uint32_t& word) { return __atomic_load_n(&word, __ATOMIC_ACQUIRE) & 0xffffu; }

}  // namespace

TEST_CASE("lane: a Queue and a SimpleQueue made on the coordinator's host have a ring segment", "[queue][lane]") {
  mpx::Queue<int> q;
  mpx::SimpleQueue<int> simple;
  mpx::JoinableQueue<int> joinable;
  CHECK_FALSE(ring_name(q.id()).empty());
  CHECK_FALSE(ring_name(simple.id()).empty());
  CHECK_FALSE(ring_name(joinable.id()).empty());  // for its puts; its gets go through the coordinator
  simple.put(5);
  CHECK_FALSE(simple.empty());
  CHECK(simple.get() == 5);
  CHECK(simple.empty());
}

// How many items a ring holds, read from its header as the lane's getters would.
std::uint64_t ring_count(const std::string& name) {
  auto opened = mpx::shm::open(name);
  const auto* h = reinterpret_cast<const mpx::shm::RingHeader*>(opened.mapping->base());
  return __atomic_load_n(&h->count, __ATOMIC_ACQUIRE);
}

TEST_CASE("lane: a JoinableQueue's puts go into its ring, its gets through the coordinator, which keeps every promise",
          "[queue][lane]") {
  mpx::JoinableQueue<int> q;
  const std::string name = ring_name(q.id());
  REQUIRE_FALSE(name.empty());
  mpx::Process producer(fill, mpx::Queue<int>(q), 5);
  producer.start();
  producer.join();
  CHECK(ring_count(name) == 5);  // a put that returned is in the ring, which outlives its producer
  CHECK(q.qsize() == 5);
  CHECK_FALSE(q.join(0.01s));
  // Got through the coordinator, which records the taker: a taker that dies before task_done gives its item back.
  mpx::Process dies(take_and_die_int, q);
  dies.start();
  dies.join();
  REQUIRE(dies.exitcode() == -SIGKILL);
  CHECK(eventually([&] { return q.qsize() == 5; }));  // once the coordinator has seen it die
  for (int expected = 0; expected < 5; ++expected) {
    CHECK(q.get(true, 30s) == expected);  // the dead taker's 0 first, back at the head
    q.task_done();
  }
  CHECK(q.join(10s));
  CHECK_THROWS_AS(q.task_done(), mpx::ValueError);
  q.put(7);  // from this process, through the ring too
  CHECK(ring_count(name) == 1);
  CHECK_FALSE(q.join(0.01s));
  q.task_done();  // before its get, as Python allows: join no longer waits for it
  CHECK(q.join(10s));
  CHECK(q.get() == 7);
  CHECK_THROWS_AS(q.task_done(), mpx::ValueError);
}

TEST_CASE("lane: a JoinableQueue's taker killed with a lent batch gives it all back in order; a bounded one blocks",
          "[queue][lane]") {
  mpx::JoinableQueue<int> q;
  mpx::Process producer(fill, mpx::Queue<int>(q), 100);
  producer.start();
  producer.join();
  mpx::Process dies(take_and_die_int, q);  // the sole consumer: lent a batch with its first item
  dies.start();
  dies.join();
  REQUIRE(dies.exitcode() == -SIGKILL);
  CHECK(eventually([&] { return q.qsize() == 100; }));
  for (int expected = 0; expected < 100; ++expected) {
    REQUIRE(q.get(true, 30s) == expected);
    q.task_done();
  }
  CHECK(q.join(10s));

  // Its producer sleeps on the ring for room that only the coordinator's takes (the gets here) make.
  mpx::JoinableQueue<int> bounded(2);
  mpx::Process blocked(produce_bounded, mpx::Queue<int>(bounded), 0, 50);
  blocked.start();
  for (int expected = 0; expected < 50; ++expected) {
    REQUIRE(bounded.get(true, 30s) == expected);
    CHECK(bounded.qsize() <= 2);
    bounded.task_done();
  }
  blocked.join();
  CHECK(blocked.exitcode() == 0);
  CHECK(bounded.join(10s));
  CHECK_THROWS_AS(bounded.task_done(), mpx::ValueError);
}

TEST_CASE("lane: a producer SIGKILLed in a put loop loses nothing it completed and duplicates nothing",
          "[queue][lane]") {
  mpx::Queue<std::string> q;
  for (int round = 0; round < 3; ++round) {
    mpx::Value<std::int64_t> completed(0);
    mpx::Process p(put_forever, q, completed);
    p.start();
    REQUIRE(eventually([&] { return completed.value() >= 50 + round * 200; }));
    p.kill();
    p.join();
    CHECK(p.exitcode() == -SIGKILL);
    const std::int64_t done = completed.value();
    std::int64_t next = 0;
    for (;;) {
      std::string item;
      try {
        item = q.get_nowait();
      } catch (const mpx::Empty&) {
        break;
      }
      CHECK(index_of(item) == next);  // in order, none twice
      CHECK(item.size() == numbered(next, 4000).size());
      ++next;
    }
    // Every completed put is there; the one it was in may be too (it committed before the kill) or not.
    CHECK((next == done || next == done + 1));
    CHECK(q.qsize() == 0);
  }
  q.put("still works");
  CHECK(q.qsize() == 1);
  CHECK(q.get(true, 10s) == "still works");
}

TEST_CASE("lane: a consumer SIGKILLed in a get loop duplicates nothing and leaves the rest in order", "[queue][lane]") {
  constexpr int total = 100'000;
  mpx::Queue<std::string> q;
  for (int i = 0; i < total; ++i) q.put(numbered(i, 200));
  CHECK(q.qsize() == static_cast<std::size_t>(total));
  mpx::Value<std::int64_t> completed(0);
  mpx::Process p(get_forever, q, completed);
  p.start();
  REQUIRE(eventually([&] { return completed.value() >= 1000; }));
  p.kill();
  p.join();
  CHECK(p.exitcode() == -SIGKILL);
  const std::int64_t done = completed.value();
  const std::size_t left = q.qsize();
  // The item being got when it died may be gone with it (as in Python); nothing else is.
  const std::int64_t first = total - static_cast<std::int64_t>(left);
  CHECK((first == done || first == done + 1));
  for (std::int64_t i = first; i < total; ++i) {
    const auto item = q.get_nowait();
    REQUIRE(index_of(item) == i);
  }
  CHECK_THROWS_AS(q.get_nowait(), mpx::Empty);
  q.put("still works");
  CHECK(q.get(true, 10s) == "still works");
}

TEST_CASE("lane: a process that dies holding the ring's lock is recovered; the ring is recounted", "[queue][lane]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::spawn);
  mpx::Queue<std::string> q;
  q.put("a");
  q.put("b");
  const std::string name = ring_name(q.id());
  REQUIRE_FALSE(name.empty());
  mpx::Process p(mpx::ProcessOptions{"", std::nullopt, method}, die_holding_the_ring_lock, name);
  p.start();
  p.join();
  REQUIRE(p.exitcode() == -SIGKILL);
  q.put("c", true, 30s);  // waits for the coordinator to recover the lock, then recounts
  CHECK(q.qsize() == 4);
  CHECK(q.get_nowait() == "a");
  CHECK(q.get_nowait() == "b");
  CHECK(q.get_nowait() == "x");  // committed before the death: it was put
  CHECK(q.get_nowait() == "c");
  CHECK_THROWS_AS(q.get_nowait(), mpx::Empty);
  CHECK(q.qsize() == 0);
}

TEST_CASE("lane: get and put time out; a blocked get is woken by another process's put", "[queue][lane]") {
  mpx::Queue<int> q(2);
  auto begin = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(q.get(true, 0.1s), mpx::Empty);
  CHECK(std::chrono::steady_clock::now() - begin >= 90ms);
  q.put(1);
  q.put(2);
  begin = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(q.put(3, true, 0.1s), mpx::Full);
  CHECK(std::chrono::steady_clock::now() - begin >= 90ms);
  CHECK(q.get() == 1);
  CHECK(q.get() == 2);
  mpx::Process p(put_later, q, 42);
  p.start();
  CHECK(q.get(true, 30s) == 42);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("lane: maxsize across processes: Full, Empty, full(), exact qsize", "[queue][lane]") {
  mpx::Queue<int> q(3);
  mpx::Process p(fill, q, 3);
  p.start();
  p.join();
  CHECK(p.exitcode() == 0);
  CHECK(q.qsize() == 3);
  CHECK(q.full());
  CHECK(q.maxsize() == 3);
  CHECK_THROWS_AS(q.put_nowait(9), mpx::Full);
  CHECK(q.get_nowait() == 0);
  CHECK_FALSE(q.full());
  q.put_nowait(3);
  for (int i = 1; i <= 3; ++i) CHECK(q.get_nowait() == i);
  CHECK(q.empty());
  CHECK_THROWS_AS(q.get_nowait(), mpx::Empty);

  // A blocked put in another process is let in when a get makes room.
  mpx::Process more(fill, q, 5);
  more.start();
  for (int i = 0; i < 5; ++i) CHECK(q.get(true, 30s) == i);
  more.join();
  CHECK(more.exitcode() == 0);
}

TEST_CASE("lane: a small ring wraps around with mixed item sizes, and fills even when unbounded", "[queue][lane]") {
  ScopedEnv small("MPX_QUEUE_RING_BYTES", "4096");
  mpx::Queue<std::string> q;
  constexpr int count = 3000;
  mpx_test::Children children;  // killed if a REQUIRE ends the test early: it would wait for room forever
  children.start(put_mixed_sizes, q, count);
  for (int i = 0; i < count; ++i) REQUIRE(q.get(true, 30s) == mixed(i));
  children.join_all();
  CHECK(q.empty());

  // Unbounded, but its ring holds at most 4096 bytes: a put then waits for room, as a bounded queue's does.
  const std::string kilobyte(1000, 'k');
  int put = 0;
  for (;; ++put) {
    try {
      q.put_nowait(kilobyte);
    } catch (const mpx::Full&) {
      break;
    }
  }
  CHECK(put == 4);
  CHECK(q.qsize() == 4);
  CHECK_THROWS_AS(q.put(kilobyte, true, 0.05s), mpx::Full);
  CHECK_THROWS_AS(q.put(std::string(5000, 'h')), mpx::ValueError);  // could never fit
  for (int i = 0; i < put; ++i) CHECK(q.get_nowait() == kilobyte);
}

TEST_CASE("lane: 8 producers, 8 consumers: FIFO per producer, nothing lost, nothing duplicated", "[queue][lane]") {
  constexpr int producers = 8, per_producer = 5'000, consumers = 8;
  mpx::Queue<std::string> q;
  mpx::Queue<std::vector<int>> results;
  mpx_test::Children children;
  for (int c = 0; c < consumers; ++c) {
    children.start(consume_numbered, q, results, producers * per_producer / consumers);
  }
  for (int p = 0; p < producers; ++p) children.start(produce_numbered, q, p, per_producer);
  std::set<int> seen;
  std::size_t total = 0;
  for (int c = 0; c < consumers; ++c) {
    const auto batch = results.get(true, 120s);
    std::vector<int> last(producers, -1);
    for (int v : batch) {
      const int producer = v / 1'000'000, index = v % 1'000'000;
      CHECK(index > last[static_cast<std::size_t>(producer)]);
      last[static_cast<std::size_t>(producer)] = index;
      seen.insert(v);
    }
    total += batch.size();
  }
  children.join_all();
  CHECK(total == static_cast<std::size_t>(producers * per_producer));
  CHECK(seen.size() == total);
  CHECK(q.qsize() == 0);
}

// A putter woken for room and SIGKILLed before it used the wake-up must not take it along: the other putters would
// sleep on while the consumer drains the ring and then waits for them. And a putter killed asleep must not stay
// counted as a sleeper.
TEST_CASE("lane: a producer SIGKILLed among putters waiting for room strands none of the others", "[queue][lane]") {
  constexpr int trials = 200, producers = 4, per_producer = 100;
  mpx::Queue<int> q(64);
  const std::string name = ring_name(q.id());
  REQUIRE_FALSE(name.empty());
  const auto opened = mpx::shm::open(name);
  const auto* h = reinterpret_cast<const mpx::shm::RingHeader*>(opened.mapping->base());
  for (int trial = 0; trial < trials; ++trial) {
    INFO("trial " << trial);
    mpx_test::Children children;
    for (int p = 0; p < producers; ++p) children.start(produce_bounded, q, p, per_producer);
    const int kill_after = 10 + trial % 150;  // a different moment of the stream each trial
    std::vector<int> next(producers, 0);
    for (int got = 0, from_survivors = 0; from_survivors < (producers - 1) * per_producer; ++got) {
      if (got == kill_after) children.procs[0].kill();
      int item = 0;
      try {
        item = q.get(true, 10s);
      } catch (const mpx::Empty&) {
        FAIL("stalled after " << got << " items: items_seq " << h->items_seq << ", space_seq " << h->space_seq
                              << ", getters_waiting " << h->getters_waiting << ", putters_waiting "
                              << h->putters_waiting << ", qsize " << q.qsize());
      }
      const auto producer = static_cast<std::size_t>(item / 1'000'000);
      REQUIRE(item % 1'000'000 == next[producer]);  // FIFO per producer, nothing lost or got twice
      ++next[producer];
      if (producer != 0) ++from_survivors;
    }
    for (int p = 1; p < producers; ++p) {
      REQUIRE(children.procs[static_cast<std::size_t>(p)].join(60s));
      CHECK(children.procs[static_cast<std::size_t>(p)].exitcode() == 0);
    }
    children.procs[0].join();
    for (;;) {  // what the killed one put before it died
      int item = 0;
      try {
        item = q.get_nowait();
      } catch (const mpx::Empty&) {
        break;
      }
      REQUIRE(item == next[0]++);
    }
  }
  // Nothing sleeps now: the counts of the putters killed asleep are gone too.
  CHECK(eventually([&] { return sleeping(h->getters_waiting) == 0 && sleeping(h->putters_waiting) == 0; }));
  CHECK(q.qsize() == 0);
}

TEST_CASE("lane: handles work in children under fork, forkserver and spawn", "[queue][lane]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Queue<std::string> in;
  mpx::Queue<std::string> out(1);
  in.put("one");  // mapped here before the fork: the child maps it again
  mpx::Process p(mpx::ProcessOptions{"", std::nullopt, method}, echo, in, out);
  p.start();
  CHECK(out.get(true, 30s) == "echo one");
  in.put("two");
  in.put("three");
  CHECK(out.get(true, 30s) == "echo two");
  CHECK(out.get(true, 30s) == "echo three");
  in.put("stop");
  p.join();
  CHECK(p.exitcode() == 0);
  CHECK(in.empty());
}

TEST_CASE("lane: a process without it (remote mode) shares the same items through the coordinator", "[queue][lane]") {
  constexpr int count = 2000;
  mpx::Queue<std::string> to_parent;
  mpx::Queue<int> from_parent(2);  // small: the remote get waits in the coordinator, woken by a lane put's poke
  from_parent.put(-1);
  mpx::Process p(mpx::ProcessOptions{"", std::nullopt, mpx::StartMethod::spawn}, remote_worker, to_parent,
                 from_parent, count);
  {
    ScopedEnv remote("MPX_SHM_REMOTE", "1");
    p.start();
  }
  std::vector<std::string> local_items;
  for (int i = 0; i < count - 1; ++i) {
    from_parent.put(i, true, 60s);
    to_parent.put("local:" + std::to_string(i));  // this producer's items, interleaved with the remote one's
  }
  int next_remote = -1, next_local = 0;
  for (int i = 0; i < 2 * count - 1; ++i) {
    const auto item = to_parent.get(true, 60s);
    if (item.starts_with("remote:")) {
      CHECK(std::stoi(item.substr(7)) == next_remote++);
    } else {
      CHECK(std::stoi(item.substr(6)) == next_local++);
    }
  }
  CHECK(next_remote == count - 1);
  CHECK(next_local == count - 1);
  p.join();
  CHECK(p.exitcode() == 0);
  CHECK(to_parent.empty());
  CHECK(from_parent.empty());
}

// The helper, run only by name as its own root session: makes a Queue and a SimpleQueue, reports their ring
// segments' names and exits normally.
TEST_CASE("queue session helper", "[.]") {
  const char* fd_text = std::getenv("MPX_QUEUE_HELPER_FD");
  if (fd_text == nullptr) return;
  mpx::Queue<int> q(4);
  mpx::SimpleQueue<int> simple;
  q.put(1);
  simple.put(2);
  const std::string report = ring_name(q.id()) + "\n" + ring_name(simple.id()) + "\n";
  REQUIRE(::write(std::atoi(fd_text), report.data(), report.size()) == static_cast<ssize_t>(report.size()));
}

TEST_CASE("lane: the ring segments are unlinked when the session ends", "[queue][lane]") {
  const auto [pid, names] = mpx_test::spawn_reporting_session("queue session helper", "MPX_QUEUE_HELPER_FD", 2);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE(names.size() == 2);
  const std::string& first = names[0];
  const std::string& second = names[1];
  CHECK(first.starts_with("mpx-" + std::to_string(pid) + "-"));
  CHECK(second.starts_with("mpx-" + std::to_string(pid) + "-"));
  CHECK_FALSE(std::filesystem::exists("/dev/shm/" + first));
  CHECK_FALSE(std::filesystem::exists("/dev/shm/" + second));
}

TEST_CASE("lane: while tracing is on items stay on the ring, in order, and are recorded", "[queue][lane]") {
  if (!mpx::trace::compiled_in()) return;
  const std::string file = (std::filesystem::temp_directory_path() / ("mpx-queue-lane-" + std::to_string(::getpid()) +
                                                                       ".mpxt")).string();
  struct Off {
    std::string file;
    ~Off() {
      mpx::trace::disable();
      std::filesystem::remove(file);
    }
  } off{file};
  mpx::Queue<int> q;
  mpx::trace::enable("file:" + file);
  for (int i = 0; i < 100; ++i) q.put(i);  // on the ring, each recorded by this thread
  std::thread([q]() mutable { CHECK(q.get(true, 30s) == 0); }).join();
  CHECK(q.qsize() == 99);
  mpx::trace::disable();
  for (int i = 100; i < 200; ++i) q.put(i);
  CHECK(q.qsize() == 199);
  for (int i = 1; i < 200; ++i) REQUIRE(q.get_nowait() == i);
  CHECK_THROWS_AS(q.get_nowait(), mpx::Empty);
  std::size_t puts = 0, gets = 0;
  mpx::trace::format::FileReader reader(file);
  while (auto r = reader.next()) {
    if (auto* m = std::get_if<mpx::trace::format::Message>(&*r); m != nullptr && m->lane && m->object_id == q.id()) {
      puts += m->kind_name == "queue_put";
      gets += m->kind_name == "queue_get";
    }
  }
  CHECK(reader.problem().empty());
  CHECK(puts == 100);
  CHECK(gets == 1);  // the other thread's, from its own trace ring
}

TEST_CASE("zero and negative timeouts do not wait: get and put", "[queue][timeout]") {
  mpx::Queue<int> queue(1);
  for (const auto seconds : {-1.0, -0.001, 0.0}) {
    const auto timeout = std::chrono::duration<double>(seconds);
    const auto begin = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(queue.get(true, timeout), mpx::Empty);
    queue.put(1);
    CHECK_THROWS_AS(queue.put(2, true, timeout), mpx::Full);
    CHECK(queue.get(true, timeout) == 1);
    CHECK(std::chrono::steady_clock::now() - begin < 10s);
  }
}
