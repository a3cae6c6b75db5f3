// Conformance: the behaviours CPython's own tests check (Lib/test/_test_multiprocessing.py, test_concurrent_futures),
// through mpx's public API only. One TEST_CASE per CPython test, named after it.
//
// This file: ProcessPoolExecutor, Future, wait and as_completed (Lib/test/test_concurrent_futures/). Test cases are
// named after CPython's mixin classes (ExecutorTest, WaitTests, ...), which CPython instantiates per executor type.
// Python builds futures in a given state by hand (PENDING_FUTURE, SUCCESSFUL_FUTURE...); mpx's futures come only from
// an executor, so StandingFutures below makes each state with real tasks. Python's OSError maps to
// std::system_error in a task, ValueError to std::invalid_argument, ZeroDivisionError to std::domain_error.
#include <catch2/catch.hpp>
#include <mpx/mpx.hpp>

#include "support.hpp"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

using conformance::wait_until;
using Clock = std::chrono::steady_clock;
using Futures = std::vector<mpx::Future<int>>;

mpx::ExecutorOptions options(int workers, std::optional<mpx::StartMethod> method = std::nullopt) {
  mpx::ExecutorOptions o;
  o.max_workers = workers;
  o.method = method;
  return o;
}

mpx::ExecutorOptions breaking_options(int workers, std::optional<mpx::StartMethod> method = std::nullopt) {
  auto o = options(workers, method);
  o.broken_on_worker_death = true;  // Python's behaviour: a dead worker breaks the executor
  return o;
}

// The futures as a set of identities, to compare as Python compares sets of futures.
std::set<const void*> ids(const Futures& futures) {
  std::set<const void*> out;
  for (const auto& f : futures) out.insert(f.core().get());
  return out;
}

bool dead(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

// fd 2 of this process goes to a file while it lives (callbacks that raise are reported on stderr).
class CapturedStderr {
 public:
  CapturedStderr()
      : path_(std::filesystem::temp_directory_path() /
              ("mpx-conformance-stderr-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))) {
    std::cerr.flush();
    saved_ = ::dup(2);
    const int fd = ::open(path_.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~CapturedStderr() {
    restore();
    std::filesystem::remove(path_);
  }
  CapturedStderr(const CapturedStderr&) = delete;
  CapturedStderr& operator=(const CapturedStderr&) = delete;
  // Stops capturing; what was written.
  std::string text() {
    restore();
    std::ifstream in(path_);
    std::stringstream all;
    all << in.rdbuf();
    return all.str();
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::cerr.flush();
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  static inline int counter_ = 0;
  std::filesystem::path path_;
  int saved_ = -1;
};

// Python's list(iterable): drains a lazy range (Executor::map's results) into a vector.
template <class Range>
auto list(Range&& range) {
  return std::vector(range.begin(), range.end());
}

// ---- the tasks ----

int answer() { return 42; }
int mul(int x, int y) { return x * y; }
int power(int x, int y) { return static_cast<int>(std::lround(std::pow(x, y))); }
double power_double(int x, int y) { return std::pow(x, y); }
int abs_value(int x) { return x < 0 ? -x : x; }
std::string to_str(int x) { return std::to_string(x); }
int worker_pid() { return static_cast<int>(::getpid()); }

int divide(int x, int y) {
  if (y == 0) throw std::domain_error("integer division or modulo by zero");
  return x / y;
}
std::tuple<int, int> divmod(int x, int y) {
  if (y == 0) throw std::domain_error("integer division or modulo by zero");
  return {x / y, x % y};
}

int raise_os_error() { throw std::system_error(std::make_error_code(std::errc::io_error)); }
int raise_test() { throw std::runtime_error("test"); }
int raise_runtime_error_123() { throw std::runtime_error("123"); }

// event.wait(): keeps its worker until `release` is set (or half a minute passes).
int hold(mpx::Event release) { return release.wait(30s) ? 1 : 0; }
int hold_then(int value, mpx::Event release) {
  (void)release.wait(30s);
  return value;
}
// wait_and_raise(e)
int wait_and_raise(mpx::Event release) {
  (void)release.wait(30s);
  throw std::runtime_error("this is an exception");
}
int hold_then_raise(mpx::Event release) {
  (void)release.wait(30s);
  throw std::runtime_error("test");
}
// time.sleep(0) for 0, a hold for anything else.
int sleep_or_hold(int seconds, mpx::Event release) {
  if (seconds != 0) (void)release.wait(30s);
  return 0;
}
// The task's work is the sleep.
int nap(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return 0;
}
int acquire(mpx::Semaphore semaphore) { return semaphore.acquire(true, 30s) ? 1 : 0; }
int report_wait_return(mpx::Queue<int> started, mpx::Event gate, int value) {
  started.put(value);
  (void)gate.wait(30s);
  return value;
}
int good_task(int n) {
  std::this_thread::sleep_for(std::chrono::duration<double>(0.1 * n));
  return n;
}
int failing_task(int) { throw std::invalid_argument("failing task"); }

// Python's _crash(): a segfault (without a core file).
int crash(double delay) {
  std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::raise(SIGSEGV);
  return 0;
}
int crash_with_data(std::string) { return crash(0.0); }
int exit_abruptly(int code) { ::_exit(code); }
int exit_normally() { std::exit(1); }

std::string initializer_status = "uninitialized";
void init(std::string status) { initializer_status = std::move(status); }
std::string get_init_status() { return initializer_status; }
void init_fail() { throw std::invalid_argument("error in initializer"); }

void sleep_and_write(double seconds, std::string path) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  std::ofstream(path) << "apple";
}

// Futures in each of Python's states, made with real tasks on a one-worker executor (whose worker `running` keeps
// until the fixture ends, so `pending` stays queued).
struct StandingFutures {
  mpx::ProcessPoolExecutor executor{1};
  mpx::Event release;
  mpx::Future<int> successful, failed, running, pending, cancelled, cancelled_notified;

  StandingFutures() {
    successful = executor.submit(answer);
    REQUIRE(successful.result(60s) == 42);
    failed = executor.submit(raise_os_error);
    REQUIRE(failed.exception(60s) != nullptr);
    running = executor.submit(hold, release);
    REQUIRE(wait_until([&] { return running.running(); }));
    pending = executor.submit(answer);
    cancelled = executor.submit(answer);
    REQUIRE(cancelled.cancel());
    cancelled_notified = executor.submit(answer);
    REQUIRE(cancelled_notified.cancel());
  }
  ~StandingFutures() { release.set(); }
  StandingFutures(const StandingFutures&) = delete;
  StandingFutures& operator=(const StandingFutures&) = delete;
};

}  // namespace

// ---------------------------------------------------------------- ExecutorTest

TEST_CASE("ExecutorTest.test_submit", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::ProcessPoolExecutor executor(options(2, method));
  CHECK(executor.submit(power, 2, 8).result(60s) == 256);
}

TEST_CASE("ExecutorTest.test_map", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::ProcessPoolExecutor executor(options(2, method));
  std::vector<double> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(std::pow(i, i));
  CHECK(list(executor.map(power_double, std::views::iota(0, 10), std::views::iota(0, 10))) == expected);
  CHECK(list(executor.map(power_double, std::views::iota(0, 10), std::views::iota(0, 10), std::nullopt, 3)) ==
        expected);
}

TEST_CASE("ExecutorTest.test_map_exception", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  auto i = executor.map(divmod, std::vector{1, 1, 1, 1}, std::vector{2, 3, 0, 5});
  CHECK(i.next() == std::tuple{0, 1});
  CHECK(i.next() == std::tuple{0, 1});
  try {
    (void)i.next();
    FAIL("expected the division by zero");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("domain_error"));
  }
}

TEST_CASE("ExecutorTest.test_map_timeout", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event release;
  std::vector<int> results;
  const auto start = Clock::now();
  try {
    for (int r : executor.map(sleep_or_hold, std::vector{0, 0, 6}, std::vector(3, release), 0.5s)) results.push_back(r);
    FAIL("expected a TimeoutError");
  } catch (const mpx::TimeoutError&) {
  }
  CHECK(std::chrono::duration<double>(Clock::now() - start).count() >= 0.45);
  CHECK(results == std::vector{0, 0});
  release.set();
}

TEST_CASE("ExecutorTest.test_shutdown_race_issue12456", "[conformance][executor]") {
  // Shutting down right after a map one item longer than the workers must not block.
  mpx::ProcessPoolExecutor executor(2);
  CHECK(list(executor.map(to_str, std::vector<int>(3, 2))) == std::vector<std::string>(3, "2"));
  executor.shutdown();
  CHECK(executor.pool().pids().empty());
}

TEST_CASE("ExecutorTest.test_max_workers_negative", "[conformance][executor]") {
  for (int number : {0, -1}) {
    CHECK_THROWS_MATCHES(mpx::ProcessPoolExecutor(number), mpx::ValueError,
                         Catch::Matchers::Message("mpx: max_workers must be greater than 0"));
  }
}

// ---------------------------------------------------------------- ProcessPoolExecutorTest

TEST_CASE("ProcessPoolExecutorTest.test_killed_child", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::Event release;
  {
    mpx::ProcessPoolExecutor executor(breaking_options(2, method));
    auto future = executor.submit(hold, release);
    const auto workers = executor.pool().pids();
    REQUIRE(workers.size() == 2);
    REQUIRE(::kill(workers[0], SIGTERM) == 0);  // p.terminate() on one of the processes
    CHECK_THROWS_AS(future.result(60s), mpx::BrokenProcessPool);
    CHECK_THROWS_AS(executor.submit(power, 2, 8), mpx::BrokenProcessPool);
  }
  {
    // mpx differs: without broken_on_worker_death (the default), a killed worker's task is retried on a fresh one
    // and the executor stays usable.
    mpx::ProcessPoolExecutor executor(options(2, method));
    auto future = executor.submit(hold_then, 7, release);
    REQUIRE(wait_until([&] { return future.running(); }));
    for (auto pid : executor.pool().pids()) ::kill(pid, SIGKILL);
    release.set();
    CHECK(future.result(60s) == 7);
    CHECK(executor.submit(power, 2, 8).result(60s) == 256);
  }
}

TEST_CASE("ProcessPoolExecutorTest.test_broken_process_pool_traceback", "[conformance][executor]") {
  // Every pending future fails with BrokenProcessPool (C++ exceptions carry no traceback to accumulate).
  mpx::Event release;
  mpx::ProcessPoolExecutor executor(breaking_options(2));
  Futures futures;
  for (int i = 0; i < 3; ++i) futures.push_back(executor.submit(hold, release));
  REQUIRE(::kill(executor.pool().pids().at(0), SIGTERM) == 0);
  for (auto& f : futures) CHECK_THROWS_AS(f.result(60s), mpx::BrokenProcessPool);
  release.set();
}

TEST_CASE("ProcessPoolExecutorTest.test_map_chunksize", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  const auto xs = std::views::iota(0, 40);
  std::vector<double> expected;
  for (int i : xs) expected.push_back(std::pow(i, i));
  for (std::size_t chunksize : {6, 50, 40}) CHECK(list(executor.map(power_double, xs, xs, 60s, chunksize)) == expected);
  // mpx differs: chunksize is unsigned, so the invalid value is 0, not -1.
  CHECK_THROWS_AS(executor.map(power_double, xs, xs, 60s, 0), mpx::ValueError);
}

TEST_CASE("ProcessPoolExecutorTest.test_traceback", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  auto future = executor.submit(raise_runtime_error_123);
  // mpx differs: no remote traceback; the RemoteError names the exception's type, its message and the worker.
  try {
    (void)future.result(60s);
    FAIL("expected the task's runtime_error");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("runtime_error"));
    CHECK(e.message() == "123");
    const auto workers = executor.pool().pids();
    CHECK(std::find(workers.begin(), workers.end(), e.pid()) != workers.end());
  }
}

TEST_CASE("ProcessPoolExecutorTest.test_traceback_when_child_process_terminates_abruptly", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(breaking_options(1));
  auto future = executor.submit(exit_abruptly, 99);
  try {
    (void)future.result(60s);
    FAIL("expected BrokenProcessPool");
  } catch (const mpx::BrokenProcessPool& e) {
    CHECK_THAT(e.what(), Catch::Contains("terminated abruptly") && Catch::Contains("exit code 99"));
  }
}

TEST_CASE("ProcessPoolExecutorTest.test_saturation", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(3);
  mpx::Semaphore semaphore(0);
  Futures futures;
  for (int i = 0; i < 15 * 3; ++i) futures.push_back(executor.submit(acquire, semaphore));
  CHECK(executor.pool().pids().size() == 3);  // never more processes than max_workers
  for (int i = 0; i < 15 * 3; ++i) semaphore.release();
  for (auto& f : futures) CHECK(f.result(60s) == 1);
}

TEST_CASE("ProcessPoolExecutorTest.test_max_tasks_per_child", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  // mpx differs: Python refuses max_tasks_per_child with the fork start method (ValueError); mpx allows it.
  auto o = options(1, method);
  o.max_tasks_per_child = 3;
  mpx::ProcessPoolExecutor executor(o);
  const int original = executor.submit(worker_pid).result(60s);
  CHECK(executor.submit(worker_pid).result(60s) == original);  // the worker is reused
  CHECK(executor.pool().pids().size() == 1);
  CHECK(executor.submit(worker_pid).result(60s) == original);
  // The fourth task runs in a new worker; the old one was reaped.
  const int replacement = executor.submit(worker_pid).result(60s);
  CHECK(replacement != original);
  CHECK(wait_until([&] { return executor.pool().pids().size() == 1; }));
  executor.shutdown();
}

TEST_CASE("ProcessPoolExecutorTest.test_max_tasks_per_child_pending_tasks_gh115634", "[conformance][executor]") {
  // Workers that reach their task limit while a backlog is queued are replaced, and the backlog runs.
  for (auto [workers, max_tasks, tasks] : {std::tuple{1, 2, 6}, std::tuple{2, 2, 8}}) {
    auto o = options(workers);
    o.max_tasks_per_child = static_cast<std::size_t>(max_tasks);
    mpx::ProcessPoolExecutor executor(o);
    Futures futures;
    for (int i = 0; i < tasks; ++i) futures.push_back(executor.submit(mul, i, 2));
    for (int i = 0; i < tasks; ++i) CHECK(futures[static_cast<std::size_t>(i)].result(60s) == i * 2);
    executor.shutdown(true, true);
  }
}

TEST_CASE("ProcessPoolExecutorTest.test_shutdown_no_wait_max_tasks_gh119592", "[conformance][executor]") {
  // shutdown(wait=false) while a worker is in its last task: it is still replaced and the queued work runs.
  mpx::Queue<int> started;
  mpx::Event gate;
  auto o = options(1);
  o.max_tasks_per_child = 1;
  mpx::ProcessPoolExecutor executor(o);
  Futures futures;
  for (int i = 0; i < 3; ++i) futures.push_back(executor.submit(report_wait_return, started, gate, i));
  CHECK(started.get(true, 60s) == 0);
  executor.shutdown(false);
  gate.set();
  for (int i = 0; i < 3; ++i) CHECK(futures[static_cast<std::size_t>(i)].result(60s) == i);
}

TEST_CASE("ProcessPoolExecutorTest.test_max_tasks_early_shutdown", "[conformance][executor]") {
  auto o = options(3);
  o.max_tasks_per_child = 1;
  mpx::ProcessPoolExecutor executor(o);
  Futures futures;
  for (int i = 0; i < 6; ++i) futures.push_back(executor.submit(mul, i, i));
  executor.shutdown();
  for (int i = 0; i < 6; ++i) CHECK(futures[static_cast<std::size_t>(i)].result(1s) == i * i);
}

// ---------------------------------------------------------------- WaitTests

TEST_CASE("WaitTests.test_20369", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  auto future = executor.submit(mul, 1, 2);
  auto [done, not_done] = mpx::wait(Futures{future, future}, std::nullopt, mpx::ALL_COMPLETED);
  CHECK(done.size() == 1);
  CHECK(ids(done) == ids({future}));
  CHECK(not_done.empty());
}

TEST_CASE("WaitTests.test_first_completed", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event event;
  auto future1 = executor.submit(mul, 21, 2);
  auto future2 = executor.submit(hold, event);
  auto [done, not_done] = mpx::wait(Futures{future1, future2}, 60s, mpx::FIRST_COMPLETED);
  CHECK(ids(done) == ids({future1}));
  CHECK(ids(not_done) == ids({future2}));
  // mpx differs: a cancelled future is done at once (mpx has no CANCELLED state before the executor takes notice,
  // which Python's wait counts as not done), so the one in Python's list is checked apart.
  auto with_cancelled = mpx::wait(Futures{standing.cancelled, future2}, 60s, mpx::FIRST_COMPLETED);
  CHECK(ids(with_cancelled.done) == ids({standing.cancelled}));
  CHECK(ids(with_cancelled.not_done) == ids({future2}));
  event.set();
  CHECK(future2.result(60s) == 1);
}

TEST_CASE("WaitTests.test_first_completed_some_already_completed", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event event;
  auto future1 = executor.submit(hold, event);
  auto [finished, pending] =
      mpx::wait(Futures{standing.cancelled_notified, standing.successful, future1}, 60s, mpx::FIRST_COMPLETED);
  CHECK(ids(finished) == ids({standing.cancelled_notified, standing.successful}));
  CHECK(ids(pending) == ids({future1}));
  event.set();
  CHECK(future1.result(60s) == 1);
}

TEST_CASE("WaitTests.test_first_exception", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(3);
  mpx::Event event1;
  mpx::Event event2;
  auto future1 = executor.submit(mul, 2, 21);
  auto future2 = executor.submit(wait_and_raise, event1);
  auto future3 = executor.submit(hold, event2);
  // future1 completes before future2 raises.
  std::thread after_future1([&] {
    (void)future1.result(60s);
    event1.set();
  });
  auto [finished, pending] = mpx::wait(Futures{future1, future2, future3}, 60s, mpx::FIRST_EXCEPTION);
  after_future1.join();
  CHECK(ids(finished) == ids({future1, future2}));
  CHECK(ids(pending) == ids({future3}));
  event2.set();
  CHECK(future3.result(60s) == 1);
}

TEST_CASE("WaitTests.test_first_exception_some_already_complete", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event event;
  auto future1 = executor.submit(divide, 21, 0);
  auto future2 = executor.submit(hold, event);
  auto [finished, pending] = mpx::wait(
      Futures{standing.successful, standing.cancelled, standing.cancelled_notified, future1, future2}, 60s,
      mpx::FIRST_EXCEPTION);
  // mpx differs: Python's CANCELLED_FUTURE (cancelled, not yet noticed by its executor) counts as pending; mpx has
  // only the cancelled-and-notified state, which is finished.
  CHECK(ids(finished) ==
        ids({standing.successful, standing.cancelled, standing.cancelled_notified, future1}));
  CHECK(ids(pending) == ids({future2}));
  event.set();
  CHECK(future2.result(60s) == 1);
}

TEST_CASE("WaitTests.test_first_exception_one_already_failed", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event event;
  auto future1 = executor.submit(hold, event);
  auto [finished, pending] = mpx::wait(Futures{standing.failed, future1}, 60s, mpx::FIRST_EXCEPTION);
  CHECK(ids(finished) == ids({standing.failed}));
  CHECK(ids(pending) == ids({future1}));
  event.set();
  CHECK(future1.result(60s) == 1);
}

TEST_CASE("WaitTests.test_all_completed", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  auto future1 = executor.submit(divide, 2, 0);
  auto future2 = executor.submit(mul, 2, 21);
  const Futures all{standing.successful, standing.cancelled_notified, standing.failed, future1, future2};
  auto [finished, pending] = mpx::wait(all, 60s, mpx::ALL_COMPLETED);
  CHECK(ids(finished) == ids(all));
  CHECK(pending.empty());
}

TEST_CASE("WaitTests.test_timeout", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  mpx::Event event;
  auto future = executor.submit(hold, event);
  auto [finished, pending] =
      mpx::wait(Futures{standing.cancelled_notified, standing.failed, standing.successful, future}, 0.05s,
                mpx::ALL_COMPLETED);
  CHECK(ids(finished) == ids({standing.cancelled_notified, standing.failed, standing.successful}));
  CHECK(ids(pending) == ids({future}));
  event.set();
  CHECK(future.result(60s) == 1);
}

// ---------------------------------------------------------------- AsCompletedTests

TEST_CASE("AsCompletedTests.test_no_timeout", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  auto future1 = executor.submit(mul, 2, 21);
  auto future2 = executor.submit(mul, 7, 6);
  const Futures all{standing.cancelled_notified, standing.failed, standing.successful, future1, future2};
  Futures completed;
  for (const auto& f : mpx::as_completed(all)) completed.push_back(f);
  CHECK(completed.size() == all.size());
  CHECK(ids(completed) == ids(all));
}

TEST_CASE("AsCompletedTests.test_future_times_out", "[conformance][executor]") {
  StandingFutures standing;
  mpx::ProcessPoolExecutor executor(2);
  const Futures already_completed{standing.cancelled_notified, standing.failed, standing.successful};
  for (double timeout : {0.0, 0.1}) {
    INFO("timeout " << timeout);
    mpx::Event event;
    auto future = executor.submit(hold, event);
    Futures all = already_completed;
    all.push_back(future);
    Futures completed;
    bool timed_out = false;
    try {
      for (const auto& f : mpx::as_completed(all, std::chrono::duration<double>(timeout))) completed.push_back(f);
    } catch (const mpx::TimeoutError&) {
      timed_out = true;
    }
    CHECK(timed_out);
    CHECK(ids(completed) == ids(already_completed));  // `future` was not completed
    event.set();
    CHECK(future.result(60s) == 1);
  }
}

TEST_CASE("AsCompletedTests.test_duplicate_futures", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  auto future1 = executor.submit(nap, 0.2);
  Futures completed;
  for (const auto& f : mpx::as_completed(std::vector<mpx::Future<int>>(3, future1))) completed.push_back(f);
  CHECK(completed.size() == 1);
}

TEST_CASE("AsCompletedTests.test_correct_timeout_exception_msg", "[conformance][executor]") {
  StandingFutures standing;
  const Futures all{standing.cancelled_notified, standing.pending, standing.running, standing.successful};
  // mpx differs: every mpx message starts with "mpx: ".
  CHECK_THROWS_MATCHES(
      [&] {
        for (const auto& f : mpx::as_completed(all, 0s)) (void)f;
      }(),
      mpx::TimeoutError, Catch::Matchers::Message("mpx: 2 (of 4) futures unfinished"));
}

// ---------------------------------------------------------------- FutureTests

TEST_CASE("FutureTests.test_done_callback_with_result", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto f = executor.submit(hold_then, 5, release);
  std::mutex mutex;
  std::optional<int> callback_result;
  f.add_done_callback([&](const mpx::Future<int>& done) {
    const int value = done.result();
    std::lock_guard lock(mutex);
    callback_result = value;
  });
  release.set();
  CHECK(f.result(60s) == 5);
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return callback_result.has_value();
  }));
  std::lock_guard lock(mutex);
  CHECK(callback_result == 5);
}

TEST_CASE("FutureTests.test_done_callback_with_exception", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto f = executor.submit(hold_then_raise, release);
  std::mutex mutex;
  std::optional<std::string> callback_message;
  f.add_done_callback([&](const mpx::Future<int>& done) {
    std::string message = "no exception";
    if (auto error = done.exception()) {
      try {
        std::rethrow_exception(error);
      } catch (const mpx::RemoteError& e) {
        message = e.message();
      } catch (const std::exception& e) {
        message = std::string("not a RemoteError: ") + e.what();
      }
    }
    std::lock_guard lock(mutex);
    callback_message = message;
  });
  release.set();
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return callback_message.has_value();
  }));
  std::lock_guard lock(mutex);
  CHECK(callback_message == "test");
}

TEST_CASE("FutureTests.test_done_callback_with_cancel", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto busy = executor.submit(hold, release);
  REQUIRE(wait_until([&] { return busy.running(); }));
  auto f = executor.submit(answer);
  std::mutex mutex;
  std::optional<bool> was_cancelled;
  f.add_done_callback([&](const mpx::Future<int>& done) {
    const bool cancelled = done.cancelled();
    std::lock_guard lock(mutex);
    was_cancelled = cancelled;
  });
  CHECK(f.cancel());
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return was_cancelled.has_value();
  }));
  {
    std::lock_guard lock(mutex);
    CHECK(was_cancelled == true);
  }
  release.set();
}

TEST_CASE("FutureTests.test_done_callback_raises", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto f = executor.submit(hold_then, 5, release);
  std::mutex mutex;
  bool raising_was_called = false;
  bool fn_was_called = false;
  CapturedStderr stderr_text;
  f.add_done_callback([&](const mpx::Future<int>&) {
    {
      std::lock_guard lock(mutex);
      raising_was_called = true;
    }
    throw std::runtime_error("doh!");
  });
  f.add_done_callback([&](const mpx::Future<int>&) {
    std::lock_guard lock(mutex);
    fn_was_called = true;
  });
  release.set();
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return raising_was_called && fn_was_called;
  }));
  CHECK_THAT(stderr_text.text(), Catch::Contains("doh!"));
}

TEST_CASE("FutureTests.test_done_callback_already_successful", "[conformance][executor]") {
  StandingFutures standing;
  std::optional<int> callback_result;
  // On a done future the callback runs at once, on this thread.
  standing.successful.add_done_callback([&](const mpx::Future<int>& done) { callback_result = done.result(); });
  CHECK(callback_result == 42);
}

TEST_CASE("FutureTests.test_done_callback_already_failed", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  auto f = executor.submit(raise_test);
  REQUIRE(f.exception(60s) != nullptr);
  std::optional<std::string> callback_message;
  f.add_done_callback([&](const mpx::Future<int>& done) {
    try {
      std::rethrow_exception(done.exception());
    } catch (const mpx::RemoteError& e) {
      callback_message = e.message();
    } catch (...) {
      callback_message = "not a RemoteError";
    }
  });
  CHECK(callback_message == "test");
}

TEST_CASE("FutureTests.test_done_callback_already_cancelled", "[conformance][executor]") {
  StandingFutures standing;
  std::optional<bool> was_cancelled;
  standing.cancelled.add_done_callback([&](const mpx::Future<int>& done) { was_cancelled = done.cancelled(); });
  CHECK(was_cancelled == true);
}

TEST_CASE("FutureTests.test_done_callback_raises_already_succeeded", "[conformance][executor]") {
  StandingFutures standing;
  CapturedStderr stderr_text;
  // The callback runs at once; its exception is reported, not thrown at the caller.
  CHECK_NOTHROW(
      standing.successful.add_done_callback([](const mpx::Future<int>&) { throw std::runtime_error("doh!"); }));
  const auto text = stderr_text.text();
  // mpx differs: the report says "a done callback raised" where Python's says "exception calling callback for".
  CHECK_THAT(text, Catch::Contains("a done callback raised"));
  CHECK_THAT(text, Catch::Contains("doh!"));
}

TEST_CASE("FutureTests.test_cancel", "[conformance][executor]") {
  StandingFutures standing;
  CHECK(standing.pending.cancel());
  CHECK(standing.pending.cancelled());
  CHECK_FALSE(standing.running.cancel());
  CHECK(standing.running.running());
  CHECK(standing.cancelled.cancel());
  CHECK(standing.cancelled.cancelled());
  CHECK(standing.cancelled_notified.cancel());
  CHECK(standing.cancelled_notified.cancelled());
  CHECK_FALSE(standing.failed.cancel());
  CHECK(standing.failed.done());
  CHECK_FALSE(standing.failed.cancelled());
  CHECK_FALSE(standing.successful.cancel());
  CHECK(standing.successful.done());
  CHECK_FALSE(standing.successful.cancelled());
}

TEST_CASE("FutureTests.test_cancelled", "[conformance][executor]") {
  StandingFutures standing;
  CHECK_FALSE(standing.pending.cancelled());
  CHECK_FALSE(standing.running.cancelled());
  CHECK(standing.cancelled.cancelled());
  CHECK(standing.cancelled_notified.cancelled());
  CHECK_FALSE(standing.failed.cancelled());
  CHECK_FALSE(standing.successful.cancelled());
}

TEST_CASE("FutureTests.test_done", "[conformance][executor]") {
  StandingFutures standing;
  CHECK_FALSE(standing.pending.done());
  CHECK_FALSE(standing.running.done());
  CHECK(standing.cancelled.done());
  CHECK(standing.cancelled_notified.done());
  CHECK(standing.failed.done());
  CHECK(standing.successful.done());
}

TEST_CASE("FutureTests.test_running", "[conformance][executor]") {
  StandingFutures standing;
  CHECK_FALSE(standing.pending.running());
  CHECK(standing.running.running());
  CHECK_FALSE(standing.cancelled.running());
  CHECK_FALSE(standing.cancelled_notified.running());
  CHECK_FALSE(standing.failed.running());
  CHECK_FALSE(standing.successful.running());
}

TEST_CASE("FutureTests.test_result_with_timeout", "[conformance][executor]") {
  StandingFutures standing;
  CHECK_THROWS_AS(standing.pending.result(0s), mpx::TimeoutError);
  CHECK_THROWS_AS(standing.running.result(0s), mpx::TimeoutError);
  CHECK_THROWS_AS(standing.cancelled.result(0s), mpx::CancelledError);
  CHECK_THROWS_AS(standing.cancelled_notified.result(0s), mpx::CancelledError);
  try {
    (void)standing.failed.result(0s);
    FAIL("expected the task's system_error");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("system_error"));
  }
  CHECK(standing.successful.result(0s) == 42);
}

TEST_CASE("FutureTests.test_result_with_success", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto f1 = executor.submit(hold_then, 42, release);
  std::thread notification([&] { release.set(); });
  CHECK(f1.result(60s) == 42);
  notification.join();
}

TEST_CASE("FutureTests.test_result_with_cancel", "[conformance][executor]") {
  StandingFutures standing;
  auto f1 = standing.pending;
  std::thread notification([&] { (void)f1.cancel(); });
  CHECK_THROWS_AS(f1.result(60s), mpx::CancelledError);
  notification.join();
}

TEST_CASE("FutureTests.test_exception_with_timeout", "[conformance][executor]") {
  StandingFutures standing;
  CHECK_THROWS_AS(standing.pending.exception(0s), mpx::TimeoutError);
  CHECK_THROWS_AS(standing.running.exception(0s), mpx::TimeoutError);
  CHECK_THROWS_AS(standing.cancelled.exception(0s), mpx::CancelledError);
  CHECK_THROWS_AS(standing.cancelled_notified.exception(0s), mpx::CancelledError);
  auto error = standing.failed.exception(0s);
  REQUIRE(error != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(error), mpx::RemoteError);
  CHECK(standing.successful.exception(0s) == nullptr);
}

TEST_CASE("FutureTests.test_exception_with_success", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto f1 = executor.submit(hold_then_raise, release);
  std::thread notification([&] { release.set(); });
  auto error = f1.exception(60s);
  notification.join();
  REQUIRE(error != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(error), mpx::RemoteError);
}

// ---------------------------------------------------------------- ExecutorShutdownTest

TEST_CASE("ExecutorShutdownTest.test_run_after_shutdown", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  executor.shutdown();
  // Python raises RuntimeError; mpx raises its base mpx::Error with Python's message.
  CHECK_THROWS_WITH(executor.submit(power, 2, 5), Catch::Contains("cannot schedule new futures after shutdown"));
}

namespace {
std::optional<mpx::ProcessPoolExecutor>& program_executor() {
  static std::optional<mpx::ProcessPoolExecutor> executor;  // lives until the program's end, like Python's global
  return executor;
}
}  // namespace

// Run in a session of its own: an executor with a task still running when the program ends.
TEST_CASE("conformance executor: a program ending with a running task", "[.executor-at-exit]") {
  const char* path = std::getenv("CONFORMANCE_APPLE_FILE");
  REQUIRE(path != nullptr);
  program_executor().emplace(2);
  (void)program_executor()->submit(sleep_and_write, 0.3, std::string(path));
}

// An executor still alive when main() returns shuts down in its destructor, after the main thread's thread_local
// objects (its channel among them) are gone: it makes a channel of its own for that.
TEST_CASE("ExecutorShutdownTest.test_interpreter_shutdown", "[conformance][executor]") {
  const auto path = std::filesystem::temp_directory_path() /
                    ("mpx-conformance-apple-" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  const auto status = conformance::run_program("conformance executor: a program ending with a running task",
                                               {"CONFORMANCE_APPLE_FILE=" + path.string()}, 60s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  // Ending the program waited for the task, as Python's exit waits for the executor's.
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  CHECK(text == "apple");
  std::filesystem::remove(path);
}

TEST_CASE("ExecutorShutdownTest.test_hang_issue12364", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  Futures futures;
  for (int i = 0; i < 20; ++i) futures.push_back(executor.submit(nap, 0.02));
  executor.shutdown();
  for (auto& f : futures) CHECK(f.result(1s) == 0);
}

TEST_CASE("ExecutorShutdownTest.test_cancel_futures", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(2);
  Futures futures;
  for (int i = 0; i < 50; ++i) futures.push_back(executor.submit(nap, 0.1));
  // mpx differs: Python's executor thread moves the first calls to its workers' queue at once; mpx's workers take
  // tasks when they ask, so a shutdown right after submit may find every task still cancellable. Waiting until a
  // worker runs the first one gives Python's starting point.
  REQUIRE(wait_until([&] { return futures[0].running() || futures[0].done(); }));
  executor.shutdown(true, true);
  // Not an exact number: many are cancelled, the others finished without error, and at least one finished.
  std::size_t cancelled = 0;
  std::size_t others = 0;
  for (auto& f : futures) {
    if (f.cancelled()) {
      ++cancelled;
    } else {
      ++others;
      CHECK(f.done());
      CHECK(f.exception(0s) == nullptr);
    }
  }
  CHECK(cancelled > 20);
  CHECK(others > 0);
}

TEST_CASE("ExecutorShutdownTest.test_hang_gh94440", "[conformance][executor]") {
  // shutdown(wait=true) right after a future was submitted and cancelled must not hang.
  mpx::ProcessPoolExecutor executor(1);
  CHECK(executor.submit(answer).result(60s) == 42);
  (void)executor.submit(answer).cancel();
  executor.shutdown(true);
  CHECK(executor.pool().pids().empty());
}

// ---------------------------------------------------------------- ProcessPoolShutdownTest

TEST_CASE("ProcessPoolShutdownTest.test_processes_terminate", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(3);
  mpx::Semaphore semaphore(0);
  Futures futures;
  for (int i = 0; i < 3; ++i) futures.push_back(executor.submit(acquire, semaphore));
  // mpx starts every worker with the executor, as Python's fork context does.
  const auto workers = executor.pool().pids();
  CHECK(workers.size() == 3);
  for (int i = 0; i < 3; ++i) semaphore.release();
  executor.shutdown();
  CHECK(executor.pool().pids().empty());
  for (auto pid : workers) CHECK(dead(pid));
}

TEST_CASE("ProcessPoolShutdownTest.test_context_manager_shutdown", "[conformance][executor]") {
  std::vector<pid_t> workers;
  {
    mpx::ProcessPoolExecutor executor(3);  // leaving the scope is leaving Python's `with` block
    workers = executor.pool().pids();
    std::vector<int> xs;
    for (int i = -5; i < 5; ++i) xs.push_back(i);
    CHECK(list(executor.map(abs_value, xs)) == std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4});
  }
  REQUIRE(workers.size() == 3);
  for (auto pid : workers) CHECK(dead(pid));
}

TEST_CASE("ProcessPoolShutdownTest.test_del_shutdown", "[conformance][executor]") {
  std::optional<mpx::ProcessPoolExecutor> executor(std::in_place, 3);
  const auto workers = executor->pool().pids();
  std::vector<int> xs;
  for (int i = -5; i < 5; ++i) xs.push_back(i);
  auto results = executor->map(abs_value, xs);
  executor.reset();  // `del executor`
  for (auto pid : workers) CHECK(dead(pid));
  CHECK(list(results) == std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4});
}

TEST_CASE("ProcessPoolShutdownTest.test_shutdown_no_wait", "[conformance][executor]") {
  mpx::ProcessPoolExecutor executor(3);
  std::vector<int> xs;
  for (int i = -5; i < 5; ++i) xs.push_back(i);
  auto results = executor.map(abs_value, xs);
  executor.shutdown(false);
  // The workers still exit (and are reaped) by themselves.
  CHECK(wait_until([&] { return executor.pool().pids().empty(); }));
  CHECK(list(results) == std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4});
}

namespace {
int run_gh_132969(int max_workers) {
  auto o = options(max_workers);
  o.max_tasks_per_child = 1;
  mpx::ProcessPoolExecutor executor(o);
  auto f1 = executor.submit(good_task, 1);
  auto f2 = executor.submit(failing_task, 2);
  auto f3 = executor.submit(good_task, 3);
  int result = 0;
  try {
    result += f1.result(60s);
    result += f2.result(60s);
    result += f3.result(60s);
  } catch (const mpx::RemoteError&) {
    // stop at the first error
  }
  executor.shutdown(false);
  return result;
}
}  // namespace

TEST_CASE("ProcessPoolShutdownTest.test_shutdown_gh_132969_case_1", "[conformance][executor]") {
  CHECK(run_gh_132969(2) == 1);
}

TEST_CASE("ProcessPoolShutdownTest.test_shutdown_gh_132969_case_2", "[conformance][executor]") {
  CHECK(run_gh_132969(4) == 1);
}

// ---------------------------------------------------------------- ExecutorDeadlockTest

TEST_CASE("ExecutorDeadlockTest.test_crash_during_func_exec_on_worker", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  {
    mpx::ProcessPoolExecutor executor(breaking_options(2, method));
    CHECK_THROWS_AS(executor.submit(crash, 0.0).result(60s), mpx::BrokenProcessPool);
  }
  {
    // mpx differs: by default the crashing task is retried on fresh workers, then fails alone with WorkerLost.
    auto o = options(2, method);
    o.max_retries = 1;
    mpx::ProcessPoolExecutor executor(o);
    try {
      (void)executor.submit(crash, 0.0).result(60s);
      FAIL("expected WorkerLost");
    } catch (const mpx::WorkerLost& e) {
      CHECK(e.signal() == SIGSEGV);
    }
    CHECK(executor.submit(answer).result(60s) == 42);
  }
}

TEST_CASE("ExecutorDeadlockTest.test_exit_during_func_exec_on_worker", "[conformance][executor]") {
  // mpx differs: C++ has no SystemExit to hand back; std::exit ends the worker, which breaks the pool.
  mpx::ProcessPoolExecutor executor(breaking_options(2));
  CHECK_THROWS_AS(executor.submit(exit_normally).result(60s), mpx::BrokenProcessPool);
}

TEST_CASE("ExecutorDeadlockTest.test_error_during_func_exec_on_worker", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::ProcessPoolExecutor executor(breaking_options(2, method));
  try {
    (void)executor.submit(raise_test).result(60s);
    FAIL("expected the task's runtime_error");
  } catch (const mpx::RemoteError& e) {
    CHECK_THAT(e.type(), Catch::Contains("runtime_error"));
  }
  CHECK(executor.submit(answer).result(60s) == 42);  // an exception is not a crash: the pool is not broken
}

TEST_CASE("ExecutorDeadlockTest.test_shutdown_deadlock", "[conformance][executor]") {
  // A worker that crashes after shutdown() was called must not deadlock it.
  mpx::ProcessPoolExecutor executor(breaking_options(2));
  auto f = executor.submit(crash, 0.1);
  executor.shutdown(true);
  CHECK_THROWS_AS(f.result(1s), mpx::BrokenProcessPool);
}

TEST_CASE("ExecutorDeadlockTest.test_crash_big_data", "[conformance][executor]") {
  // A worker that crashes while large arguments are on their way: a clean BrokenProcessPool, no deadlock.
  mpx::ProcessPoolExecutor executor(breaking_options(2));
  std::vector<std::string> data(10, std::string(1024 * 1024 + 1, 'a'));
  CHECK_THROWS_AS(list(executor.map(crash_with_data, data, 60s)), mpx::BrokenProcessPool);
}

// ---------------------------------------------------------------- InitializerMixin, FailingInitializerMixin

TEST_CASE("InitializerMixin.test_initializer", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  auto o = options(2, method);
  o.initializer = mpx::bind(init, std::string("initialized"));
  mpx::ProcessPoolExecutor executor(o);
  std::vector<mpx::Future<std::string>> futures;
  for (int i = 0; i < 2; ++i) futures.push_back(executor.submit(get_init_status));
  for (auto& f : futures) CHECK(f.result(60s) == "initialized");
}

TEST_CASE("FailingInitializerMixin.test_initializer", "[conformance][executor]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  auto o = options(2, method);
  o.initializer = mpx::bind(init_fail);
  mpx::ProcessPoolExecutor executor(o);
  try {
    auto future = executor.submit(get_init_status);
    CHECK_THROWS_AS(future.result(60s), mpx::BrokenProcessPool);
  } catch (const mpx::BrokenProcessPool&) {
    // already broken
  }
  // At some point the executor breaks, and from then on submit() fails.
  CHECK(wait_until([&] {
    try {
      (void)executor.submit(get_init_status);
      return false;
    } catch (const mpx::BrokenProcessPool&) {
      return true;
    }
  }));
  CHECK_THROWS_AS(executor.submit(get_init_status), mpx::BrokenProcessPool);
  // Python also checks the initializer's error is logged; mpx prints it on the failing worker's stderr.
}
