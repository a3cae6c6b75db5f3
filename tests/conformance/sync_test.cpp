// Conformance: the behaviours CPython's own tests check (Lib/test/_test_multiprocessing.py, test_concurrent_futures),
// through mpx's public API only. One TEST_CASE per CPython test, named after it.
//
// This file: _TestLock, _TestSemaphore, _TestCondition, _TestEvent and _TestBarrier. CPython's "processes" flavour is
// the one ported; a child's failed check throws, which makes its exit code 1.
#include <catch2/catch.hpp>
#include <mpx/mpx.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../children.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;
using mpx_test::Children;

using conformance::with;

using conformance::require;

using conformance::wait_until;

double seconds_since(Clock::time_point begin) { return std::chrono::duration<double>(Clock::now() - begin).count(); }

// ---- _TestLock ----

// CPython's _test_lock_locked_2processes, for a Lock and an RLock.
// mpx differs: the coordinator releases a lock whose holder died, so the child holds it until the parent has looked.
template <class L>
void acquire_and_report_locked(L lock, mpx::Event event, mpx::Value<std::int8_t> res, mpx::Event looked) {
  lock.acquire();
  res.set(lock.locked() ? 1 : 0);
  event.set();
  require(looked.wait(30s), "the parent looked at the lock");
}

template <class L>
void check_locked_2processes() {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  L lock;
  mpx::Event event;
  mpx::Event looked;
  mpx::Value<std::int8_t> res(0);
  Children children;
  children.start(with(method), acquire_and_report_locked<L>, lock, event, res, looked);
  REQUIRE(event.wait(30s));
  CHECK(lock.locked());
  CHECK(res.value() == 1);
  looked.set();
  children.join_all();
}

// Python's `with self.Lock() as locked`: std::scoped_lock holds it for the scope.
template <class L>
void check_lock_context() {
  L lock;
  {
    std::scoped_lock guard(lock);
    CHECK(lock.locked());
  }
  CHECK_FALSE(lock.locked());
}

// ---- _TestCondition ----

// CPython's _TestCondition.f: sleeps on the condition, counts itself on `woken` when it wakes (notified or timed out).
void condition_sleeper(mpx::Condition cond, mpx::Semaphore sleeping, mpx::Semaphore woken,
                       std::optional<double> timeout) {
  cond.acquire();
  sleeping.release();
  mpx::Timeout t;
  if (timeout) t = std::chrono::duration<double>(*timeout);
  (void)cond.wait(t);
  woken.release();
  cond.release();
}

// CPython starts one sleeper process and one sleeper thread each time.
// mpx differs: lock ownership is per process, so a sleeper thread here would share this process's hold on the
// condition's lock (its acquire would not wait for the main thread's release); both sleepers are child processes.
void start_sleepers(Children& children, mpx::StartMethod method, const mpx::Condition& cond,
                    const mpx::Semaphore& sleeping, const mpx::Semaphore& woken, std::optional<double> timeout) {
  for (int i = 0; i < 2; ++i) children.start(with(method), condition_sleeper, cond, sleeping, woken, timeout);
}

void waitfor_child(mpx::Condition cond, mpx::Value<int> state) {
  std::scoped_lock guard(cond);
  state.set(0);
  cond.notify();
  const bool result = cond.wait_for([&] { return state.value() == 4; });
  require(result && state.value() == 4, "wait_for returned once state == 4");
}

void waitfor_timeout_child(mpx::Condition cond, mpx::Value<int> state, mpx::Value<int> success, mpx::Semaphore sem) {
  sem.release();
  std::scoped_lock guard(cond);
  const double expected = 0.1;
  const auto begin = Clock::now();
  const bool result = cond.wait_for([&] { return state.value() == 4; }, std::chrono::duration<double>(expected));
  const double dt = seconds_since(begin);
  if (!result && dt >= expected - 0.01) success.set(1);
}

void notify_once(mpx::Condition c) {
  std::scoped_lock guard(c);
  c.notify();
}

// ---- _TestEvent ----

void set_event_later(mpx::Event event) {
  std::this_thread::sleep_for(100ms);  // CPython's TIMEOUT2: the parent is already waiting, most of the time
  event.set();
}

// ---- _TestBarrier ----

constexpr int N = 5;  // CPython's _TestBarrier.N: N - 1 child processes plus the main process
constexpr auto default_timeout = 30s;

mpx::Barrier make_barrier() { return mpx::Barrier(N, nullptr, std::chrono::duration<double>(default_timeout)); }

// CPython's run_threads: f(args...) in N - 1 children and in this process; every child must end with exit code 0.
template <class... A>
void run_parties(mpx::StartMethod method, void (*f)(A...), const A&... args) {
  Children children;
  for (int i = 0; i < N - 1; ++i) children.start(with(method), f, args...);
  REQUIRE_NOTHROW(f(args...));
  children.join_all(0);
}

// Thrown by the party CPython's tests pick to misbehave (it is not an mpx::Error, so it cannot be confused with
// BrokenBarrierError).
struct PickedParty {};

void multipass(mpx::Barrier barrier, mpx::Value<int> results0, mpx::Value<int> results1, int passes) {
  const int m = static_cast<int>(barrier.parties());
  require(m == N, "parties() == N");
  for (int i = 0; i < passes; ++i) {
    results0.fetch_add(1);
    require(results1.value() == i * m, "results[1] == i * m before the first wait");
    barrier.wait();
    results1.fetch_add(1);
    require(results0.value() == (i + 1) * m, "results[0] == (i + 1) * m after the first wait");
    barrier.wait();
  }
  require(barrier.n_waiting() == 0, "n_waiting() == 0");
  require(!barrier.broken(), "not broken");
}

void check_barrier_passes(int passes) {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto barrier = make_barrier();
  mpx::Value<int> results0(0), results1(0);
  run_parties(method, multipass, barrier, results0, results1, passes);
  CHECK(results0.value() == N * passes);
  CHECK(results1.value() == N * passes);
  barrier.abort();
}

// CPython's AppendTrue over a DummyList: the action counts its runs in a shared Value.
void append_true(mpx::Value<int> results) { results.fetch_add(1); }

void action_f(mpx::Barrier barrier, mpx::Value<int> results) {
  barrier.wait();
  require(results.value() == 1, "the action ran exactly once, before any party was released");
}

void wait_return_f(mpx::Barrier barrier, mpx::Queue<std::int64_t> queue) {
  queue.put(static_cast<std::int64_t>(barrier.wait()));
}

void abort_f(mpx::Barrier barrier, mpx::Value<int> results1, mpx::Value<int> results2) {
  try {
    const auto i = barrier.wait();
    if (i == N / 2) throw PickedParty{};
    barrier.wait();
    results1.fetch_add(1);
  } catch (const mpx::BrokenBarrierError&) {
    results2.fetch_add(1);
  } catch (const PickedParty&) {
    barrier.abort();
  }
}

void reset_f(mpx::Barrier barrier, mpx::Value<int> results1, mpx::Value<int> results2, mpx::Value<int> results3) {
  const auto i = barrier.wait();
  if (i == N / 2) {
    // Wait until the others are all in the barrier.
    require(wait_until([&] { return barrier.n_waiting() == N - 1; }), "the others arrived in the barrier");
    barrier.reset();
  } else {
    try {
      barrier.wait();
      results1.fetch_add(1);
    } catch (const mpx::BrokenBarrierError&) {
      results2.fetch_add(1);
    }
  }
  // Now pass the barrier again.
  barrier.wait();
  results3.fetch_add(1);
}

void abort_and_reset_f(mpx::Barrier barrier, mpx::Barrier barrier2, mpx::Value<int> results1,
                       mpx::Value<int> results2, mpx::Value<int> results3) {
  abort_f(barrier, results1, results2);
  // Everyone leaves the barrier before the reset, and nobody enters it again before the reset.
  if (barrier2.wait() == N / 2) barrier.reset();
  barrier2.wait();
  barrier.wait();
  results3.fetch_add(1);
}

void timeout_f(mpx::Barrier barrier, mpx::Value<int> results) {
  const auto i = barrier.wait();
  if (i == N / 2) std::this_thread::sleep_for(1500ms);  // one party is late, by design of the test
  try {
    barrier.wait(std::chrono::duration<double>(0.3));
  } catch (const mpx::BrokenBarrierError&) {
    results.fetch_add(1);
  }
}

void default_timeout_f(mpx::Barrier barrier, mpx::Value<int> results) {
  const auto i = barrier.wait(std::chrono::duration<double>(default_timeout));
  if (i == N / 2) std::this_thread::sleep_for(1500ms);  // later than the barrier's default timeout
  try {
    barrier.wait();
  } catch (const mpx::BrokenBarrierError&) {
    results.fetch_add(1);
  }
}

void thousand_f(mpx::Barrier barrier, int passes, mpx::Queue<int> out, mpx::Lock lock) {
  for (int i = 0; i < passes; ++i) {
    barrier.wait();
    std::scoped_lock guard(lock);
    out.put(i);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------
// _TestLock

TEST_CASE("_TestLock.test_lock", "[conformance][sync][lock]") {
  mpx::Lock lock;
  CHECK(lock.acquire());
  CHECK(lock.locked());
  CHECK_FALSE(lock.acquire(false));
  lock.release();
  CHECK_FALSE(lock.locked());
  CHECK_THROWS_AS(lock.release(), mpx::ValueError);
}

TEST_CASE("_TestLock.test_lock_locked_2processes", "[conformance][sync][lock]") {
  check_locked_2processes<mpx::Lock>();
}

TEST_CASE("_TestLock.test_rlock", "[conformance][sync][lock]") {
  mpx::RLock lock;
  CHECK(lock.acquire());
  CHECK(lock.locked());
  CHECK(lock.acquire());
  CHECK(lock.acquire());
  lock.release();
  CHECK(lock.locked());
  lock.release();
  lock.release();
  CHECK_FALSE(lock.locked());
  // mpx differs: releasing an RLock this process does not hold raises ValueError (Python: AssertionError/RuntimeError).
  CHECK_THROWS_AS(lock.release(), mpx::ValueError);
}

TEST_CASE("_TestLock.test_rlock_locked_2processes", "[conformance][sync][lock]") {
  check_locked_2processes<mpx::RLock>();
}

TEST_CASE("_TestLock.test_lock_context", "[conformance][sync][lock]") { check_lock_context<mpx::Lock>(); }

TEST_CASE("_TestLock.test_rlock_context", "[conformance][sync][lock]") { check_lock_context<mpx::RLock>(); }

// ---------------------------------------------------------------------------------------------------------------------
// _TestSemaphore

namespace {
// CPython's _TestSemaphore._test_semaphore, on a semaphore of initial value 2.
template <class S>
void exercise_semaphore(S& sem) {
  CHECK(sem.get_value() == 2);
  CHECK(sem.acquire());
  CHECK(sem.get_value() == 1);
  CHECK(sem.acquire());
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.acquire(false));
  CHECK(sem.get_value() == 0);
  sem.release();
  CHECK(sem.get_value() == 1);
  sem.release();
  CHECK(sem.get_value() == 2);
}
}  // namespace

TEST_CASE("_TestSemaphore.test_semaphore", "[conformance][sync][semaphore]") {
  mpx::Semaphore sem(2);
  exercise_semaphore(sem);
  sem.release();
  CHECK(sem.get_value() == 3);
  sem.release();
  CHECK(sem.get_value() == 4);
}

TEST_CASE("_TestSemaphore.test_bounded_semaphore", "[conformance][sync][semaphore]") {
  mpx::BoundedSemaphore sem(2);
  exercise_semaphore(sem);
  // CPython comments this check out because it fails on macOS; mpx's bound is its own, so it holds everywhere.
  CHECK_THROWS_AS(sem.release(), mpx::ValueError);
  CHECK(sem.get_value() == 2);
}

TEST_CASE("_TestSemaphore.test_timeout", "[conformance][sync][semaphore]") {
  mpx::Semaphore sem(0);
  auto begin = Clock::now();
  CHECK_FALSE(sem.acquire(false));
  CHECK_FALSE(sem.acquire(false, std::nullopt));
  CHECK_FALSE(sem.acquire(false, std::chrono::duration<double>(10)));  // non-blocking: the timeout is ignored
  CHECK(seconds_since(begin) < 5);

  begin = Clock::now();
  CHECK_FALSE(sem.acquire(true, std::chrono::duration<double>(0.2)));
  CHECK(seconds_since(begin) >= 0.19);

  begin = Clock::now();
  CHECK_FALSE(sem.acquire(true, std::chrono::duration<double>(0.3)));
  CHECK(seconds_since(begin) >= 0.29);
}

// ---------------------------------------------------------------------------------------------------------------------
// _TestCondition

TEST_CASE("_TestCondition.test_notify", "[conformance][sync][condition]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Condition cond;
  mpx::Semaphore sleeping(0), woken(0);
  Children children;
  start_sleepers(children, method, cond, sleeping, woken, std::nullopt);

  // Wait for both to sleep.
  REQUIRE(sleeping.acquire(true, 30s));
  REQUIRE(sleeping.acquire(true, 30s));
  CHECK(woken.get_value() == 0);

  // Wake one, then the other.
  cond.acquire();
  cond.notify();
  cond.release();
  CHECK(wait_until([&] { return woken.get_value() == 1; }));
  CHECK(woken.get_value() == 1);

  cond.acquire();
  cond.notify();
  cond.release();
  CHECK(wait_until([&] { return woken.get_value() == 2; }));

  children.join_all();
}

TEST_CASE("_TestCondition.test_notify_all", "[conformance][sync][condition]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Condition cond;
  mpx::Semaphore sleeping(0), woken(0);
  Children children;

  // Sleepers that time out.
  for (int i = 0; i < 3; ++i) start_sleepers(children, method, cond, sleeping, woken, 0.1);
  for (int i = 0; i < 6; ++i) REQUIRE(sleeping.acquire(true, 30s));
  for (int i = 0; i < 6; ++i) REQUIRE(woken.acquire(true, 30s));  // they all timed out
  CHECK(woken.get_value() == 0);

  // Sleepers that wait for a notify.
  for (int i = 0; i < 3; ++i) start_sleepers(children, method, cond, sleeping, woken, std::nullopt);
  for (int i = 0; i < 6; ++i) REQUIRE(sleeping.acquire(true, 30s));
  CHECK(woken.get_value() == 0);

  cond.acquire();
  cond.notify_all();
  cond.release();
  for (int i = 0; i < 6; ++i) REQUIRE(woken.acquire(true, 30s));
  CHECK(woken.get_value() == 0);

  children.join_all();
}

TEST_CASE("_TestCondition.test_notify_n", "[conformance][sync][condition]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Condition cond;
  mpx::Semaphore sleeping(0), woken(0);
  Children children;
  for (int i = 0; i < 3; ++i) start_sleepers(children, method, cond, sleeping, woken, std::nullopt);
  for (int i = 0; i < 6; ++i) REQUIRE(sleeping.acquire(true, 30s));
  CHECK(woken.get_value() == 0);

  cond.acquire();
  cond.notify(2);
  cond.release();
  CHECK(wait_until([&] { return woken.get_value() == 2; }));

  cond.acquire();
  cond.notify(4);
  cond.release();
  CHECK(wait_until([&] { return woken.get_value() == 6; }));

  // Nobody is left to wake.
  cond.acquire();
  cond.notify(3);
  cond.release();
  CHECK(woken.get_value() == 6);

  children.join_all();
}

TEST_CASE("_TestCondition.test_timeout", "[conformance][sync][condition]") {
  mpx::Condition cond;
  cond.acquire();
  const auto begin = Clock::now();
  const bool res = cond.wait(std::chrono::duration<double>(0.2));
  const double elapsed = seconds_since(begin);
  cond.release();
  CHECK_FALSE(res);
  CHECK(elapsed >= 0.19);
}

TEST_CASE("_TestCondition.test_waitfor", "[conformance][sync][condition]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Condition cond;
  mpx::Value<int> state(-1);
  Children children;
  auto& p = children.start(with(method), waitfor_child, cond, state);
  {
    std::scoped_lock guard(cond);
    const bool result = cond.wait_for([&] { return state.value() == 0; }, std::chrono::duration<double>(30));
    CHECK(result);
    CHECK(state.value() == 0);
  }
  for (int i = 0; i < 4; ++i) {
    std::scoped_lock guard(cond);
    state.set(state.value() + 1);
    cond.notify();
  }
  REQUIRE(p.join(30s));
  CHECK(p.exitcode() == 0);
}

TEST_CASE("_TestCondition.test_waitfor_timeout", "[conformance][sync][condition]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Condition cond;
  mpx::Value<int> state(0), success(0);
  mpx::Semaphore sem(0);
  Children children;
  auto& p = children.start(with(method), waitfor_timeout_child, cond, state, success, sem);
  REQUIRE(sem.acquire(true, 30s));
  // Only three increments: state == 4 is never reached.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(10ms);  // CPython's pacing, so the child re-checks in between
    std::scoped_lock guard(cond);
    state.set(state.value() + 1);
    cond.notify();
  }
  REQUIRE(p.join(30s));
  CHECK(p.exitcode() == 0);
  CHECK(success.value() == 1);
}

// CPython's second half (a SIGINT during wait raises KeyboardInterrupt) is not ported: see known bug 3 and the
// not-applicable list (Python's KeyboardInterrupt).
TEST_CASE("_TestCondition.test_wait_result", "[conformance][sync][condition]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Condition c;
  Children children;
  {
    std::scoped_lock guard(c);
    CHECK_FALSE(c.wait(std::chrono::duration<double>(0)));
    CHECK_FALSE(c.wait(std::chrono::duration<double>(0.1)));
    children.start(with(method), notify_once, c);
    CHECK(c.wait(std::chrono::duration<double>(60)));
  }
  children.join_all();
}

// ---------------------------------------------------------------------------------------------------------------------
// _TestEvent

TEST_CASE("_TestEvent.test_event", "[conformance][sync][event]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Event event;
  CHECK_FALSE(event.is_set());

  auto begin = Clock::now();
  CHECK_FALSE(event.wait(std::chrono::duration<double>(0)));
  CHECK(seconds_since(begin) < 5);
  begin = Clock::now();
  CHECK_FALSE(event.wait(std::chrono::duration<double>(0.2)));
  CHECK(seconds_since(begin) >= 0.19);

  event.set();
  CHECK(event.is_set());
  begin = Clock::now();
  CHECK(event.wait());
  CHECK(event.wait(std::chrono::duration<double>(10)));  // set: returns at once, long before the timeout
  CHECK(seconds_since(begin) < 5);

  event.clear();
  CHECK_FALSE(event.is_set());

  Children children;
  children.start(with(method), set_event_later, event);
  CHECK(event.wait(std::chrono::duration<double>(60)));
  children.join_all();
}

// ---------------------------------------------------------------------------------------------------------------------
// _TestBarrier (N = 5 parties: 4 child processes and this one)

TEST_CASE("_TestBarrier.test_barrier", "[conformance][sync][barrier]") { check_barrier_passes(1); }

TEST_CASE("_TestBarrier.test_barrier_10", "[conformance][sync][barrier]") { check_barrier_passes(10); }

TEST_CASE("_TestBarrier.test_wait_return", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto barrier = make_barrier();
  mpx::Queue<std::int64_t> queue;
  run_parties(method, wait_return_f, barrier, queue);
  std::vector<std::int64_t> results;
  for (int i = 0; i < N; ++i) results.push_back(queue.get(true, 30s));
  CHECK(std::count(results.begin(), results.end(), 0) == 1);
  barrier.abort();
}

TEST_CASE("_TestBarrier.test_action", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Value<int> results(0);
  mpx::Barrier barrier(N, mpx::bind(append_true, results), std::chrono::duration<double>(default_timeout));
  run_parties(method, action_f, barrier, results);
  CHECK(results.value() == 1);
  barrier.abort();
}

TEST_CASE("_TestBarrier.test_abort", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto barrier = make_barrier();
  mpx::Value<int> results1(0), results2(0);
  run_parties(method, abort_f, barrier, results1, results2);
  CHECK(results1.value() == 0);
  CHECK(results2.value() == N - 1);
  CHECK(barrier.broken());
}

TEST_CASE("_TestBarrier.test_reset", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto barrier = make_barrier();
  mpx::Value<int> results1(0), results2(0), results3(0);
  run_parties(method, reset_f, barrier, results1, results2, results3);
  CHECK(results1.value() == 0);
  CHECK(results2.value() == N - 1);
  CHECK(results3.value() == N);
  barrier.abort();
}

TEST_CASE("_TestBarrier.test_abort_and_reset", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto barrier = make_barrier();
  mpx::Barrier barrier2(N);
  mpx::Value<int> results1(0), results2(0), results3(0);
  run_parties(method, abort_and_reset_f, barrier, barrier2, results1, results2, results3);
  CHECK(results1.value() == 0);
  CHECK(results2.value() == N - 1);
  CHECK(results3.value() == N);
  barrier.abort();
}

TEST_CASE("_TestBarrier.test_timeout", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto barrier = make_barrier();
  mpx::Value<int> results(0);
  run_parties(method, timeout_f, barrier, results);
  CHECK(results.value() == static_cast<int>(barrier.parties()));
  barrier.abort();
}

TEST_CASE("_TestBarrier.test_default_timeout", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Barrier barrier(N, nullptr, std::chrono::duration<double>(0.3));
  mpx::Value<int> results(0);
  run_parties(method, default_timeout_f, barrier, results);
  CHECK(results.value() == static_cast<int>(barrier.parties()));
  barrier.abort();
}

TEST_CASE("_TestBarrier.test_single_thread", "[conformance][sync][barrier]") {
  mpx::Barrier b(1);
  CHECK(b.wait(std::chrono::duration<double>(30)) == 0);
  CHECK(b.wait(std::chrono::duration<double>(30)) == 0);
}

TEST_CASE("_TestBarrier.test_thousand", "[conformance][sync][barrier]") {
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  constexpr int passes = 100;  // CPython runs 1000; the lockstep is the same
  auto barrier = make_barrier();
  mpx::Lock lock;
  // CPython's children share one Pipe end; a Queue keeps the same order (each put returns before the sender's next
  // barrier wait) without depending on a pipe end shared by several processes (known bug 4).
  mpx::Queue<int> out;
  Children children;
  for (int j = 0; j < N; ++j) children.start(with(method), thousand_f, barrier, passes, out, lock);
  for (int i = 0; i < passes; ++i) {
    for (int j = 0; j < N; ++j) REQUIRE(out.get(true, 30s) == i);
  }
  children.join_all();
  barrier.abort();
}
