// Conformance: the behaviours CPython's own tests check (Lib/test/_test_multiprocessing.py, test_concurrent_futures),
// through mpx's public API only. One TEST_CASE per CPython test, named after it.
//
// This file: multiprocessing.Pool and AsyncResult (_TestPool, _TestPoolWorkerErrors, _TestPoolWorkerLifetime,
// _TestInitializers.test_pool_initializer). Python's ValueError maps to std::invalid_argument in a task, KeyError to
// std::out_of_range; a task's exception reaches the caller as mpx::RemoteError naming its C++ type.
#include <catch2/catch.hpp>
#include <mpx/mpx.hpp>

#include "support.hpp"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <sys/wait.h>

using namespace std::chrono_literals;

namespace {

using conformance::wait_until;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

mpx::Pool make_pool(int processes, std::optional<mpx::StartMethod> method = std::nullopt,
                    std::size_t maxtasksperchild = 0) {
  mpx::PoolOptions options;
  options.processes = processes;
  options.method = method;
  options.maxtasksperchild = maxtasksperchild;
  return mpx::Pool(options);
}

std::vector<int> squares(int n) {
  std::vector<int> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i * i;
  return out;
}

std::vector<int> iota_vector(int n) {
  std::vector<int> out(static_cast<std::size_t>(n));
  std::iota(out.begin(), out.end(), 0);
  return out;
}

// ---- the tasks (CPython's helpers of the same names) ----

int sqr(int x) { return x * x; }

// sqr(x, wait): the wait is the task's work, not synchronization.
int sqr_after(int x, double wait) {
  std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  return x * x;
}

// sqr(x, wait, event): returns when `event` is set or `wait` seconds passed.
int sqr_when(int x, mpx::Event event, double wait) {
  (void)event.wait(std::chrono::duration<double>(wait));
  return x * x;
}

int mul(int x, int y) { return x * y; }

// Python's int(str): ValueError (here std::invalid_argument) for "a".
int to_int(std::string text) {
  std::size_t used = 0;
  const int value = std::stoi(text, &used);
  if (used != text.size()) throw std::invalid_argument("invalid literal for int(): '" + text + "'");
  return value;
}

int raise_large_value_error(double wait) {
  std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  throw std::invalid_argument(std::string(1024 * 1024, 'x'));
}

int raise_runtime_error_123() { throw std::runtime_error("123"); }
int raise_runtime_error_foo() { throw std::runtime_error("foo"); }
int raising() { throw std::out_of_range("key"); }

// Tells the test it runs, then keeps its worker until `release` (or a minute) passes.
bool started_then_hold(mpx::Event started, mpx::Event release) {
  started.set();
  return release.wait(60s);
}

// Python's unpickleable_result: a result whose encoding fails at run time (mpx's compile-time check passes: it has
// an encoder, which throws).
struct Unencodable {
  template <class Packer>
  void msgpack_pack(Packer&) const {
    throw std::runtime_error("an Unencodable cannot be encoded");
  }
  void msgpack_unpack(const msgpack::object&) {}
};
Unencodable unencodable_result() { return {}; }

void count_initializer(mpx::Queue<int> initialized) { initialized.put(1); }

struct SayWhenError : std::invalid_argument {
  SayWhenError() : std::invalid_argument("Somebody said when") {}
};

// Python's exception_throwing_generator(total, when): 0, 1, ... then SayWhenError at `when` (-1: at once).
auto exception_throwing_range(int total, int when) {
  return std::views::iota(0, total) | std::views::transform([when](int i) {
           if (when == -1 || i == when) throw SayWhenError();
           return i;
         });
}

}  // namespace

// ---------------------------------------------------------------- _TestPool

TEST_CASE("_TestPool.test_apply", "[conformance][pool]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  auto pool = make_pool(2, method);
  CHECK(pool.apply(sqr, 5) == 25);
  CHECK(pool.apply(mul, 3, 4) == 12);
  // Python's keyword form (apply(sqr, (), {'x': 3})) has no C++ counterpart: arguments are positional.
}

TEST_CASE("_TestPool.test_map", "[conformance][pool]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  auto pool = make_pool(4, method);
  CHECK(pool.map(sqr, iota_vector(10)) == squares(10));
  CHECK(pool.map(sqr, iota_vector(100), 20) == squares(100));
}

TEST_CASE("_TestPool.test_starmap", "[conformance][pool]") {
  auto pool = make_pool(4);
  for (int n : {10, 100}) {
    std::vector<std::tuple<int, int>> tuples;
    std::vector<int> expected;
    for (int i = 0; i < n; ++i) {
      tuples.emplace_back(i, n - 1 - i);
      expected.push_back(i * (n - 1 - i));
    }
    if (n == 10) {
      CHECK(pool.starmap(mul, tuples) == expected);
    } else {
      CHECK(pool.starmap(mul, tuples, 20) == expected);
    }
  }
}

TEST_CASE("_TestPool.test_starmap_async", "[conformance][pool]") {
  auto pool = make_pool(4);
  std::vector<std::tuple<int, int>> tuples;
  std::vector<int> expected;
  for (int i = 0; i < 100; ++i) {
    tuples.emplace_back(i, 99 - i);
    expected.push_back(i * (99 - i));
  }
  CHECK(pool.starmap_async(mul, tuples).get(60s) == expected);
}

TEST_CASE("_TestPool.test_map_async", "[conformance][pool]") {
  auto pool = make_pool(4);
  CHECK(pool.map_async(sqr, iota_vector(10)).get(60s) == squares(10));
}

TEST_CASE("_TestPool.test_map_async_callbacks", "[conformance][pool]") {
  auto pool = make_pool(2);
  std::mutex mutex;
  std::vector<std::vector<int>> results;
  std::vector<std::string> errors;  // the error's type name
  auto callback = [&](const std::vector<int>& r) {
    std::lock_guard lock(mutex);
    results.push_back(r);
  };
  auto error_callback = [&](const std::exception& e) {
    std::lock_guard lock(mutex);
    const auto* remote = dynamic_cast<const mpx::RemoteError*>(&e);
    errors.push_back(remote ? remote->type() : std::string("not a RemoteError: ") + e.what());
  };
  // As in Python, the callbacks have run when wait() returns.
  CHECK(pool.map_async(to_int, std::vector<std::string>{"1"}, std::nullopt, callback, error_callback).wait(60s));
  {
    std::lock_guard lock(mutex);
    REQUIRE(results.size() == 1);
    CHECK(results[0] == std::vector<int>{1});
    CHECK(errors.empty());
  }
  CHECK(pool.map_async(to_int, std::vector<std::string>{"a"}, std::nullopt, callback, error_callback).wait(60s));
  std::lock_guard lock(mutex);
  CHECK(results.size() == 1);
  REQUIRE(errors.size() == 1);
  CHECK_THAT(errors[0], Catch::Contains("invalid_argument"));
}

TEST_CASE("_TestPool.test_map_chunksize", "[conformance][pool]") {
  auto pool = make_pool(2);
  // An empty input with a chunksize must not stall.
  CHECK(pool.map_async(sqr, std::vector<int>{}, 1).get(1s).empty());
}

TEST_CASE("_TestPool.test_map_handle_iterable_exception", "[conformance][pool]") {
  auto pool = make_pool(2);
  // The input's own exception reaches the caller as it is (not as a RemoteError), and the pool stays usable.
  CHECK_THROWS_AS(pool.map(sqr, exception_throwing_range(1, -1), 1), SayWhenError);
  CHECK_THROWS_AS(pool.map(sqr, exception_throwing_range(1, -1), 1), SayWhenError);  // again: reentrant
  CHECK_THROWS_AS(pool.map(sqr, exception_throwing_range(10, 3), 1), SayWhenError);
  CHECK(pool.map(sqr, iota_vector(5), 1) == squares(5));
}

TEST_CASE("_TestPool.test_async", "[conformance][pool]") {
  auto pool = make_pool(2);
  const auto start = Clock::now();
  auto result = pool.apply_async(sqr_after, 7, 0.1);
  CHECK(result.get(60s) == 49);
  CHECK(seconds_since(start) >= 0.09);
  CHECK(result.ready());
  CHECK(result.successful());
}

TEST_CASE("_TestPool.test_async_timeout", "[conformance][pool]") {
  auto pool = make_pool(3);
  mpx::Event never;
  auto result = pool.apply_async(sqr_when, 6, never, 60.0);
  // Not ready: successful() raises ValueError, wait(timeout) returns false, get(timeout) raises TimeoutError.
  CHECK_FALSE(result.ready());
  CHECK_THROWS_AS(result.successful(), mpx::ValueError);
  CHECK_FALSE(result.wait(0.05s));
  const auto start = Clock::now();
  CHECK_THROWS_AS(result.get(0.2s), mpx::TimeoutError);
  const double elapsed = seconds_since(start);
  CHECK(elapsed >= 0.15);
  CHECK(elapsed < 30.0);
  never.set();
  CHECK(result.wait(60s));
  CHECK(result.successful());
  CHECK(result.get() == 36);
  pool.terminate();
  pool.join();
}

TEST_CASE("_TestPool.test_imap", "[conformance][pool]") {
  auto pool = make_pool(4);
  {
    std::vector<int> all;
    for (int y : pool.imap(sqr, iota_vector(10))) all.push_back(y);
    CHECK(all == squares(10));
  }
  {
    auto it = pool.imap(sqr, iota_vector(10));
    for (int i = 0; i < 10; ++i) CHECK(it.next(60s) == i * i);
    CHECK_FALSE(it.next(60s).has_value());  // StopIteration
  }
  {
    auto it = pool.imap(sqr, iota_vector(1000), 100);
    for (int i = 0; i < 1000; ++i) REQUIRE(it.next(60s) == i * i);
    CHECK_FALSE(it.next(60s).has_value());
  }
}

TEST_CASE("_TestPool.test_imap_handle_iterable_exception", "[conformance][pool]") {
  auto pool = make_pool(4);
  // (total, when, chunksize, results before the error): twice at once (reentrant), then after 3 results, then with
  // chunks.
  // mpx differs: the items of the failing chunk read before the error still run, so every result before item `when`
  // is yielded (Python drops the whole failing chunk: 6 results for chunksize 2, 4 for chunksize 4).
  for (auto [total, when, chunksize, before] :
       {std::tuple{1, -1, 1, 0}, std::tuple{1, -1, 1, 0}, std::tuple{10, 3, 1, 3}, std::tuple{20, 7, 2, 7},
        std::tuple{20, 7, 4, 7}}) {
    INFO("total " << total << ", when " << when << ", chunksize " << chunksize);
    auto it = pool.imap(sqr, exception_throwing_range(total, when), static_cast<std::size_t>(chunksize));
    for (int i = 0; i < before; ++i) CHECK(it.next(60s) == i * i);
    CHECK_THROWS_AS(it.next(60s), SayWhenError);
  }
}

TEST_CASE("_TestPool.test_imap_unordered", "[conformance][pool]") {
  auto pool = make_pool(4);
  for (auto [n, chunksize] : {std::pair{10, 1}, std::pair{1000, 100}}) {
    std::vector<int> all;
    for (int y : pool.imap_unordered(sqr, iota_vector(n), static_cast<std::size_t>(chunksize))) all.push_back(y);
    std::sort(all.begin(), all.end());
    CHECK(all == squares(n));
  }
}

TEST_CASE("_TestPool.test_imap_unordered_handle_iterable_exception", "[conformance][pool]") {
  auto pool = make_pool(4);
  for (int attempt = 0; attempt < 2; ++attempt) {  // twice: reentrant
    auto it = pool.imap_unordered(sqr, exception_throwing_range(1, -1), 1);
    CHECK_THROWS_AS(it.next(60s), SayWhenError);
  }
  // Completion order makes the point of failure unpredictable: every value before it is one of the expected, and
  // the error does come.
  for (auto [total, when, chunksize] : {std::tuple{10, 3, 1}, std::tuple{20, 7, 2}}) {
    auto it = pool.imap_unordered(sqr, exception_throwing_range(total, when), static_cast<std::size_t>(chunksize));
    std::multiset<int> expected;
    for (int i = 0; i < total; ++i) expected.insert(i * i);
    bool raised = false;
    try {
      for (int i = 0; i < total; ++i) {
        auto value = it.next(60s);
        REQUIRE(value.has_value());
        auto found = expected.find(*value);
        REQUIRE(found != expected.end());
        expected.erase(found);
      }
    } catch (const SayWhenError&) {
      raised = true;
    }
    CHECK(raised);
  }
}

TEST_CASE("_TestPool.test_make_pool", "[conformance][pool]") {
  CHECK_THROWS_AS(make_pool(-1), mpx::ValueError);
  CHECK_THROWS_AS(make_pool(0), mpx::ValueError);
  auto pool = make_pool(3);
  CHECK(pool.processes() == 3);
  CHECK(pool.pids().size() == 3);
  pool.close();
  pool.join();
}

TEST_CASE("_TestPool.test_terminate", "[conformance][pool]") {
  auto pool = make_pool(3);
  mpx::Event started;
  mpx::Event never;
  // Tasks that take "forever": terminate() must not wait for them.
  std::vector<std::tuple<mpx::Event, mpx::Event>> args(10'000, {started, never});
  auto result = pool.starmap_async(started_then_hold, args, 1);
  REQUIRE(started.wait(60s));
  const auto start = Clock::now();
  pool.terminate();
  pool.join();
  CHECK(seconds_since(start) < 30.0);
  CHECK(pool.pids().empty());
  // mpx differs: Python leaves the results of a terminated pool waiting for ever; mpx fails them with CancelledError.
  CHECK_THROWS_AS(result.get(60s), mpx::CancelledError);
}

TEST_CASE("_TestPool.test_empty_iterable", "[conformance][pool]") {
  auto pool = make_pool(1);
  CHECK(pool.map(sqr, std::vector<int>{}).empty());
  CHECK(pool.imap(sqr, std::vector<int>{}).next(60s) == std::nullopt);
  CHECK(pool.imap_unordered(sqr, std::vector<int>{}).next(60s) == std::nullopt);
  CHECK(pool.map_async(sqr, std::vector<int>{}).get(60s).empty());
  pool.close();
  pool.join();
}

TEST_CASE("_TestPool.test_context", "[conformance][pool]") {
  auto pool = make_pool(2);
  CHECK(pool.map_async(sqr, iota_vector(10)).get(60s) == squares(10));
  pool.terminate();  // what leaving Python's `with Pool(2) as p:` does (and mpx's destructor)
  pool.join();
  CHECK_THROWS_AS(pool.map_async(sqr, iota_vector(10)), mpx::ValueError);
}

TEST_CASE("_TestPool.test_traceback", "[conformance][pool]") {
  auto pool = make_pool(1);
  const auto worker = pool.pids().at(0);
  // mpx differs: there is no remote traceback; the RemoteError carries the exception's type, message and the worker's
  // pid instead.
  try {
    pool.apply(raise_runtime_error_123);
    FAIL("expected the task's runtime_error");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("runtime_error"));
    CHECK(e.message() == "123");
    CHECK(e.pid() == worker);
  }
  // An exception of the caller's own input is not made a remote one.
  CHECK_THROWS_AS(pool.map(sqr, exception_throwing_range(1, -1), 1), SayWhenError);
  pool.terminate();
  pool.join();
}

TEST_CASE("_TestPool.test_wrapped_exception", "[conformance][pool]") {
  auto pool = make_pool(1);
  // mpx differs: C++ cannot rethrow the worker's exception type, so it arrives as RemoteError naming that type.
  try {
    pool.apply(raise_runtime_error_foo);
    FAIL("expected the task's runtime_error");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("runtime_error"));
    CHECK(e.message() == "foo");
  }
  pool.terminate();
  pool.join();
}

TEST_CASE("_TestPool.test_map_no_failfast", "[conformance][pool]") {
  // A map whose tasks raise large errors must not make close() + join() deadlock.
  auto pool = make_pool(2);
  try {
    pool.map(raise_large_value_error, std::vector<double>{0.0, 0.1});
    FAIL("expected the tasks' invalid_argument");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("invalid_argument"));
    CHECK(e.message().size() == 1024 * 1024);
  }
  pool.close();
  pool.join();
  CHECK(pool.pids().empty());
}

TEST_CASE("_TestPool.test_enter", "[conformance][pool]") {
  auto pool = make_pool(1);
  pool.terminate();  // leaving Python's `with pool:`
  // mpx has no __enter__: a submission is what meets a pool that no longer runs; Python raises ValueError.
  CHECK_THROWS_AS(pool.apply_async(sqr, 1), mpx::ValueError);
  pool.join();
}

// ---------------------------------------------------------------- _TestPoolWorkerErrors

TEST_CASE("_TestPoolWorkerErrors.test_async_error_callback", "[conformance][pool]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  auto pool = make_pool(2, method);
  std::mutex mutex;
  std::optional<std::string> seen;  // the type the error callback saw
  auto result = pool.apply_async(raising, std::tuple{}, nullptr, [&](const std::exception& e) {
    std::lock_guard lock(mutex);
    const auto* remote = dynamic_cast<const mpx::RemoteError*>(&e);
    seen = remote ? remote->type() : std::string("not a RemoteError");
  });
  CHECK_THROWS_AS(result.get(60s), mpx::RemoteError);
  CHECK_FALSE(result.successful());
  {
    std::lock_guard lock(mutex);
    REQUIRE(seen.has_value());
    CHECK_THAT(*seen, Catch::Contains("out_of_range"));
  }
  pool.close();
  pool.join();
}

TEST_CASE("_TestPoolWorkerErrors.test_unpickleable_result", "[conformance][pool]") {
  auto pool = make_pool(2);
  const auto workers = pool.pids();
  // A result that cannot be encoded fails its own task only: no worker is lost over it.
  for (int i = 0; i < 5; ++i) {
    std::mutex mutex;
    bool wrapped = false;
    auto result = pool.apply_async(unencodable_result, std::tuple{}, nullptr, [&](const std::exception& e) {
      std::lock_guard lock(mutex);
      wrapped = dynamic_cast<const mpx::SerializationError*>(&e) != nullptr;
    });
    CHECK_THROWS_AS(result.get(60s), mpx::SerializationError);
    std::lock_guard lock(mutex);
    CHECK(wrapped);
  }
  auto now = pool.pids();
  std::sort(now.begin(), now.end());
  auto before = workers;
  std::sort(before.begin(), before.end());
  CHECK(now == before);
  CHECK(pool.apply(sqr, 4) == 16);
  pool.close();
  pool.join();
}

// ---------------------------------------------------------------- _TestPoolWorkerLifetime

TEST_CASE("_TestPoolWorkerLifetime.test_pool_worker_lifetime", "[conformance][pool]") {
  auto pool = make_pool(3, std::nullopt, 10);
  REQUIRE(pool.pids().size() == 3);
  auto original = pool.pids();
  std::sort(original.begin(), original.end());
  std::vector<mpx::AsyncResult<int>> results;
  for (int i = 0; i < 100; ++i) results.push_back(pool.apply_async(sqr, i));
  for (int j = 0; j < 100; ++j) CHECK(results[static_cast<std::size_t>(j)].get(60s) == j * j);
  // Python calls _repopulate_pool(); mpx replaces a worker that used up its tasks by itself.
  std::vector<pid_t> final_pids;
  CHECK(wait_until([&] {
    final_pids = pool.pids();
    std::sort(final_pids.begin(), final_pids.end());
    return final_pids.size() == 3 && final_pids != original;
  }));
  CHECK(std::find(final_pids.begin(), final_pids.end(), 0) == final_pids.end());
  pool.close();
  pool.join();
}

TEST_CASE("_TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close", "[conformance][pool]") {
  // Closing a pool whose workers have a limited lifetime before its tasks are done must not make join() hang.
  auto pool = make_pool(3, std::nullopt, 1);
  std::vector<mpx::AsyncResult<int>> results;
  for (int i = 0; i < 6; ++i) results.push_back(pool.apply_async(sqr_after, i, 0.3));
  pool.close();
  pool.join();
  for (int j = 0; j < 6; ++j) CHECK(results[static_cast<std::size_t>(j)].get(1s) == j * j);
}

TEST_CASE("_TestPoolWorkerLifetime.test_pool_maxtasksperchild_invalid", "[conformance][pool]") {
  // mpx differs: maxtasksperchild is a std::size_t, so -1, 0.5 and "12" do not compile, and 0 is not invalid: it
  // means "no limit" (the default), so the workers stay.
  auto pool = make_pool(2, std::nullopt, 0);
  auto before = pool.pids();
  std::sort(before.begin(), before.end());
  CHECK(pool.map(sqr, iota_vector(40), 1) == squares(40));
  auto after = pool.pids();
  std::sort(after.begin(), after.end());
  CHECK(after == before);
  pool.close();
  pool.join();
}

namespace {
std::optional<mpx::Pool>& program_pool() {
  static std::optional<mpx::Pool> pool;  // lives until the program's end, like Python's module-level object
  return pool;
}
}  // namespace

// Run in a session of its own: a Pool still alive when the program ends.
TEST_CASE("conformance pool: a program ending with a live pool", "[.pool-at-exit]") {
  program_pool().emplace(make_pool(1));
  std::vector<double> xs(10);
  std::iota(xs.begin(), xs.end(), 0.0);
  CHECK(program_pool()->map([](double x) { return x; }, xs) == xs);
}

// A Pool still alive when main() returns is terminated by ~Pool after the main thread's channel is gone, and the
// program still ends normally.
TEST_CASE("_TestPoolWorkerLifetime.test_worker_finalization_via_atexit_handler_of_multiprocessing",
          "[conformance][pool]") {
  const auto status = conformance::run_program("conformance pool: a program ending with a live pool", {}, 60s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

// ---------------------------------------------------------------- _TestInitializers

TEST_CASE("_TestInitializers.test_pool_initializer", "[conformance][pool]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::Queue<int> initialized;
  mpx::PoolOptions options;
  options.processes = 1;
  options.method = method;
  options.initializer = mpx::bind(count_initializer, initialized);
  mpx::Pool pool(options);
  CHECK(initialized.get(true, 60s) == 1);
  pool.close();
  pool.join();
  CHECK_THROWS_AS(initialized.get(false), mpx::Empty);  // one worker, one initialization
  // Python's Pool(initializer=1) raises TypeError; in mpx a non-callable initializer does not compile.
}
