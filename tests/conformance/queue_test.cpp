// Conformance: the behaviours CPython's own tests check (Lib/test/_test_multiprocessing.py, test_concurrent_futures),
// through mpx's public API only. One TEST_CASE per CPython test, named after it.
//
// This file: Queue, JoinableQueue and SimpleQueue (_TestQueue, TestSimpleQueue). Where Python's test is about one
// queue, it runs here for a typed Queue<int> and for Queue<mpx::Object>, the queue of any value.
#include <catch2/catch.hpp>
#include <mpx/mpx.hpp>

#include <stdexcept>
#include <string>

#include "support.hpp"

using namespace std::chrono_literals;
using conformance::Stopwatch;
using conformance::with;

namespace {

// Python's TIMEOUT1..3 are 0.1 s; a little longer here, so that "it waited" is told apart from "it returned at once"
// on a loaded machine. Bounds are generous: at least most of the timeout, and under 5 s for "at once".
constexpr auto timeout1 = 0.2s, timeout2 = 0.2s, timeout3 = 0.2s;
constexpr double waited_at_least = 0.15, at_once = 5.0;

template <class T>
T item(int v) {
  if constexpr (std::is_same_v<T, mpx::Object>) return mpx::Object(v);
  else return v;
}

template <class T>
int value(const T& v) {
  if constexpr (std::is_same_v<T, mpx::Object>) return static_cast<int>(v.as_int());
  else return v;
}

template <class T>
void get_six(mpx::Queue<T> queue, mpx::Event child_can_start, mpx::Event parent_can_continue) {
  (void)child_can_start.wait();
  for (int i = 0; i < 6; ++i) (void)queue.get();
  parent_can_continue.set();
}

template <class T>
void put_four(mpx::Queue<T> queue, mpx::Event child_can_start, mpx::Event parent_can_continue) {
  (void)child_can_start.wait();
  for (int i = 2; i <= 5; ++i) queue.put(item<T>(i));
  parent_can_continue.set();
}

template <class T>
void put_ten_to_nineteen(mpx::Queue<T> queue) {
  for (int i = 10; i < 20; ++i) queue.put(item<T>(i));
}

template <class T>
void check_put(mpx::StartMethod method) {
  constexpr std::size_t maxsize = 6;
  mpx::Queue<T> queue(maxsize);
  mpx::Event child_can_start, parent_can_continue;
  mpx::Process proc(with(method, true), get_six<T>, queue, child_can_start, parent_can_continue);
  proc.start();

  CHECK(queue.empty());
  CHECK_FALSE(queue.full());

  queue.put(item<T>(1));
  queue.put(item<T>(2), true);
  queue.put(item<T>(3), true, std::nullopt);
  queue.put(item<T>(4), false);
  queue.put(item<T>(5), false, std::nullopt);
  queue.put_nowait(item<T>(6));

  // No "sleep a bit": without a feeder thread the items are in the queue when put returns.
  CHECK_FALSE(queue.empty());
  CHECK(queue.full());

  Stopwatch put;
  CHECK_THROWS_AS(queue.put(item<T>(7), false), mpx::Full);
  CHECK(put.seconds() < at_once);
  put.restart();
  CHECK_THROWS_AS(queue.put(item<T>(7), false, std::nullopt), mpx::Full);
  CHECK(put.seconds() < at_once);
  put.restart();
  CHECK_THROWS_AS(queue.put_nowait(item<T>(7)), mpx::Full);
  CHECK(put.seconds() < at_once);
  put.restart();
  CHECK_THROWS_AS(queue.put(item<T>(7), true, timeout1), mpx::Full);
  CHECK(put.seconds() >= waited_at_least);
  put.restart();
  CHECK_THROWS_AS(queue.put(item<T>(7), false, timeout2), mpx::Full);
  CHECK(put.seconds() < at_once);
  put.restart();
  CHECK_THROWS_AS(queue.put(item<T>(7), true, timeout3), mpx::Full);
  CHECK(put.seconds() >= waited_at_least);

  child_can_start.set();
  REQUIRE(parent_can_continue.wait(60s));

  CHECK(queue.empty());
  CHECK_FALSE(queue.full());
  REQUIRE(proc.join(60s));
  CHECK(proc.exitcode() == 0);
}

template <class T>
void check_get(mpx::StartMethod method) {
  mpx::Queue<T> queue;
  mpx::Event child_can_start, parent_can_continue;
  mpx::Process proc(with(method, true), put_four<T>, queue, child_can_start, parent_can_continue);
  proc.start();

  CHECK(queue.empty());
  child_can_start.set();
  REQUIRE(parent_can_continue.wait(60s));
  CHECK_FALSE(queue.empty());

  CHECK(value(queue.get(true, std::nullopt)) == 2);
  CHECK(value(queue.get(true)) == 3);
  CHECK(value(queue.get(true, 1s)) == 4);
  CHECK(value(queue.get_nowait()) == 5);
  CHECK(queue.empty());

  Stopwatch get;
  CHECK_THROWS_AS(queue.get(false), mpx::Empty);
  CHECK(get.seconds() < at_once);
  get.restart();
  CHECK_THROWS_AS(queue.get(false, std::nullopt), mpx::Empty);
  CHECK(get.seconds() < at_once);
  get.restart();
  CHECK_THROWS_AS(queue.get_nowait(), mpx::Empty);
  CHECK(get.seconds() < at_once);
  get.restart();
  CHECK_THROWS_AS(queue.get(true, timeout1), mpx::Empty);
  CHECK(get.seconds() >= waited_at_least);
  get.restart();
  CHECK_THROWS_AS(queue.get(false, timeout2), mpx::Empty);
  CHECK(get.seconds() < at_once);
  get.restart();
  CHECK_THROWS_AS(queue.get(true, timeout3), mpx::Empty);
  CHECK(get.seconds() >= waited_at_least);

  REQUIRE(proc.join(60s));
  CHECK(proc.exitcode() == 0);
}

template <class T>
void check_fork(mpx::StartMethod method) {
  mpx::Queue<T> queue;
  for (int i = 0; i < 10; ++i) queue.put(item<T>(i));
  mpx::Process p(with(method, true), put_ten_to_nineteen<T>, queue);
  p.start();
  for (int i = 0; i < 20; ++i) CHECK(value(queue.get(true, 60s)) == i);
  CHECK_THROWS_AS(queue.get(false), mpx::Empty);
  REQUIRE(p.join(60s));
  CHECK(p.exitcode() == 0);
}

template <class T>
void check_qsize() {
  mpx::Queue<T> q;
  CHECK(q.qsize() == 0);
  q.put(item<T>(1));
  CHECK(q.qsize() == 1);
  q.put(item<T>(5));
  CHECK(q.qsize() == 2);
  (void)q.get();
  CHECK(q.qsize() == 1);
  (void)q.get();
  CHECK(q.qsize() == 0);
}

void task_done_worker(mpx::JoinableQueue<mpx::Object> q) {
  for (;;) {
    const auto obj = q.get();
    if (obj.is_none()) break;
    q.task_done();
  }
}

// Python's NotSerializable, whose __reduce__ raises: here an item whose msgpack packing throws.
struct NotSerializable {
  bool poisoned = false;
  bool value = false;
  mutable bool reduce_was_called = false;

  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    if (poisoned) {
      reduce_was_called = true;
      throw std::runtime_error("AttributeError");
    }
    pk.pack(value);
  }
  void msgpack_unpack(const msgpack::object& o) { value = o.as<bool>(); }
};

NotSerializable poisoned() { return NotSerializable{true, false}; }
NotSerializable plain(bool value) { return NotSerializable{false, value}; }

void put_empty_twice(mpx::SimpleQueue<bool> queue, mpx::Event child_can_start, mpx::Event parent_can_continue) {
  (void)child_can_start.wait();
  queue.put(queue.empty());
  queue.put(queue.empty());
  parent_can_continue.set();
}

}  // namespace

// ---- _TestQueue ----

TEST_CASE("_TestQueue.test_put", "[conformance][queue]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  check_put<int>(method);
  check_put<mpx::Object>(method);
}

TEST_CASE("_TestQueue.test_get", "[conformance][queue]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  check_get<int>(method);
  check_get<mpx::Object>(method);
}

TEST_CASE("_TestQueue.test_fork", "[conformance][queue]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  check_fork<int>(method);
  check_fork<mpx::Object>(method);
}

TEST_CASE("_TestQueue.test_qsize", "[conformance][queue]") {
  check_qsize<int>();
  check_qsize<mpx::Object>();
}

TEST_CASE("_TestQueue.test_task_done", "[conformance][queue]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::JoinableQueue<mpx::Object> queue;
  std::vector<mpx::Process> workers;
  for (int i = 0; i < 4; ++i) workers.emplace_back(with(method, true), task_done_worker, queue);
  for (auto& p : workers) p.start();
  for (int i = 0; i < 10; ++i) queue.put(i);
  REQUIRE(queue.join(60s));
  for (std::size_t i = 0; i < workers.size(); ++i) queue.put(mpx::Object());
  for (auto& p : workers) {
    REQUIRE(p.join(60s));
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("_TestQueue.test_timeout", "[conformance][queue]") {
  mpx::Queue<int> q;
  Stopwatch start;
  CHECK_THROWS_AS(q.get(true, 0.2s), mpx::Empty);
  CHECK(start.seconds() >= 0.1);  // Python tolerates 100 ms of clock resolution too
}

TEST_CASE("_TestQueue.test_queue_feeder_donot_stop_onexc", "[conformance][queue]") {
  // mpx differs: there is no feeder thread: put encodes the item itself, so the error is raised by put, at the
  // caller, and the item never enters the queue (docs/queues.md, "No feeder thread").
  {
    mpx::Queue<NotSerializable> q;
    CHECK_THROWS_AS(q.put(poisoned()), mpx::SerializationError);
    q.put(plain(true));
    CHECK(q.get(true, 60s).value);
  }
  {
    // bpo-33078: the queue's size stays right after the error.
    mpx::Queue<NotSerializable> q(1);
    CHECK_THROWS_AS(q.put(poisoned()), mpx::SerializationError);
    q.put(plain(true));
    CHECK(q.qsize() == 1);
    CHECK(q.get(true, 60s).value);
    CHECK(q.empty());
  }
}

TEST_CASE("_TestQueue.test_queue_feeder_on_queue_feeder_error", "[conformance][queue]") {
  // mpx differs: no feeder thread, so no _on_queue_feeder_error hook: the caller of put is where the error (and the
  // object that caused it) is seen, and the queue goes on working.
  auto not_serializable_obj = poisoned();
  mpx::Queue<NotSerializable> q;
  CHECK_THROWS_WITH(q.put(not_serializable_obj), Catch::Contains("AttributeError"));
  q.put(plain(true));
  CHECK(q.get(true, 60s).value);
  CHECK(not_serializable_obj.reduce_was_called);
}

TEST_CASE("_TestQueue.test_closed_queue_empty_exceptions", "[conformance][queue]") {
  {
    // close() of an unused queue: empty() still answers.
    mpx::Queue<std::string> q;
    mpx::JoinableQueue<std::string> jq;
    q.close();
    q.join_thread();
    CHECK(q.empty());
    jq.close();
    jq.join_thread();
    CHECK(jq.empty());
  }
  {
    mpx::Queue<std::string> q;
    mpx::JoinableQueue<std::string> jq;
    q.put("foo");
    q.close();
    q.join_thread();
    CHECK_THROWS_WITH(q.empty(), Catch::Contains("is closed"));
    jq.put("foo");
    jq.close();
    jq.join_thread();
    CHECK_THROWS_WITH(jq.empty(), Catch::Contains("is closed"));
  }
}

TEST_CASE("_TestQueue.test_closed_queue_put_get_exceptions", "[conformance][queue]") {
  mpx::Queue<std::string> q;
  mpx::JoinableQueue<std::string> jq;
  q.close();
  jq.close();
  CHECK_THROWS_AS(q.put("foo"), mpx::ValueError);
  CHECK_THROWS_WITH(q.put("foo"), Catch::Contains("is closed"));
  CHECK_THROWS_AS(jq.put("foo"), mpx::ValueError);
  // A get that waited would be the bug: the timeout only keeps it from hanging the suite.
  CHECK_THROWS_AS(q.get(true, 5s), mpx::ValueError);
  CHECK_THROWS_AS(jq.get(true, 5s), mpx::ValueError);
}

// ---- TestSimpleQueue ----

TEST_CASE("TestSimpleQueue.test_empty_exceptions", "[conformance][queue]") {
  // Unlike Queue, a closed SimpleQueue refuses empty() whether or not it was used.
  mpx::SimpleQueue<int> q;
  q.close();
  CHECK_THROWS_WITH(q.empty(), Catch::Contains("is closed"));
}

TEST_CASE("TestSimpleQueue.test_empty", "[conformance][queue]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::SimpleQueue<bool> queue;
  mpx::Event child_can_start, parent_can_continue;
  mpx::Process proc(with(method, true), put_empty_twice, queue, child_can_start, parent_can_continue);
  proc.start();

  CHECK(queue.empty());
  child_can_start.set();
  REQUIRE(parent_can_continue.wait(60s));

  CHECK_FALSE(queue.empty());
  CHECK(queue.get() == true);
  CHECK(queue.get() == false);
  CHECK(queue.empty());
  REQUIRE(proc.join(60s));
  CHECK(proc.exitcode() == 0);
}

TEST_CASE("TestSimpleQueue.test_close", "[conformance][queue]") {
  mpx::SimpleQueue<int> queue;
  queue.close();
  queue.close();  // closing a queue twice does not fail
}
