// ProcessPoolExecutor with real worker processes: submit and Future, map with timeout, cancel, as_completed, wait,
// shutdown, and both ways of handling a dead worker.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iterator>
#include <numeric>
#include <ranges>
#include <string>
#include <type_traits>
#include <vector>
#include <csignal>
#include <stdexcept>
#include <thread>

#include <unistd.h>

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }

double nap(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return seconds;
}

int fail_after(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  throw std::runtime_error("failed on purpose");
}

std::string repeat(std::string text, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += text;
  return out;
}

// Returns at once for 0; otherwise keeps its worker until `release` is set (half a minute at most).
int hold_unless_zero(int value, mpx::Event release) {
  if (value != 0) (void)release.wait(30s);
  return value;
}

// Counts itself as started, then keeps its worker until `release` is set (half a minute at most).
int count_and_hold(int value, mpx::Value<int> started, mpx::Event release) {
  started.fetch_add(1);
  (void)release.wait(30s);
  return value;
}

// Python's list(iterable).
template <class Range>
auto list(Range&& range) {
  return std::vector(range.begin(), range.end());
}

int die(int) {
  ::raise(SIGKILL);
  return 0;
}

}  // namespace

TEST_CASE("submit returns a Future: result, exception, done, callbacks", "[executor]") {
  mpx::ProcessPoolExecutor executor(2);
  auto f = executor.submit(square, 12);
  CHECK(f.result(5s) == 144);
  CHECK(f.done());
  CHECK_FALSE(f.cancelled());
  CHECK_FALSE(f.running());
  CHECK(f.exception(1s) == nullptr);

  auto bad = executor.submit(fail_after, 0.0);
  auto error = bad.exception(5s);
  REQUIRE(error);
  CHECK_THROWS_AS(std::rethrow_exception(error), mpx::RemoteError);
  CHECK_THROWS_WITH(bad.result(), Catch::Contains("failed on purpose"));

  std::atomic<int> called{0};
  auto g = executor.submit(square, 3);
  g.add_done_callback([&](const mpx::Future<int>& done) {
    if (done.result() == 9) ++called;
  });
  g.result(5s);
  // As in Python, done callbacks run right after the waiters are woken: give it a moment.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (called < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  CHECK(called == 1);
  f.add_done_callback([&](const mpx::Future<int>&) { ++called; });  // already done: runs at once, here
  CHECK(called == 2);

  auto slow = executor.submit(nap, 1.0);
  CHECK_THROWS_AS(slow.result(0.05s), mpx::TimeoutError);
  CHECK_THROWS_AS(slow.exception(0.01s), mpx::TimeoutError);
}

TEST_CASE("executor.map keeps order and honours its timeout", "[executor]") {
  mpx::ProcessPoolExecutor executor(2);
  CHECK(list(executor.map(square, std::vector<int>{1, 2, 3, 4})) == std::vector<int>{1, 4, 9, 16});
  CHECK(list(executor.map(square, std::views::iota(0, 100), 5s, 10)).size() == 100);
  auto late = executor.map(nap, std::vector<double>{2.0, 2.0}, 0.1s);
  CHECK_THROWS_AS(late.next(), mpx::TimeoutError);
}

TEST_CASE("executor.map zips several ranges to the shortest", "[executor][api]") {
  mpx::ProcessPoolExecutor executor(2);
  const std::vector<std::string> words{"a", "bb", "ccc"};
  CHECK(list(executor.map(repeat, words, std::views::iota(1))) == std::vector<std::string>{"a", "bbbb", "ccccccccc"});
  CHECK(list(executor.map(repeat, words, std::vector<int>{2}, 10s, 2)) == std::vector<std::string>{"aa"});
  CHECK(list(executor.map(repeat, std::vector<std::string>{}, std::views::iota(1))).empty());
}

TEST_CASE("executor.map yields each result once it is ready, not after all are done", "[executor][api]") {
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event release;
  auto results = executor.map(hold_unless_zero, std::vector<int>{0, 1}, std::vector{release, release}, 60s);
  // The second call holds its worker until `release`: the first result still comes.
  CHECK(results.next(30s) == 0);
  CHECK_FALSE(release.is_set());
  release.set();
  CHECK(results.next(30s) == 1);
  CHECK_FALSE(results.next().has_value());
}

TEST_CASE("executor.map's timeout counts from the call, as Python's", "[executor][api]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  const auto start = std::chrono::steady_clock::now();
  auto results = executor.map(hold_unless_zero, std::vector<int>{0, 1}, std::vector{release, release}, 0.5s);
  std::vector<int> got;
  try {
    for (int r : results) got.push_back(r);
    FAIL("expected a TimeoutError");
  } catch (const mpx::TimeoutError&) {
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(waited >= 0.45);
  CHECK(waited < 20);
  CHECK(got == std::vector<int>{0});
  release.set();
}

// Python's map cancels its outstanding futures when its result iterator raises: a call no worker took yet never runs.
TEST_CASE("executor.map's timeout cancels the calls not started yet", "[executor][api]") {
  constexpr int calls = 20;
  mpx::Value<int> started(0);
  mpx::Event release;
  {
    mpx::ProcessPoolExecutor executor(1);
    std::vector<int> xs(calls);
    std::iota(xs.begin(), xs.end(), 0);
    auto results = executor.map(count_and_hold, xs, std::vector(calls, started), std::vector(calls, release), 0.5s);
    // The one worker holds at most one batch (half the queue, at most): it is inside the first call, held there.
    CHECK_THROWS_AS(results.next(), mpx::TimeoutError);
    release.set();
    executor.shutdown(true);  // every call that is still going to run has run
  }
  INFO("calls started: " << started.value());
  CHECK(started.value() >= 1);
  CHECK(started.value() < calls);
}

TEST_CASE("executor.map reports progress on the iterating thread", "[executor][api]") {
  mpx::ProcessPoolExecutor executor(2);
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  const auto caller = std::this_thread::get_id();
  bool same_thread = true;
  auto progress = [&](std::size_t done, std::size_t total) {
    calls.emplace_back(done, total);
    same_thread = same_thread && std::this_thread::get_id() == caller;
  };
  CHECK(list(executor.map(square, std::views::iota(0, 10), 30s, 3, progress)).size() == 10);
  REQUIRE(calls.size() == 4);  // chunks of 3, 3, 3 and 1
  CHECK(calls.back() == std::pair<std::size_t, std::size_t>{10, 10});
  CHECK(calls.front() == std::pair<std::size_t, std::size_t>{3, 10});
  CHECK(same_thread);
}

// Python's list(it) and the algorithms need begin() and end() of one type, and complete iterator traits.
using MapRange = mpx::IMapIterator<int>;
using AsCompletedRange = mpx::AsCompleted<mpx::Future<int>>;
static_assert(std::ranges::common_range<MapRange> && std::ranges::input_range<MapRange>);
static_assert(std::ranges::common_range<AsCompletedRange> && std::ranges::input_range<AsCompletedRange>);
static_assert(std::is_same_v<std::iterator_traits<MapRange::iterator>::iterator_category, std::input_iterator_tag>);
static_assert(std::is_same_v<std::iterator_traits<MapRange::iterator>::value_type, int>);
static_assert(std::is_same_v<std::iterator_traits<MapRange::iterator>::difference_type, std::ptrdiff_t>);
static_assert(std::is_same_v<std::iterator_traits<MapRange::iterator>::reference, const int&>);
static_assert(std::is_same_v<std::iterator_traits<AsCompletedRange::iterator>::value_type, mpx::Future<int>>);

TEST_CASE("imap, Executor::map and as_completed ranges build a vector from begin() and end()", "[executor][api]") {
  mpx::ProcessPoolExecutor executor(2);
  auto squares = executor.pool().imap(square, std::vector<int>{1, 2, 3});
  CHECK(std::vector(squares.begin(), squares.end()) == std::vector<int>{1, 4, 9});
  auto unordered = executor.pool().imap_unordered(square, std::vector<int>{1, 2, 3});
  std::vector<int> any_order(unordered.begin(), unordered.end());
  std::ranges::sort(any_order);
  CHECK(any_order == std::vector<int>{1, 4, 9});
  std::vector<mpx::Future<int>> fs{executor.submit(square, 4), executor.submit(square, 5)};
  auto completed = mpx::as_completed(fs, 30s);
  std::vector<mpx::Future<int>> got(completed.begin(), completed.end());
  REQUIRE(got.size() == 2);
  CHECK(got[0].result() + got[1].result() == 41);
  auto mapped = executor.map(square, std::vector<int>{6});
  auto it = mapped.begin();
  CHECK(*it++ == 36);
  CHECK(it == mapped.end());
}

TEST_CASE("wait and as_completed take futures of different result types together", "[executor][api]") {
  mpx::ProcessPoolExecutor executor(2);
  mpx::Future<int> number = executor.submit(square, 7);
  mpx::Future<std::string> text = executor.submit(repeat, std::string("ab"), 2);
  mpx::Event release;
  mpx::Future<int> late = executor.submit(hold_unless_zero, 1, release);
  std::vector<mpx::FutureBase> all{number, text, late};
  auto first_two = mpx::wait(std::vector<mpx::FutureBase>{number, text}, 30s);
  CHECK(first_two.done.size() == 2);
  auto some = mpx::wait(all, 30s, mpx::FIRST_COMPLETED);
  CHECK_FALSE(some.done.empty());
  CHECK(std::find(some.not_done.begin(), some.not_done.end(), late) != some.not_done.end());
  std::size_t yielded = 0;
  for (const mpx::FutureBase& f : mpx::as_completed(std::vector<mpx::FutureBase>{text, number}, 30s)) {
    CHECK(f.done());
    if (f == number) CHECK(f.as<int>().result() == 49);
    if (f == text) CHECK(f.as<std::string>().result() == "abab");
    ++yielded;
  }
  CHECK(yielded == 2);
  release.set();
  CHECK(late.result(30s) == 1);
}

TEST_CASE("cancel a pending future; a running one cannot be cancelled", "[executor]") {
  mpx::ProcessPoolExecutor executor(1);
  auto running = executor.submit(nap, 0.5);
  auto pending = executor.submit(square, 5);
  // Wait until the single worker has the first task, so the second one is still queued.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!running.running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  REQUIRE(running.running());
  CHECK(pending.cancel());
  CHECK(pending.cancelled());
  CHECK(pending.done());
  CHECK_THROWS_AS(pending.result(), mpx::CancelledError);
  CHECK_THROWS_AS(pending.exception(), mpx::CancelledError);
  CHECK_FALSE(running.cancel());
  CHECK(running.result(10s) == 0.5);
}

TEST_CASE("wait: FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED, and its timeout", "[executor]") {
  mpx::ProcessPoolExecutor executor(3);
  std::vector<mpx::Future<double>> naps{executor.submit(nap, 0.0), executor.submit(nap, 5.0)};
  auto first = mpx::wait(naps, 10s, mpx::FIRST_COMPLETED);
  CHECK(first.done.size() == 1);
  CHECK(first.not_done.size() == 1);

  std::vector<mpx::Future<int>> mixed{executor.submit(fail_after, 0.0), executor.submit(fail_after, 5.0),
                                      executor.submit(square, 2)};
  auto on_error = mpx::wait(mixed, 10s, mpx::FIRST_EXCEPTION);
  CHECK(std::find(on_error.done.begin(), on_error.done.end(), mixed[0]) != on_error.done.end());
  CHECK(std::find(on_error.not_done.begin(), on_error.not_done.end(), mixed[1]) != on_error.not_done.end());

  auto timed_out = mpx::wait(naps, 0.05s, mpx::ALL_COMPLETED);
  CHECK(timed_out.not_done.size() == 1);

  std::vector<mpx::Future<int>> quick{executor.submit(square, 1), executor.submit(square, 2)};
  auto all = mpx::wait(quick);
  CHECK(all.done.size() == 2);
  CHECK(all.not_done.empty());
}

TEST_CASE("as_completed yields in completion order and raises TimeoutError", "[executor]") {
  mpx::ProcessPoolExecutor executor(3);
  std::vector<mpx::Future<double>> fs{executor.submit(nap, 0.4), executor.submit(nap, 0.0), executor.submit(nap, 0.2)};
  std::vector<double> order;
  for (const auto& f : mpx::as_completed(fs, 10s)) order.push_back(f.result());
  CHECK(order == std::vector<double>{0.0, 0.2, 0.4});

  std::vector<mpx::Future<double>> slow{executor.submit(nap, 0.0), executor.submit(nap, 5.0)};
  auto it = mpx::as_completed(slow, 0.3s);
  CHECK(it.next().has_value());
  CHECK_THROWS_WITH(it.next(), Catch::Contains("1 (of 2) futures unfinished"));
}

// Python turns the futures into a set first: one future given several times is one future.
TEST_CASE("as_completed and wait yield a future given several times once", "[executor]") {
  mpx::ProcessPoolExecutor executor(2);
  auto quick = executor.submit(square, 3);
  auto slow = executor.submit(nap, 0.2);
  std::vector<mpx::Future<int>> repeated{quick, quick, quick};
  std::vector<int> got;
  for (const auto& f : mpx::as_completed(repeated, 10s)) got.push_back(f.result());
  CHECK(got == std::vector<int>{9});

  auto all = mpx::wait(repeated, 10s);
  CHECK(all.done.size() == 1);
  CHECK(all.not_done.empty());

  std::vector<mpx::Future<double>> mixed{slow, slow};
  auto pending = mpx::wait(mixed, 0.0s);
  CHECK(pending.done.size() + pending.not_done.size() == 1);
  auto first = mpx::wait(mixed, 10s, mpx::FIRST_COMPLETED);
  CHECK(first.done.size() == 1);
  CHECK(first.not_done.empty());
  std::size_t yielded = 0;
  for (const auto& f : mpx::as_completed(mixed, 10s)) yielded += f.done() ? 1 : 0;
  CHECK(yielded == 1);
}

TEST_CASE("shutdown: no new futures, cancel_futures cancels the queued ones", "[executor]") {
  mpx::ProcessPoolExecutor executor(1);
  auto running = executor.submit(nap, 0.3);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!running.running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  std::vector<mpx::Future<int>> queued;
  for (int i = 0; i < 20; ++i) queued.push_back(executor.submit(square, i));
  executor.shutdown(true, true);
  CHECK(running.result() == 0.3);
  // A worker may have taken a few ahead (they count as running, like Python's call queue); the rest are cancelled.
  int cancelled = 0;
  for (int i = 0; i < 20; ++i) {
    auto& f = queued[static_cast<std::size_t>(i)];
    if (f.cancelled()) {
      ++cancelled;
    } else {
      CHECK(f.result() == i * i);
    }
  }
  CHECK(cancelled >= 10);
  CHECK_THROWS_WITH(executor.submit(square, 1), Catch::Contains("after shutdown"));
}

TEST_CASE("an initializer that raises breaks the executor, as in Python", "[executor][fault]") {
  mpx::ProcessPoolExecutor executor(2, [] { throw std::invalid_argument("bad configuration"); });
  auto f = executor.submit(square, 3);
  CHECK_THROWS_AS(f.result(60s), mpx::BrokenProcessPool);
  CHECK_THROWS_AS(executor.submit(square, 4), mpx::BrokenProcessPool);
}

TEST_CASE("a dead worker: retried then WorkerLost by default, BrokenProcessPool as an option", "[executor][fault]") {
  {
    mpx::ExecutorOptions options;
    options.max_workers = 2;
    options.max_retries = 1;
    mpx::ProcessPoolExecutor executor(options);
    auto killer = executor.submit(die, 0);
    auto fine = executor.submit(square, 4);
    CHECK_THROWS_AS(killer.result(30s), mpx::WorkerLost);
    CHECK(fine.result(30s) == 16);
    CHECK(executor.submit(square, 5).result(30s) == 25);
  }
  {
    mpx::ExecutorOptions options;
    options.max_workers = 2;
    options.broken_on_worker_death = true;
    mpx::ProcessPoolExecutor executor(options);
    auto slow = executor.submit(nap, 5.0);
    auto killer = executor.submit(die, 0);
    CHECK_THROWS_AS(killer.result(30s), mpx::BrokenProcessPool);
    CHECK_THROWS_AS(slow.result(30s), mpx::BrokenProcessPool);
    CHECK_THROWS_AS(executor.submit(square, 1), mpx::BrokenProcessPool);
  }
}

TEST_CASE("an empty Future or AsyncResult raises ValueError instead of dereferencing null", "[executor][pool]") {
  mpx::Future<int> future;
  CHECK_THROWS_AS(future.done(), mpx::ValueError);
  CHECK_THROWS_AS(future.result(std::chrono::duration<double>(0)), mpx::ValueError);
  CHECK_THROWS_AS(future.exception(std::chrono::duration<double>(0)), mpx::ValueError);
  CHECK_THROWS_WITH(future.cancelled(), Catch::Contains("Future is empty"));
  mpx::FutureBase base;
  CHECK_THROWS_AS(base.done(), mpx::ValueError);
  mpx::AsyncResult<int> result;
  CHECK_THROWS_AS(result.ready(), mpx::ValueError);
  CHECK_THROWS_AS(result.wait(std::chrono::duration<double>(0)), mpx::ValueError);
  CHECK_THROWS_WITH(result.get(std::chrono::duration<double>(0)), Catch::Contains("AsyncResult is empty"));
}
