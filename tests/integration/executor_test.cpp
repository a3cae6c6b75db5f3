// ProcessPoolExecutor with real worker processes: submit and Future, map with timeout, cancel, as_completed, wait,
// shutdown, and both ways of handling a dead worker.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
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
  CHECK(executor.map(square, std::vector<int>{1, 2, 3, 4}) == std::vector<int>{1, 4, 9, 16});
  CHECK(executor.map(square, std::views::iota(0, 100), 5s, 10).size() == 100);
  CHECK_THROWS_AS(executor.map(nap, std::vector<double>{2.0, 2.0}, 0.1s), mpx::TimeoutError);
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
