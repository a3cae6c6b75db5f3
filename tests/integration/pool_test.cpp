// Pool with real worker processes: every call, chunksize edges, ordering, callbacks, errors, maxtasksperchild,
// initializer, killed workers (retry and WorkerLost), Ctrl-C, terminate and the destructor.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include "runtime/channel.hpp"
#include "wire/envelope.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <future>
#include <mutex>
#include <numeric>
#include <random>
#include <ranges>
#include <set>
#include <stdexcept>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }

// A result whose size varies with the argument, and an error deep inside a large chunk.
std::string label(std::string word, int times) {
  if (times == 66000) throw std::invalid_argument("66000 is not allowed");
  std::string out;
  for (int i = 0; i < times % 5; ++i) out += word;
  return out + ":" + std::to_string(times);
}
int add(int a, int b) { return a + b; }
int worker_pid(int) { return static_cast<int>(::getpid()); }
void nothing() {}

int fail_on_seven(int x) {
  if (x == 7) throw std::invalid_argument("seven is not allowed");
  return x;
}

double nap(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return seconds;
}

int die(int) {
  ::raise(SIGKILL);
  return 0;
}

int initialized_value = 0;
void set_initialized(int v, mpx::Queue<int> started) {
  initialized_value = v;
  started.put(static_cast<int>(::getpid()));
}
int read_initialized(int) { return initialized_value; }

void failing_initializer() { throw std::runtime_error("no database here"); }

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

// The whole SIGINT scenario runs in a child process, so the test runner itself is never interrupted: the child
// starts a pool, tells the parent the map is running (the first task started), and expects Interrupted.
void started_then_nap(mpx::Event started, double seconds) {
  started.set();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

// Ends normally (exit code 0) only if the map raised Interrupted.
void map_until_interrupted(mpx::Event started, mpx::Queue<int> worker_pids) {
  mpx::Pool pool(2);
  for (auto pid : pool.pids()) worker_pids.put(static_cast<int>(pid));
  std::vector<std::tuple<mpx::Event, double>> args(20, {started, 30.0});
  try {
    pool.starmap(started_then_nap, args);
  } catch (const mpx::Interrupted&) {
    return;
  }
  throw std::runtime_error("the map was not interrupted");
}

// An attached handle in another process: maps over the owner's workers at the same time as the owner, checks its
// own results, then terminates its handle, which only detaches it.
void attached_user(mpx::ObjectRef ref, mpx::Queue<long> out) {
  auto pool = mpx::Pool::attach(ref);
  if (!pool.attached() || !pool.pids().empty() || pool.processes() != 2) throw std::logic_error("not attached");
  std::vector<int> xs(2000);
  std::iota(xs.begin(), xs.end(), 0);
  const auto ys = pool.map(square, xs, 3);
  long sum = 0;
  for (std::size_t i = 0; i < ys.size(); ++i) {
    if (ys[i] != square(xs[i])) throw std::logic_error("wrong result at " + std::to_string(i));
    sum += ys[i];
  }
  if (pool.apply_async(add, 40, 2).get(20s) != 42) throw std::logic_error("wrong apply_async");
  out.put(sum);
  pool.terminate();
}

// Owns a pool, hands its reference out, and waits to be killed.
void owner_until_killed(mpx::Queue<mpx::ObjectRef> refs, mpx::Event never) {
  mpx::Pool pool(1);
  refs.put(pool.ref());
  (void)never.wait();
}

// Holds its worker until the test lets it go.
bool hold_until(mpx::Event release) { return release.wait(30s); }

// Attaches, queues many tasks that hold their workers until `release`, says so, and waits to be killed.
void submit_then_wait(mpx::ObjectRef ref, mpx::Event release, mpx::Event submitted, mpx::Event never) {
  auto pool = mpx::Pool::attach(ref);
  auto held = pool.map_async(hold_until, std::vector<mpx::Event>(200, release), 1);
  submitted.set();
  (void)never.wait();
}


// Dies (SIGKILL) the first time it runs, then returns 42: a task whose first worker is lost.
int die_first_time(mpx::Event died) {
  if (!died.is_set()) {
    died.set();
    ::raise(SIGKILL);
  }
  return 42;
}

// Says it started, then holds its worker until the test lets it go.
bool signal_then_hold(mpx::Event started, mpx::Event release) {
  started.set();
  return release.wait(30s);
}

// In a child process (whose results come through the scheduler, not the coordinator thread): serial apply_async on an
// attached handle, with and without callbacks, each result checked at once; the sum goes back.
void attached_serial(mpx::ObjectRef ref, mpx::Queue<long> out) {
  auto pool = mpx::Pool::attach(ref);
  long sum = 0;
  int called = 0;
  for (int i = 0; i < 200; ++i) {
    if (i % 2 == 0) {
      if (pool.apply_async(square, i).get(20s) != i * i) throw std::logic_error("wrong result at " + std::to_string(i));
    } else {
      auto r = pool.apply_async(square, std::tuple{i}, [&called](int) { ++called; });
      if (r.get(20s) != i * i) throw std::logic_error("wrong result at " + std::to_string(i));
    }
    sum += i * i;
  }
  if (called != 100) throw std::logic_error("callbacks ran " + std::to_string(called) + " times, not 100");
  out.put(sum);
}
// Puts its index on the queue: with one worker, the queue's order is the order the tasks ran in.
void record_index(int index, mpx::Queue<int> ran) { ran.put(index); }

// A process that is not the pool's owner asks to pull the owner's outbox; the reply's kind goes back.
void foreign_pull(std::uint64_t pool_id, mpx::Queue<int> kind) {
  auto reply = mpx::runtime::Channel::current().request(
      mpx::wire::make(mpx::wire::Kind::pool_pull, pool_id, 0, mpx::Object{}), std::chrono::milliseconds(10000));
  kind.put(static_cast<int>(reply.header.kind));
}
}  // namespace

TEST_CASE("apply, apply_async and map give Python's results", "[pool]") {
  mpx::Pool pool(2);
  CHECK(pool.processes() == 2);
  CHECK(pool.pids().size() == 2);
  CHECK(pool.apply(square, 7) == 49);
  CHECK(pool.apply(add, 2, 3) == 5);
  auto r = pool.apply_async(square, 10);
  CHECK(r.get(5s) == 100);
  CHECK(r.ready());
  CHECK(r.successful());
  pool.apply(nothing);

  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  auto ys = pool.map(square, xs);
  REQUIRE(ys.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(ys[static_cast<std::size_t>(i)] == i * i);

  auto async = pool.map_async(square, std::views::iota(0, 10));
  CHECK(async.get(5s) == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81});

  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  CHECK(pool.starmap(add, pairs) == std::vector<int>{3, 7, 11});
  CHECK(pool.starmap_async(add, pairs).get(5s) == std::vector<int>{3, 7, 11});

  CHECK(pool.map([](int x) { return x + 1; }, std::vector<int>{1, 2}) == std::vector<int>{2, 3});
}

TEST_CASE("chunksize edges: 1, larger than n, n = 0, 0 is refused", "[pool]") {
  mpx::Pool pool(2);
  std::vector<int> xs(37);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> expect;
  for (int x : xs) expect.push_back(x * x);
  CHECK(pool.map(square, xs, 1) == expect);
  CHECK(pool.map(square, xs, 1000) == expect);
  CHECK(pool.map(square, xs, 5) == expect);
  CHECK(pool.map(square, std::vector<int>{}).empty());
  CHECK(pool.map(square, std::vector<int>{}, 3).empty());
  CHECK(pool.map_async(square, std::vector<int>{}).get(1s).empty());
  CHECK_THROWS_AS(pool.map(square, xs, 0), mpx::ValueError);
}

TEST_CASE("large chunks of mixed-size arguments and results map as a loop would; an error deep in one names its index",
          "[pool]") {
  mpx::Pool pool(2);
  std::vector<std::tuple<std::string, int>> calls;
  std::vector<std::string> expect;
  for (int i = 0; i < 70000; ++i) {
    if (i == 66000) continue;
    calls.emplace_back(std::string(static_cast<std::size_t>(i % 23), 'a' + static_cast<char>(i % 26)), i);
    expect.push_back(label(std::get<0>(calls.back()), i));
  }
  // One chunk of 69,999 calls (a msgpack array 32 header), then the default chunksize, then chunks around 65,536.
  CHECK(pool.starmap(label, calls, calls.size()) == expect);
  CHECK(pool.starmap(label, calls) == expect);
  CHECK(pool.starmap(label, calls, 65536) == expect);
  std::vector<int> xs(70000);
  std::iota(xs.begin(), xs.end(), 0);
  try {
    pool.map([](int x) { return label("w", x); }, xs, xs.size());
    FAIL("map should have raised");
  } catch (const mpx::RemoteError& e) {
    CHECK(e.type() == "std::invalid_argument");
    CHECK(e.task_index() == 66000u);
  }
  CHECK(pool.apply(square, 4) == 16);  // the pool carries on
}

TEST_CASE("imap is ordered, imap_unordered complete, both lazy over an unbounded range", "[pool]") {
  mpx::Pool pool(3);
  std::vector<int> got;
  for (int y : pool.imap(square, std::views::iota(0, 50), 3)) got.push_back(y);
  std::vector<int> expect;
  for (int i = 0; i < 50; ++i) expect.push_back(i * i);
  CHECK(got == expect);

  got.clear();
  for (int y : pool.imap_unordered(square, std::views::iota(0, 50))) got.push_back(y);
  std::sort(got.begin(), got.end());
  CHECK(got == expect);

  // An unbounded generator: only as much input is read as the window needs.
  auto it = pool.imap(square, std::views::iota(0));
  for (int i = 0; i < 1000; ++i) REQUIRE(it.next(5s) == i * i);

  // Unordered really is completion order: a slow first item comes last.
  std::vector<double> naps{0.3, 0.0, 0.0};
  std::vector<double> order;
  for (double d : pool.imap_unordered(nap, naps)) order.push_back(d);
  CHECK(order.back() == 0.3);

  auto slow = pool.imap(nap, std::vector<double>{2.0});
  CHECK_THROWS_AS(slow.next(0.05s), mpx::TimeoutError);
}

// Python's imap: the results of the items before the one the input raised at are yielded, then the input's error,
// then the end; nothing is lost and the error is not raised again.
TEST_CASE("imap and imap_unordered over an input that throws at item k yield items 0..k-1, the error, then the end",
          "[pool][imap]") {
  mpx::Pool pool(2);
  const auto failing_input = [] {
    return std::views::iota(0, 100) | std::views::transform([](int i) {
             if (i == 5) throw std::out_of_range("the input broke at item 5");
             return i;
           });
  };
  for (const bool ordered : {true, false}) {
    for (const std::size_t chunksize : {std::size_t{1}, std::size_t{3}}) {
      CAPTURE(ordered, chunksize);
      auto it = ordered ? pool.imap(square, failing_input(), chunksize)
                        : pool.imap_unordered(square, failing_input(), chunksize);
      std::vector<int> got;
      for (int i = 0; i < 5; ++i) {
        auto y = it.next(30s);
        REQUIRE(y.has_value());
        got.push_back(*y);
      }
      std::sort(got.begin(), got.end());
      CHECK(got == std::vector<int>{0, 1, 4, 9, 16});
      CHECK_THROWS_WITH(it.next(30s), Catch::Contains("the input broke at item 5"));
      CHECK_FALSE(it.next(30s).has_value());
      CHECK_FALSE(it.next(30s).has_value());
    }
  }
  // The same through a range-for: the loop sees 0..4, then the error leaves it.
  std::vector<int> seen;
  CHECK_THROWS_AS(
      [&] {
        for (int y : pool.imap(square, failing_input())) seen.push_back(y);
      }(),
      std::out_of_range);
  CHECK(seen == std::vector<int>{0, 1, 4, 9, 16});
}

TEST_CASE("callbacks and error callbacks run on the result thread, a progress callback counts", "[pool]") {
  mpx::Pool pool(2);
  std::atomic<int> sum{0};
  std::atomic<int> errors{0};
  std::string message;
  std::vector<mpx::AsyncResult<int>> results;
  const auto caller = std::this_thread::get_id();
  std::atomic<bool> on_other_thread{true};
  for (int i = 0; i < 10; ++i) {
    results.push_back(pool.apply_async(fail_on_seven, std::tuple{i},
                                       [&](int v) {
                                         sum += v;
                                         if (std::this_thread::get_id() == caller) on_other_thread = false;
                                       },
                                       [&](const std::exception& e) {
                                         message = e.what();
                                         ++errors;
                                       }));
  }
  for (auto& r : results) r.wait(5s);
  CHECK(sum == 45 - 7);
  CHECK(errors == 1);
  CHECK(message.find("seven is not allowed") != std::string::npos);
  CHECK(on_other_thread);

  std::vector<std::size_t> seen;
  std::size_t total = 0;
  auto ys = pool.map(square, std::views::iota(0, 40), 10, [&](std::size_t done, std::size_t all) {
    seen.push_back(done);
    total = all;
  });
  CHECK(ys.size() == 40);
  CHECK(total == 40);
  CHECK(seen.size() == 4);
  CHECK(seen.back() == 40);

  std::vector<int> mapped;
  auto m = pool.map_async(square, std::vector<int>{1, 2, 3}, std::nullopt, [&](const std::vector<int>& v) { mapped = v; });
  m.wait(5s);
  CHECK(mapped == std::vector<int>{1, 4, 9});
}

TEST_CASE("a task's exception is a RemoteError at get, naming type, message, pid and task index", "[pool]") {
  mpx::Pool pool(2);
  auto r = pool.apply_async(fail_on_seven, 7);
  CHECK_THROWS_AS(r.get(5s), mpx::RemoteError);
  CHECK(r.ready());
  CHECK_FALSE(r.successful());
  try {
    pool.map(fail_on_seven, std::views::iota(0, 20), 3);
    FAIL("map should have raised");
  } catch (const mpx::RemoteError& e) {
    CHECK(e.type() == "std::invalid_argument");
    CHECK(e.message() == "seven is not allowed");
    CHECK(e.task_index() == 7u);
    const auto pids = pool.pids();
    CHECK(std::find(pids.begin(), pids.end(), e.pid()) != pids.end());
  }
  // The pool is still usable, and other tasks were unaffected.
  CHECK(pool.apply(square, 3) == 9);
  auto not_ready = pool.apply_async(nap, 5.0);
  CHECK_THROWS_AS(not_ready.successful(), mpx::ValueError);
  CHECK_THROWS_AS(not_ready.get(0.05s), mpx::TimeoutError);
  CHECK_FALSE(not_ready.wait(0.01s));
}

TEST_CASE("close, join, terminate, and a closed pool refuses work", "[pool]") {
  mpx::Pool pool(2);
  auto r = pool.apply_async(square, 4);
  CHECK_THROWS_AS(pool.join(), mpx::ValueError);  // still running
  pool.close();
  CHECK_THROWS_WITH(pool.apply(square, 1), Catch::Contains("Pool not running"));
  CHECK_THROWS_AS(pool.map(square, std::vector<int>{1}), mpx::ValueError);
  pool.join();
  CHECK(r.get(1s) == 16);  // queued work finished before the workers left
  CHECK(pool.pids().empty());

  mpx::Pool other(2);
  auto pending = other.apply_async(nap, 30.0);
  const auto pids = other.pids();
  other.terminate();
  CHECK_THROWS_AS(pending.get(5s), mpx::CancelledError);
  other.join();
  for (auto pid : pids) CHECK_FALSE(alive(pid));
  // A terminated pool refuses work as a closed one does (Python: ValueError "Pool not running"); only the tasks it
  // cancelled say CancelledError.
  CHECK_THROWS_WITH(other.apply(square, 1), Catch::Contains("Pool not running"));
  CHECK_THROWS_AS(other.apply_async(square, 1), mpx::ValueError);
  CHECK_THROWS_AS(other.map(square, std::vector<int>{1}), mpx::ValueError);
  CHECK_THROWS_AS(other.imap(square, std::vector<int>{1}).next(), mpx::ValueError);
}

TEST_CASE("the destructor of a running pool terminates it and leaves no worker", "[pool]") {
  std::vector<pid_t> pids;
  {
    mpx::Pool pool(3);
    pids = pool.pids();
    (void)pool.apply_async(nap, 30.0);
    (void)pool.apply_async(nap, 30.0);
  }
  REQUIRE(pids.size() == 3);
  for (auto pid : pids) CHECK_FALSE(alive(pid));
}

TEST_CASE("maxtasksperchild replaces workers; the initializer runs once in each", "[pool]") {
  mpx::Queue<int> started;
  {
    mpx::Pool pool(2, set_initialized, std::tuple{17, started}, 2);
    std::set<int> pids;
    for (int pid : pool.map(worker_pid, std::views::iota(0, 20), 1)) pids.insert(pid);
    CHECK(pids.size() >= 10);  // two tasks per worker
    CHECK(pool.map(read_initialized, std::views::iota(0, 6), 1) == std::vector<int>(6, 17));
    pool.close();
    pool.join();
  }
  std::set<int> initialized;
  while (!started.empty()) initialized.insert(started.get());
  CHECK(initialized.size() >= 12);  // 20 + 6 tasks at 2 per worker: at least 13 workers, each initialized once
}

TEST_CASE("an initializer that raises breaks the pool: BrokenProcessPool, not workers restarted for ever", "[pool][fault]") {
  std::vector<pid_t> pids;
  {
    mpx::Pool pool(2, failing_initializer);
    pids = pool.pids();
    // Python's Pool restarts the workers in a loop and this map never returns; a generous bound proves no hang.
    CHECK_THROWS_AS(pool.map_async(square, std::views::iota(0, 100)).get(60s), mpx::BrokenProcessPool);
    try {
      pool.apply(square, 3);
      FAIL("a broken pool should refuse work");
    } catch (const mpx::BrokenProcessPool& e) {
      CHECK_THAT(e.what(), Catch::Contains("initializer"));
    }
  }
  for (auto pid : pids) CHECK_FALSE(alive(pid));
}

TEST_CASE("a worker killed during a 10,000-task map, 20 times: every run correct, no hang", "[pool][fault]") {
  mpx::Pool pool(4);
  std::vector<int> xs(10000);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> expect;
  for (int x : xs) expect.push_back(x * x);
  std::mt19937 random(12345);
  for (int run = 0; run < 20; ++run) {
    auto result = pool.map_async(square, xs, 50);
    auto pids = pool.pids();
    REQUIRE_FALSE(pids.empty());
    ::kill(pids[random() % pids.size()], SIGKILL);
    REQUIRE(result.get(60s) == expect);
  }
  CHECK(pool.apply(square, 5) == 25);
  // Some kills hit a worker holding tasks, and those tasks were run again rather than lost.
  const auto stats = mpx::detail::pool_stats(*pool.core());
  CHECK(stats.requeued > 0);
  CHECK(stats.lost == 0);
}

TEST_CASE("a task that kills its worker every time ends in WorkerLost after max_retries", "[pool][fault]") {
  mpx::PoolOptions options;
  options.processes = 2;
  options.max_retries = 2;
  mpx::Pool pool(options);
  auto killer = pool.apply_async(die, 1);
  std::vector<mpx::AsyncResult<int>> others;
  for (int i = 0; i < 20; ++i) others.push_back(pool.apply_async(square, i));
  try {
    killer.get(60s);
    FAIL("the killer task should have failed");
  } catch (const mpx::WorkerLost& e) {
    CHECK(e.signal() == SIGKILL);
    CHECK(e.attempts() == 3);
    CHECK(e.task_index() == 0u);
    CHECK(std::string(e.what()).find("signal 9") != std::string::npos);
  }
  for (int i = 0; i < 20; ++i) CHECK(others[static_cast<std::size_t>(i)].get(30s) == i * i);

  mpx::PoolOptions no_retries;
  no_retries.processes = 1;
  no_retries.max_retries = 0;
  mpx::Pool strict(no_retries);
  try {
    strict.map(die, std::vector<int>{1, 2});
    FAIL("the map should have failed");
  } catch (const mpx::WorkerLost& e) {
    CHECK(e.attempts() == 1);
  }
  CHECK(strict.apply(square, 6) == 36);  // the pool stays usable
}

TEST_CASE("SIGINT during map: Interrupted in the caller, no worker left behind", "[pool][fault]") {
  mpx::Event started;
  mpx::Queue<int> worker_pids;
  mpx::Process child(map_until_interrupted, started, worker_pids);
  child.start();
  REQUIRE(started.wait(30s));
  child.interrupt();
  REQUIRE(child.join(30s));
  CHECK(child.exitcode().value_or(-999) == 0);
  int n = 0;
  while (!worker_pids.empty()) {
    CHECK_FALSE(alive(worker_pids.get()));
    ++n;
  }
  CHECK(n == 2);
}

TEST_CASE("malformed pool messages get an error reply and change nothing", "[pool][fault]") {
  using namespace mpx;
  Pool pool(1);
  auto& channel = runtime::Channel::current();
  const auto ask = [&](wire::Envelope e) {
    auto reply = channel.request(std::move(e), std::chrono::milliseconds(5000));
    return reply.header.kind;
  };
  const std::uint64_t pool_id = detail::pool_id(*pool.core());
  REQUIRE(ask(wire::make(wire::Kind::pool_stats, pool_id, 0, Object{})) == wire::Kind::ok);
  // A take without its results frame, a submit whose sizes do not add up, wrong arities, an unknown pool.
  CHECK(ask(wire::make(wire::Kind::pool_take, pool_id, 0, std::make_tuple(std::uint64_t{1}))) == wire::Kind::error);
  auto submit = wire::make(wire::Kind::pool_submit, pool_id, 0,
                           std::make_tuple(std::string("x"), std::vector<std::tuple<std::uint64_t, std::uint64_t>>{
                                                                 {99, 1000}}));
  submit.body.emplace_back(std::string("short"));
  CHECK(ask(std::move(submit)) == wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_cancel, pool_id, 0, std::make_tuple(1, 2))) == wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_create, 0, 0, std::make_tuple(std::uint32_t{3}, std::uint32_t{0}))) ==
        wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_stats, 987654321, 0, Object{})) == wire::Kind::error);
  // Multi-submitter: a report whose frames do not match its entries, an entry filing another submitter's task, a
  // detach of the owner or of nobody, an attach to no pool, a submit in another submitter's task ids.
  using Groups = std::vector<std::tuple<std::uint64_t, std::vector<std::uint64_t>>>;
  CHECK(ask(wire::make(wire::Kind::pool_take, pool_id, 0, std::make_tuple(std::uint64_t{1}, Groups{{0, {5}}}))) ==
        wire::Kind::error);
  auto misfiled = wire::make(wire::Kind::pool_take, pool_id, 0,
                             std::make_tuple(std::uint64_t{1}, Groups{{0, {(std::uint64_t{3} << 40) + 1}}}));
  misfiled.body.emplace_back(std::string("\x90"));
  CHECK(ask(std::move(misfiled)) == wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_detach, pool_id, 0, std::make_tuple(std::uint64_t{0}))) == wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_detach, pool_id, 0, std::make_tuple(std::uint64_t{77}))) == wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_attach, 987654321, 0, Object{})) == wire::Kind::error);
  auto foreign = wire::make(wire::Kind::pool_submit, pool_id, 0,
                            std::make_tuple(std::string("x"), std::vector<std::tuple<std::uint64_t, std::uint64_t>>{
                                                                  {(std::uint64_t{1} << 40) + 1, 1}}));
  foreign.body.emplace_back(std::string("\x90"));
  CHECK(ask(std::move(foreign)) == wire::Kind::error);
  // pool_pull: a body that is not nil, an unknown pool, and a process that is not the owner.
  CHECK(ask(wire::make(wire::Kind::pool_pull, pool_id, 0, std::make_tuple(1))) == wire::Kind::error);
  CHECK(ask(wire::make(wire::Kind::pool_pull, 987654321, 0, Object{})) == wire::Kind::error);
  mpx::Queue<int> kind;
  mpx::Process puller(foreign_pull, pool_id, kind);
  puller.start();
  CHECK(kind.get(true, 20s) == static_cast<int>(wire::Kind::error));
  puller.join();
  const auto stats = detail::pool_stats(*pool.core());
  CHECK(stats.queued == 0);
  CHECK(stats.held == 0);
  CHECK(pool.apply(square, 9) == 81);  // still serving
}

TEST_CASE("workers start with each start method", "[pool]") {
  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::spawn, mpx::StartMethod::forkserver}) {
    mpx::PoolOptions options;
    options.processes = 2;
    options.method = method;
    mpx::Pool pool(options);
    CHECK(pool.map(square, std::views::iota(0, 5)) == std::vector<int>{0, 1, 4, 9, 16});
    CHECK(pool.apply(add, 20, 22) == 42);
  }
}

TEST_CASE("an attached handle in another process shares the owner's workers and gets its own results", "[pool][attach]") {
  mpx::Pool owner(2);
  CHECK_FALSE(owner.attached());
  mpx::Queue<long> out;
  mpx::Process user(attached_user, owner.ref(), out);
  user.start();
  // The owner maps at the same time: neither side sees the other's results.
  std::vector<std::tuple<int, int>> pairs;
  for (int i = 0; i < 2000; ++i) pairs.emplace_back(i, 1000);
  const auto sums = owner.starmap(add, pairs, 5);
  for (int i = 0; i < 2000; ++i) CHECK(sums[static_cast<std::size_t>(i)] == i + 1000);
  long expected = 0;
  for (long i = 0; i < 2000; ++i) expected += i * i;
  CHECK(out.get(true, 30s) == expected);
  REQUIRE(user.join(30s));
  CHECK(user.exitcode() == 0);
  // Its terminate() detached it only: the owner's pool goes on.
  CHECK(owner.apply(square, 9) == 81);
  const auto stats = mpx::detail::pool_stats(*owner.core());
  CHECK(stats.queued == 0);
  CHECK(stats.held == 0);
}

TEST_CASE("an attached handle's close, join and terminate detach it only; a terminated pool refuses attaches",
          "[pool][attach]") {
  mpx::Pool owner(2);
  {
    auto h = mpx::Pool::attach(owner.ref());
    auto r = h.apply_async(nap, 0.2);
    h.close();
    CHECK_THROWS_AS(h.apply(square, 1), mpx::ValueError);
    h.join();  // waits for this handle's tasks
    CHECK(r.ready());
    CHECK(r.get() == 0.2);
  }
  {
    auto h = mpx::Pool::attach(owner.ref());
    auto slow = h.map_async(nap, std::vector<double>(20, 0.2), 1);
    h.terminate();
    CHECK_THROWS_AS(slow.get(10s), mpx::CancelledError);
  }
  CHECK(owner.apply(square, 5) == 25);  // the detached handle's queued naps were dropped, not run
  CHECK(mpx::detail::pool_stats(*owner.core()).queued == 0);
  owner.terminate();
  CHECK_THROWS_AS(mpx::Pool::attach(owner.ref()), mpx::ValueError);
}

TEST_CASE("attached handles one after another, two at a time: each gets exactly its own results", "[pool][attach]") {
  mpx::Pool owner(1);  // one worker sees every submitter, and forgets the idle ones as they pile up
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  for (int round = 0; round < 8; ++round) {
    auto a = mpx::Pool::attach(owner.ref());
    auto b = mpx::Pool::attach(owner.ref());
    auto from_a = a.map_async(square, xs, 3);
    auto from_b = b.starmap_async(add, std::vector<std::tuple<int, int>>(50, {round, 1}), 7);
    CHECK(from_b.get(20s) == std::vector<int>(50, round + 1));
    const auto ys = from_a.get(20s);
    REQUIRE(ys.size() == xs.size());
    for (std::size_t i = 0; i < ys.size(); ++i) CHECK(ys[i] == square(xs[i]));
  }
  CHECK(owner.apply(square, 12) == 144);
}

TEST_CASE("an attached submitter that dies: its queued tasks are dropped, the pool serves the others", "[pool][attach][fault]") {
  mpx::Pool owner(2);
  mpx::Event release, submitted, never;
  mpx::Process user(submit_then_wait, owner.ref(), release, submitted, never);
  user.start();
  REQUIRE(submitted.wait(30s));
  // Its 200 tasks are queued, or held by the two workers, which they block until `release`: nothing runs off the
  // queue meanwhile, so only the submitter's death can empty it.
  const auto deadline = std::chrono::steady_clock::now() + 20s;  // anti-hang bound only
  while (mpx::detail::pool_stats(*owner.core()).queued == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  REQUIRE(mpx::detail::pool_stats(*owner.core()).queued > 0);
  user.kill();
  REQUIRE(user.join(30s));
  while (mpx::detail::pool_stats(*owner.core()).queued > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  CHECK(mpx::detail::pool_stats(*owner.core()).queued == 0);  // dropped with their submitter, not run
  release.set();  // the workers finish the batches they held (their results are discarded) and serve the owner
  CHECK(owner.apply(square, 3) == 9);
  CHECK(owner.map(square, std::vector<int>{1, 2, 3}) == std::vector<int>{1, 4, 9});
}

TEST_CASE("the owner's terminate and close reach attached handles: nothing is left waiting", "[pool][attach]") {
  const auto quickly = [](auto& result) {
    const auto begin = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(result.get(20s), mpx::CancelledError);
    CHECK(std::chrono::steady_clock::now() - begin < 15s);  // anti-hang bound: it fails at once
  };
  {
    mpx::Pool owner(1);
    auto h = mpx::Pool::attach(owner.ref());
    auto running = h.apply_async(nap, 5.0);
    auto queued = h.apply_async(square, 3);
    owner.terminate();
    quickly(running);
    quickly(queued);
  }
  {
    mpx::Pool owner(1);
    auto h = mpx::Pool::attach(owner.ref());
    CHECK(h.apply(square, 4) == 16);
    owner.close();
    auto late = h.apply_async(square, 5);  // after the close, on this thread: the scheduler cancels it
    quickly(late);
    owner.join();
  }
}

TEST_CASE("the owner dying fails an attached handle's waiting call at once with BrokenProcessPool", "[pool][attach][fault]") {
  mpx::Queue<mpx::ObjectRef> refs;
  mpx::Event never, release;
  mpx::Process owner(owner_until_killed, refs, never);
  owner.start();
  auto pool = mpx::Pool::attach(refs.get(true, 30s));
  auto held = pool.apply_async(hold_until, release);
  owner.kill();
  REQUIRE(owner.join(30s));
  const auto begin = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(held.get(20s), mpx::BrokenProcessPool);
  CHECK(std::chrono::steady_clock::now() - begin < 15s);  // anti-hang bound: it fails on the owner's death
  CHECK_THROWS_AS(pool.apply_async(square, 2), mpx::BrokenProcessPool);
  release.set();  // the orphaned worker finishes its task, finds no pool and exits
}

// A pool owned by the coordinator's own process (the embedded default) takes results without callbacks on the
// coordinator thread, and leaves those with callbacks to the result thread: both kinds, mixed, one at a time.
TEST_CASE("serial apply_async with and without callbacks: right results, callbacks on the result thread in order",
          "[pool][serial]") {
  mpx::Pool pool(1);  // one worker: completion order is submission order
  for (int i = 0; i < 500; ++i) REQUIRE(pool.apply_async(square, i).get(10s) == i * i);
  const auto caller = std::this_thread::get_id();
  std::mutex mutex;
  std::vector<int> order;
  std::set<std::thread::id> threads;
  auto record = [&](int v) {
    std::lock_guard lock(mutex);
    threads.insert(std::this_thread::get_id());
    order.push_back(v);
  };
  std::vector<mpx::AsyncResult<int>> results;
  for (int i = 0; i < 300; ++i) {
    if (i % 3 == 0) {
      results.push_back(pool.apply_async(square, i));
    } else {
      results.push_back(pool.apply_async(square, std::tuple{i}, record));
      if (i % 3 == 2) {
        // Serial with a callback: it ran before get() returns.
        REQUIRE(results.back().get(10s) == i * i);
        std::lock_guard lock(mutex);
        REQUIRE(!order.empty());
        CHECK(order.back() == i * i);
      }
    }
  }
  for (int i = 0; i < 300; ++i) CHECK(results[static_cast<std::size_t>(i)].get(10s) == i * i);
  std::lock_guard lock(mutex);
  CHECK(threads.size() == 1);  // the pool's one result thread
  CHECK(threads.count(caller) == 0);
  REQUIRE(order.size() == 200);
  CHECK(std::is_sorted(order.begin(), order.end()));  // completion order, which one worker makes submission order

  // An error without an error callback, and one with.
  CHECK_THROWS_AS(pool.apply_async(fail_on_seven, 7).get(10s), mpx::RemoteError);
  std::string message;
  auto failed = pool.apply_async(fail_on_seven, std::tuple{7}, nullptr,
                                 [&](const std::exception& e) { message = e.what(); });
  CHECK_THROWS_AS(failed.get(10s), mpx::RemoteError);
  CHECK(message.find("seven is not allowed") != std::string::npos);
}

TEST_CASE("tasks submitted one by one reach idle workers at once while the others are busy", "[pool][serial]") {
  // The owner's submissions wait in its outbox until the scheduler pulls them: a worker left idle must not wait for a
  // busy one to finish before it gets the next task.
  mpx::Pool pool(3);
  mpx::Event release;
  std::vector<mpx::Event> started(2);
  std::vector<mpx::AsyncResult<bool>> holding;
  for (auto& s : started) {
    holding.push_back(pool.apply_async(signal_then_hold, s, release));
    REQUIRE(s.wait(20s));  // it reached a worker while the earlier ones hold theirs
  }
  CHECK(pool.apply_async(square, 12).get(20s) == 144);  // the third worker, while two hold theirs
  const auto stats = mpx::detail::pool_stats(*pool.core());
  CHECK(stats.held == 2);
  release.set();
  for (auto& h : holding) CHECK(h.get(20s));
}

TEST_CASE("one worker runs apply_async, map_async and imap tasks in the order they were submitted", "[pool][serial]") {
  mpx::Pool pool(1);
  mpx::Queue<int> ran;
  std::vector<mpx::AsyncResult<void>> singles;
  int next = 0;
  for (int i = 0; i < 100; ++i) singles.push_back(pool.apply_async(record_index, next++, ran));
  std::vector<std::tuple<int, mpx::Queue<int>>> args;
  for (int i = 0; i < 50; ++i) args.emplace_back(next++, ran);
  auto mapped = pool.starmap_async(record_index, args, 1);
  for (int i = 0; i < 100; ++i) singles.push_back(pool.apply_async(record_index, next++, ran));
  for (auto& r : singles) r.get(20s);
  mapped.get(20s);
  std::vector<int> order;
  for (int i = 0; i < next; ++i) order.push_back(ran.get(true, 20s));
  std::vector<int> expected(static_cast<std::size_t>(next));
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(order == expected);
}

TEST_CASE("a done callback added to a pending result runs on the result thread, to a done one at once", "[pool][serial]") {
  mpx::ProcessPoolExecutor executor(1);
  mpx::Event release;
  auto held = executor.submit(hold_until, release);
  const auto caller = std::this_thread::get_id();
  std::promise<bool> ran;  // true: on the caller's thread
  auto ran_on_caller = ran.get_future();
  held.add_done_callback([&](const auto&) { ran.set_value(std::this_thread::get_id() == caller); });
  release.set();
  CHECK(held.result(10s));
  REQUIRE(ran_on_caller.wait_for(10s) == std::future_status::ready);
  CHECK_FALSE(ran_on_caller.get());
  auto quick = executor.submit(square, 3);
  CHECK(quick.result(10s) == 9);
  bool here = false;
  quick.add_done_callback([&](const auto&) { here = std::this_thread::get_id() == caller; });
  CHECK(here);
}

TEST_CASE("a lone task whose worker is killed is retried and its result still delivered", "[pool][serial][fault]") {
  mpx::Pool pool(1);
  mpx::Event died;
  CHECK(pool.apply_async(die_first_time, died).get(30s) == 42);
  CHECK(died.is_set());

  // Killed from outside while it holds the task.
  mpx::Event started, release;
  auto held = pool.apply_async(signal_then_hold, started, release);
  REQUIRE(started.wait(20s));
  const auto pids = pool.pids();
  REQUIRE(pids.size() == 1);
  started.clear();  // the first attempt set it already and now only waits
  ::kill(pids[0], SIGKILL);
  REQUIRE(started.wait(20s));  // its retry started on the replacement
  release.set();
  CHECK(held.get(30s));
  CHECK(pool.apply(square, 4) == 16);
  const auto stats = mpx::detail::pool_stats(*pool.core());
  CHECK(stats.requeued >= 2);
  CHECK(stats.lost == 0);
}

TEST_CASE("serial apply_async from an attached handle in a child process", "[pool][attach][serial]") {
  mpx::Pool owner(2);
  mpx::Queue<long> out;
  mpx::Process user(attached_serial, owner.ref(), out);
  user.start();
  for (int i = 0; i < 200; ++i) REQUIRE(owner.apply_async(add, i, 1).get(20s) == i + 1);  // meanwhile, the owner's
  long expected = 0;
  for (long i = 0; i < 200; ++i) expected += i * i;
  CHECK(out.get(true, 60s) == expected);
  REQUIRE(user.join(30s));
  CHECK(user.exitcode() == 0);
}

TEST_CASE("zero and negative timeouts do not wait: AsyncResult get and wait, IMapIterator next, Future result",
          "[pool][timeout]") {
  mpx::Pool pool(1);
  mpx::Event release;
  mpx::Event started;
  auto busy = pool.apply_async(signal_then_hold, started, release);
  REQUIRE(started.wait(60s));
  auto queued = pool.apply_async(square, 3);
  auto stream = pool.imap(square, std::vector<int>{4});
  mpx::ProcessPoolExecutor executor(1);
  auto future = executor.submit(nap, 2.0);
  for (const auto seconds : {-1.0, -0.001, 0.0}) {
    const auto timeout = std::chrono::duration<double>(seconds);
    const auto begin = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(queued.get(timeout), mpx::TimeoutError);
    CHECK_FALSE(queued.wait(timeout));
    CHECK_THROWS_AS(stream.next(timeout), mpx::TimeoutError);
    CHECK_THROWS_AS(future.result(timeout), mpx::TimeoutError);
    CHECK(std::chrono::steady_clock::now() - begin < 10s);
  }
  release.set();
  CHECK(busy.get(60s));
  CHECK(queued.get(60s) == 9);
  CHECK(stream.next(60s) == 16);
  CHECK(future.result(60s) == 2.0);
}
