// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier with real processes: every operation and
// timeout path, dead holders, handles under every start method, and malformed requests to the sync service.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "runtime/channel.hpp"
#include "wire/envelope.hpp"
#include "children.hpp"

using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

using mpx_test::Children;

mpx::ProcessOptions helper(mpx::StartMethod method = mpx::get_start_method()) {
  return mpx::ProcessOptions{"", true, method};
}

// Waits until `n` requests are blocked on `object` (a Lock, Semaphore, Event or Barrier) in the coordinator: the
// interleaving a test names, observed rather than assumed after a sleep. False if it does not happen within 30 s.
template <class Waitable>
bool waiters_reach(const Waitable& object, std::size_t n) {
  const auto deadline = Clock::now() + 30s;
  while (object.n_waiting() < n) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A child's way to fail a check: the exception makes its exit code 1 and is printed on stderr.
void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("child check failed: " + what);
}

// A scratch file named after the test process (a child finds it through parent_process()).
std::string scratch_path(const std::string& name, pid_t owner = ::getpid()) {
  return (std::filesystem::temp_directory_path() / ("mpx-sync-test-" + std::to_string(owner) + "-" + name)).string();
}
std::string parents_scratch(const std::string& name) { return scratch_path(name, mpx::parent_process()->pid()); }

long read_number(const std::string& path) {
  std::ifstream in(path);
  long value = 0;
  in >> value;
  return value;
}

void write_number(const std::string& path, long value) {
  std::ofstream out(path, std::ios::trunc);
  out << value;
}

// Appends one line; O_APPEND keeps lines from several processes whole.
void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  const std::string text = line + "\n";
  const auto written = ::write(fd, text.data(), text.size());
  ::close(fd);
  if (written != static_cast<ssize_t>(text.size())) throw std::runtime_error("short write to " + path);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

struct ScratchFile {
  std::string path;
  explicit ScratchFile(const std::string& name) : path(scratch_path(name)) { std::filesystem::remove(path); }
  ~ScratchFile() { std::filesystem::remove(path); }
};

// ---- children ------------------------------------------------------------------------------------------------

// Read-modify-write of a file: without the lock, concurrent increments get lost.
void increment_file(mpx::Lock lock, std::string path, int times) {
  for (int i = 0; i < times; ++i) {
    std::scoped_lock guard(lock);
    write_number(path, read_number(path) + 1);
  }
}

void try_lock_elsewhere(mpx::Lock lock, mpx::Queue<std::string> out) {
  out.put(lock.acquire(false) ? "acquired" : "busy");
  const auto begin = Clock::now();
  const bool got = lock.acquire(true, 0.2s);
  out.put(!got && Clock::now() - begin >= 150ms ? "timed out" : "wrong");
  try {
    lock.release();
    out.put("released someone else's lock");
  } catch (const mpx::ValueError&) {
    out.put("not owner");
  }
}

template <class L>
void try_rlock_elsewhere(L lock, mpx::Queue<std::string> out) {
  out.put(lock.acquire(true, 0.1s) ? "acquired" : "busy");
}

// Takes the lock (an RLock twice), says so, and blocks until it is killed.
template <class L>
void hold_until_killed(L lock, int times, mpx::Queue<int> ready, mpx::Event never) {
  for (int i = 0; i < times; ++i) lock.acquire();
  ready.put(times);
  never.wait();
}

void acquire_and_report(mpx::Lock lock, mpx::Queue<std::string> out) {
  out.put("waiting");
  const bool got = lock.acquire(true, 30s);
  out.put(got ? "acquired" : "timed out");
}

template <class S>
void take_units(S sem, int units, mpx::Queue<int> ready, mpx::Event never) {
  for (int i = 0; i < units; ++i) require(sem.acquire(true, 30s), "took a unit");
  ready.put(units);
  never.wait();
}

void take_one_unit_and_exit(mpx::Semaphore sem) { require(sem.acquire(true, 30s), "took the signal"); }

void release_semaphore(mpx::Semaphore sem) { sem.release(); }

void wait_event(mpx::Event event, mpx::Queue<std::string> out, double seconds) {
  out.put("waiting");
  out.put(event.wait(std::chrono::duration<double>(seconds)) ? "set" : "timeout");
}

void set_event(mpx::Event event) { event.set(); }

// The buffer is a count of items in a file, guarded by the condition's lock.
void produce_items(mpx::Condition cond, std::string path, int count) {
  for (int i = 0; i < count; ++i) {
    std::scoped_lock guard(cond);
    write_number(path, read_number(path) + 1);
    cond.notify();
  }
}

void consume_items(mpx::Condition cond, std::string path, int count, mpx::Queue<int> out) {
  int taken = 0;
  for (int i = 0; i < count; ++i) {
    std::scoped_lock guard(cond);
    require(cond.wait_for([&] { return read_number(path) > 0; }, 30s), "an item within 30 s");
    write_number(path, read_number(path) - 1);
    ++taken;
  }
  out.put(taken);
}

// Holds the condition's lock while saying it is ready, so once the parent gets the lock this child is waiting.
void wait_for_notify(mpx::Condition cond, mpx::Queue<std::string> out) {
  std::scoped_lock guard(cond);
  out.put("ready");
  out.put(cond.wait(30s) ? "notified" : "timeout");
}

void acquire_condition_and_notify(mpx::Condition cond, mpx::Queue<std::string> out) {
  std::scoped_lock guard(cond);
  out.put("in");
  cond.notify();
}

void barrier_action() { append_line(parents_scratch("barrier"), "action " + std::to_string(::getpid())); }

void throwing_action() { throw std::runtime_error("the action failed"); }

void dying_action() { ::raise(SIGKILL); }

// Long enough for the test to start more parties while it runs (a test bound, not synchronization: the outcome is
// the same if they come later).
void slow_action() {
  append_line(parents_scratch("barrier"), "action " + std::to_string(::getpid()));
  std::this_thread::sleep_for(500ms);
}

// An action with arguments, as a Process target has: they travel to whichever process arrives last.
void record_action(mpx::Queue<std::string> out, std::string tag, int n) {
  out.put(tag + " " + std::to_string(n) + " by " + std::to_string(::getpid()));
}

void wait_once(mpx::Barrier barrier) { (void)barrier.wait(30s); }

void barrier_party(mpx::Barrier barrier, mpx::Queue<std::vector<long>> out) {
  const auto index = barrier.wait(30s);
  append_line(parents_scratch("barrier"), "released " + std::to_string(::getpid()));
  out.put({static_cast<long>(index), static_cast<long>(::getpid())});
}

void barrier_outcome(mpx::Barrier barrier, mpx::Queue<std::string> out) {
  try {
    (void)barrier.wait(30s);
    out.put("passed");
  } catch (const mpx::BrokenBarrierError&) {
    out.put("broken");
  } catch (const std::runtime_error& e) {
    out.put(std::string("threw: ") + e.what());
  }
}

// Every handle type, adopted in a child.
void use_every_handle(mpx::Lock lock, mpx::RLock rlock, mpx::Semaphore sem, mpx::BoundedSemaphore bounded,
                      mpx::Event event, mpx::Condition cond, mpx::Barrier barrier, mpx::Queue<std::string> out) {
  out.put(lock.acquire(false) ? "lock free" : "lock busy");
  require(rlock.acquire() && rlock.acquire(), "rlock twice");
  rlock.release();
  rlock.release();
  require(sem.acquire(true, 10s), "a semaphore unit");
  try {
    bounded.release();
    out.put("bounded released past its value");
  } catch (const mpx::ValueError&) {
    out.put("bounded ok");
  }
  {
    std::scoped_lock guard(cond);
    cond.notify_all();
  }
  event.set();
  out.put("index " + std::to_string(barrier.wait(30s)));
}

// Measured in the hidden benchmark test.
template <class F>
double mean_us(int n, F&& f) {
  const auto begin = Clock::now();
  for (int i = 0; i < n; ++i) f();
  return std::chrono::duration<double, std::micro>(Clock::now() - begin).count() / n;
}

// ---- raw requests for the malformed-message test ---------------------------------------------------------------

mpx::wire::Envelope raw_request(mpx::wire::Kind kind, std::uint64_t object, std::vector<std::string> frames) {
  mpx::wire::Envelope e;
  e.header.kind = kind;
  e.header.object = object;
  for (auto& f : frames) e.body.emplace_back(f.data(), f.size());
  return mpx::runtime::Channel::current().request(std::move(e), std::chrono::milliseconds(10000));
}

std::uint16_t error_code(const mpx::wire::Envelope& reply) {
  if (reply.header.kind != mpx::wire::Kind::error) return 0;
  return std::get<0>(reply.body_as<std::tuple<std::uint16_t, std::string>>());
}

std::uint64_t malformed_count() {
  auto reply = mpx::runtime::Channel::current().request(mpx::wire::make(mpx::wire::Kind::stats, 0, 0, mpx::Object{}),
                                                        std::chrono::milliseconds(10000));
  return std::get<1>(reply.body_as<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>>());
}

constexpr auto malformed = static_cast<std::uint16_t>(mpx::wire::ErrorCode::malformed);
constexpr auto unknown_object = static_cast<std::uint16_t>(mpx::wire::ErrorCode::unknown_object);

}  // namespace

// ---- Lock ----------------------------------------------------------------------------------------------------

TEST_CASE("Lock: acquire, release, locked, non-blocking and timeout paths, std lock guards", "[sync][lock]") {
  mpx::Lock lock;
  CHECK_FALSE(lock.locked());
  CHECK(lock.acquire());
  CHECK(lock.locked());
  CHECK_FALSE(lock.previous_owner_died());
  CHECK_FALSE(lock.acquire(false));  // a Lock is not re-entrant, as in Python
  const auto begin = Clock::now();
  CHECK_FALSE(lock.acquire(true, 0.1s));
  CHECK(Clock::now() - begin >= 90ms);
  lock.release();
  CHECK_FALSE(lock.locked());
  CHECK_THROWS_AS(lock.release(), mpx::ValueError);
  {
    std::lock_guard guard(lock);
    CHECK(lock.locked());
  }
  CHECK_FALSE(lock.locked());
  {
    std::unique_lock guard(lock, std::try_to_lock);
    CHECK(guard.owns_lock());
    std::unique_lock again(lock, std::try_to_lock);
    CHECK_FALSE(again.owns_lock());
  }
  mpx::Lock other;
  {
    std::scoped_lock both(lock, other);
    CHECK(lock.locked());
    CHECK(other.locked());
  }
  CHECK_FALSE(other.locked());
}

TEST_CASE("Lock: another process cannot take or release it while this one holds it", "[sync][lock]") {
  mpx::Lock lock;
  mpx::Queue<std::string> out;
  REQUIRE(lock.acquire());
  Children children;
  children.start(helper(), try_lock_elsewhere, lock, out);
  CHECK(out.get(true, 30s) == "busy");
  CHECK(out.get(true, 30s) == "timed out");
  CHECK(out.get(true, 30s) == "not owner");
  children.join_all();
  CHECK(lock.locked());
  lock.release();
}

TEST_CASE("Lock: two threads of one process exclude each other; a waiter is woken by the release", "[sync][lock]") {
  mpx::Lock lock;
  REQUIRE(lock.acquire());
  bool got = false;
  std::thread waiter([lock, &got]() mutable {
    got = lock.acquire(true, 30s);
    if (got) lock.release();
  });
  REQUIRE(waiters_reach(lock, 1));  // the second thread is blocked, not yet started
  lock.release();
  waiter.join();
  CHECK(got);
  CHECK_FALSE(lock.locked());
}

TEST_CASE("Lock: 4 processes increment a file counter 250 times each under the lock", "[sync][lock]") {
  ScratchFile counter("counter");
  write_number(counter.path, 0);
  mpx::Lock lock;
  Children children;
  for (int i = 0; i < 4; ++i) children.start(helper(), increment_file, lock, counter.path, 250);
  children.join_all();
  CHECK(read_number(counter.path) == 1000);
  CHECK_FALSE(lock.locked());
}

TEST_CASE("Lock: a holder SIGKILLed while holding it; a blocked acquirer and the next acquirer learn it",
          "[sync][lock][death]") {
  mpx::Lock lock;
  mpx::Queue<int> ready;
  mpx::Event never;
  Children children;
  auto& holder = children.start(helper(), hold_until_killed<mpx::Lock>, lock, 1, ready, never);
  REQUIRE(ready.get(true, 30s) == 1);
  CHECK_FALSE(lock.acquire(false));

  SECTION("the next acquirer after the death") {
    holder.kill();
    holder.join();
    CHECK(lock.acquire(true, 30s));
    CHECK(lock.previous_owner_died());
    lock.release();
    CHECK(lock.acquire(false));
    CHECK_FALSE(lock.previous_owner_died());  // told once, per acquire
    lock.release();
  }
  SECTION("an acquirer already blocked when the holder dies") {
    bool got = false, died = false;
    std::thread waiter([lock, &got, &died]() mutable {
      got = lock.acquire(true, 30s);
      died = lock.previous_owner_died();
      if (got) lock.release();
    });
    REQUIRE(waiters_reach(lock, 1));
    holder.kill();
    waiter.join();
    CHECK(got);
    CHECK(died);
  }
}

TEST_CASE("Lock: a process that dies while waiting for it is forgotten", "[sync][lock][death]") {
  mpx::Lock lock;
  mpx::Queue<std::string> out;
  REQUIRE(lock.acquire());
  Children children;
  auto& waiter = children.start(helper(), acquire_and_report, lock, out);
  REQUIRE(out.get(true, 30s) == "waiting");
  REQUIRE(waiters_reach(lock, 1));  // its acquire reached the coordinator: it dies as a waiter
  waiter.kill();
  waiter.join();
  lock.release();
  CHECK(lock.acquire(true, 5s));  // not handed to the dead waiter
  CHECK_FALSE(lock.previous_owner_died());
  lock.release();
}

// ---- RLock ---------------------------------------------------------------------------------------------------

TEST_CASE("RLock: the owner re-enters; free after as many releases; others wait", "[sync][rlock]") {
  mpx::RLock rlock;
  mpx::Queue<std::string> out;
  CHECK(rlock.acquire());
  CHECK(rlock.acquire(false));
  CHECK(rlock.acquire(true, 1s));
  rlock.release();
  rlock.release();
  CHECK(rlock.locked());
  Children children;
  children.start(helper(), try_rlock_elsewhere<mpx::RLock>, rlock, out);
  CHECK(out.get(true, 30s) == "busy");
  rlock.release();
  CHECK_FALSE(rlock.locked());
  CHECK_THROWS_AS(rlock.release(), mpx::ValueError);
  children.start(helper(), try_rlock_elsewhere<mpx::RLock>, rlock, out);
  CHECK(out.get(true, 30s) == "acquired");
  children.join_all();
  // The child exited holding it: the next acquirer is told.
  CHECK(rlock.acquire(true, 30s));
  CHECK(rlock.previous_owner_died());
  rlock.release();
}

TEST_CASE("RLock: a holder SIGKILLed with two levels held releases them all", "[sync][rlock][death]") {
  mpx::RLock rlock;
  mpx::Queue<int> ready;
  mpx::Event never;
  Children children;
  auto& holder = children.start(helper(), hold_until_killed<mpx::RLock>, rlock, 2, ready, never);
  REQUIRE(ready.get(true, 30s) == 2);
  CHECK_FALSE(rlock.acquire(false));
  holder.kill();
  holder.join();
  CHECK(rlock.acquire(true, 30s));
  CHECK(rlock.previous_owner_died());
  rlock.release();
  CHECK_FALSE(rlock.locked());
}

// ---- Semaphore -----------------------------------------------------------------------------------------------

TEST_CASE("Semaphore: acquire, release, get_value, non-blocking and timeout paths", "[sync][semaphore]") {
  CHECK_THROWS_AS(mpx::Semaphore(-1), mpx::ValueError);
  mpx::Semaphore sem(2);
  CHECK(sem.get_value() == 2);
  CHECK(sem.acquire());
  CHECK(sem.acquire(false));
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.acquire(false));
  const auto begin = Clock::now();
  CHECK_FALSE(sem.acquire(true, 0.1s));
  CHECK(Clock::now() - begin >= 90ms);
  sem.release();
  sem.release();
  sem.release();  // an unbounded semaphore may go past its initial value
  CHECK(sem.get_value() == 3);
  {
    std::lock_guard guard(sem);
    CHECK(sem.get_value() == 2);
  }
  CHECK(sem.get_value() == 3);
}

TEST_CASE("Semaphore: a release from another process wakes a blocked acquirer", "[sync][semaphore]") {
  mpx::Semaphore sem(0);
  Children children;
  children.start(helper(), release_semaphore, sem);
  CHECK(sem.acquire(true, 30s));
  children.join_all();
  CHECK(sem.get_value() == 0);
}

TEST_CASE("BoundedSemaphore: release past the initial value throws ValueError", "[sync][semaphore]") {
  mpx::BoundedSemaphore sem(2);
  CHECK_THROWS_AS(sem.release(), mpx::ValueError);
  CHECK(sem.acquire());
  sem.release();
  CHECK(sem.get_value() == 2);
  CHECK_THROWS_WITH(sem.release(), Catch::Contains("released too many times"));
  CHECK(sem.get_value() == 2);
  CHECK(sem.acquire(false));
  CHECK(sem.acquire(false));
  CHECK_FALSE(sem.acquire(true, 0.05s));
  sem.release();
  sem.release();
  CHECK_THROWS_AS(sem.release(), mpx::ValueError);
}

TEST_CASE("Semaphore: units held by a SIGKILLed process come back, and the next acquirer learns it",
          "[sync][semaphore][death]") {
  mpx::Semaphore sem(3);
  mpx::Queue<int> ready;
  mpx::Event never;
  Children children;
  auto& holder = children.start(helper(), take_units<mpx::Semaphore>, sem, 2, ready, never);
  REQUIRE(ready.get(true, 30s) == 2);
  CHECK(sem.acquire(false));
  CHECK_FALSE(sem.previous_owner_died());
  CHECK_FALSE(sem.acquire(false));
  holder.kill();
  holder.join();
  CHECK(sem.acquire(true, 30s));
  CHECK(sem.previous_owner_died());
  CHECK(sem.acquire(false));
  CHECK_FALSE(sem.previous_owner_died());
  CHECK(sem.get_value() == 0);
  sem.release();
  sem.release();
  sem.release();
  CHECK(sem.get_value() == 3);
}

TEST_CASE("BoundedSemaphore: a SIGKILLed holder's unit comes back to a blocked acquirer", "[sync][semaphore][death]") {
  mpx::BoundedSemaphore sem(1);
  mpx::Queue<int> ready;
  mpx::Event never;
  Children children;
  auto& holder = children.start(helper(), take_units<mpx::BoundedSemaphore>, sem, 1, ready, never);
  REQUIRE(ready.get(true, 30s) == 1);
  bool got = false, died = false;
  std::thread waiter([sem, &got, &died]() mutable {
    got = sem.acquire(true, 30s);
    died = sem.previous_owner_died();
  });
  REQUIRE(waiters_reach(sem, 1));
  holder.kill();
  waiter.join();
  CHECK(got);
  CHECK(died);
  sem.release();
  CHECK(sem.get_value() == 1);
}

TEST_CASE("Semaphore(0) used as a signal: a consumer that exits gives nothing back", "[sync][semaphore][death]") {
  mpx::Semaphore sem(0);
  sem.release();
  Children children;
  children.start(helper(), take_one_unit_and_exit, sem);
  children.join_all();
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.acquire(false));
}

// ---- Event ---------------------------------------------------------------------------------------------------

TEST_CASE("Event: set, clear, is_set, wait with and without timeout", "[sync][event]") {
  mpx::Event event;
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(event.wait(0s));
  const auto begin = Clock::now();
  CHECK_FALSE(event.wait(0.1s));
  CHECK(Clock::now() - begin >= 90ms);
  event.set();
  CHECK(event.is_set());
  CHECK(event.wait());
  CHECK(event.wait(0s));
  event.clear();
  CHECK_FALSE(event.is_set());
}

TEST_CASE("Event: a set in one process wakes waiters in three others", "[sync][event]") {
  mpx::Event event;
  mpx::Queue<std::string> out;
  Children children;
  for (int i = 0; i < 3; ++i) children.start(helper(), wait_event, event, out, 30.0);
  for (int i = 0; i < 3; ++i) REQUIRE(out.get(true, 30s) == "waiting");
  REQUIRE(waiters_reach(event, 3));  // every one is blocked in wait when the set comes
  children.start(helper(), set_event, event);
  for (int i = 0; i < 3; ++i) CHECK(out.get(true, 30s) == "set");
  children.join_all();
  CHECK(event.is_set());
}

TEST_CASE("Event: a waiter in another process times out", "[sync][event]") {
  mpx::Event event;
  mpx::Queue<std::string> out;
  Children children;
  children.start(helper(), wait_event, event, out, 0.2);
  CHECK(out.get(true, 30s) == "waiting");
  CHECK(out.get(true, 30s) == "timeout");
  children.join_all();
}

// ---- Condition -----------------------------------------------------------------------------------------------

TEST_CASE("Condition: wait and notify need the lock; wait times out; wait_for checks its predicate",
          "[sync][condition]") {
  mpx::Condition cond;
  CHECK_THROWS_AS(cond.wait(0.01s), mpx::ValueError);
  CHECK_THROWS_AS(cond.notify(), mpx::ValueError);
  CHECK_THROWS_AS(cond.notify_all(), mpx::ValueError);
  std::scoped_lock guard(cond);
  cond.notify();  // nobody waits: nothing happens
  auto begin = Clock::now();
  CHECK_FALSE(cond.wait(0.1s));
  CHECK(Clock::now() - begin >= 90ms);
  CHECK_FALSE(cond.wait(0s));
  int calls = 0;
  begin = Clock::now();
  CHECK_FALSE(cond.wait_for([&] { return ++calls > 1000; }, 0.15s));
  CHECK(Clock::now() - begin >= 140ms);
  CHECK(calls >= 2);
  CHECK(cond.wait_for([] { return true; }, 0s));
}

TEST_CASE("Condition over an RLock held twice: wait gives up both levels and gets both back", "[sync][condition]") {
  mpx::RLock rlock;
  mpx::Condition cond(rlock);
  mpx::Queue<std::string> out;
  REQUIRE(cond.acquire());
  REQUIRE(cond.acquire());
  Children children;
  children.start(helper(), acquire_condition_and_notify, cond, out);
  CHECK(cond.wait(30s));  // the child could take the lock only because wait released both levels
  CHECK(out.get(true, 5s) == "in");
  CHECK(rlock.locked());
  cond.release();
  CHECK(rlock.locked());
  cond.release();
  CHECK_FALSE(rlock.locked());
  CHECK_THROWS_AS(cond.release(), mpx::ValueError);
  children.join_all();
}

// Polls `done` until it holds or 30 s pass; returns its last value.
template <class Done>
bool wait_until(Done done) {
  const auto deadline = Clock::now() + 30s;
  while (!done() && Clock::now() < deadline) std::this_thread::yield();
  return done();
}

// An RLock is owned by the process, so a second thread would "re-enter" the lock the first one holds: two threads
// inside the Condition's lock at once, and a wait() in either would lend the coordinator the other's levels too (that
// one's release then fails, inside a lock guard's destructor, which is std::terminate). acquire() and wait() refuse
// instead, before anything is taken or lent, and say why.
TEST_CASE("Condition over the process-owned RLock used by two threads: a clear error, not std::terminate",
          "[sync][condition]") {
  mpx::RLock rlock;
  mpx::Condition cond(rlock);  // what Condition() makes
  std::atomic<int> stage{0};
  std::atomic<bool> holder_waited{false};
  std::thread holder([&] {
    std::scoped_lock guard(cond);
    stage = 1;
    wait_until([&] { return stage.load() == 2; });
    (void)cond.wait(0.01s);  // its own wait is fine: the other thread holds nothing
    holder_waited = true;
  });
  REQUIRE(wait_until([&] { return stage.load() == 1; }));
  CHECK_THROWS_AS(cond.acquire(true, 5s), mpx::ValueError);
  CHECK_THROWS_WITH(cond.acquire(true, 5s), Catch::Contains("Condition.acquire: another thread of this process "
                                                             "holds the Condition's lock"));
  CHECK_THROWS_AS(cond.try_lock(), mpx::ValueError);
  CHECK_THROWS_AS(std::unique_lock(cond), mpx::ValueError);
  CHECK_THROWS_AS(cond.wait(0.1s), mpx::ValueError);
  CHECK_THROWS_WITH(cond.wait(0.1s), Catch::Contains("another thread of this process holds the Condition's lock"));
  CHECK(rlock.locked());  // still the holder's alone
  stage = 2;
  holder.join();
  CHECK(holder_waited);
  CHECK_FALSE(rlock.locked());
  // One thread at a time, the Condition works as before, re-entry included.
  std::scoped_lock guard(cond);
  REQUIRE(cond.acquire(true, 5s));
  cond.release();
  CHECK_FALSE(cond.wait(0.01s));
}

// Over a Lock, a second thread of the process waits its turn: it is not refused.
TEST_CASE("Condition over a Lock used by two threads: the second acquire waits for the first release",
          "[sync][condition]") {
  mpx::Lock lock;
  mpx::Condition cond(lock);
  std::atomic<int> stage{0};
  std::thread holder([&] {
    std::scoped_lock guard(cond);
    stage = 1;
    wait_until([&] { return stage.load() == 2; });
  });
  REQUIRE(wait_until([&] { return stage.load() == 1; }));
  CHECK_FALSE(cond.acquire(true, 0.05s));  // waited, and timed out: the holder still has it
  stage = 2;
  REQUIRE(cond.acquire(true, 30s));
  cond.release();
  holder.join();
}

TEST_CASE("Condition over a Lock: notify wakes one waiter, notify_all the rest", "[sync][condition]") {
  mpx::Lock lock;
  mpx::Condition cond(lock);
  mpx::Queue<std::string> out;
  Children children;
  for (int i = 0; i < 3; ++i) children.start(helper(), wait_for_notify, cond, out);
  for (int i = 0; i < 3; ++i) REQUIRE(out.get(true, 30s) == "ready");
  {
    // Each child said "ready" holding the lock and released it only by waiting: all three wait now.
    std::scoped_lock guard(lock);
    cond.notify();
  }
  CHECK(out.get(true, 30s) == "notified");
  CHECK_THROWS_AS(out.get(true, 0.3s), mpx::Empty);
  {
    std::scoped_lock guard(cond);
    cond.notify_all();
  }
  CHECK(out.get(true, 30s) == "notified");
  CHECK(out.get(true, 30s) == "notified");
  children.join_all();
}

TEST_CASE("Condition: 2 producers and 2 consumers share a buffer", "[sync][condition]") {
  ScratchFile buffer("buffer");
  write_number(buffer.path, 0);
  mpx::Condition cond;
  mpx::Queue<int> taken;
  Children children;
  for (int i = 0; i < 2; ++i) children.start(helper(), consume_items, cond, buffer.path, 50, taken);
  for (int i = 0; i < 2; ++i) children.start(helper(), produce_items, cond, buffer.path, 50);
  CHECK(taken.get(true, 60s) + taken.get(true, 60s) == 100);
  children.join_all();
  CHECK(read_number(buffer.path) == 0);
}

// ---- Barrier -------------------------------------------------------------------------------------------------

TEST_CASE("Barrier: 5 processes; indexes 0..4; the last arriver runs the action before anyone is released",
          "[sync][barrier]") {
  ScratchFile log("barrier");
  mpx::Barrier barrier(5, barrier_action);
  CHECK(barrier.parties() == 5);
  mpx::Queue<std::vector<long>> out;
  Children children;
  for (int i = 0; i < 5; ++i) children.start(helper(), barrier_party, barrier, out);
  std::set<long> indexes;
  long last_pid = 0;
  for (int i = 0; i < 5; ++i) {
    auto got = out.get(true, 60s);
    indexes.insert(got[0]);
    if (got[0] == 4) last_pid = got[1];
  }
  children.join_all();
  CHECK(indexes == std::set<long>{0, 1, 2, 3, 4});
  const auto lines = read_lines(log.path);
  REQUIRE(lines.size() == 6);
  CHECK(lines[0] == "action " + std::to_string(last_pid));
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) { return l.rfind("action", 0) == 0; }) == 1);
  CHECK_FALSE(barrier.broken());
  CHECK(barrier.n_waiting() == 0);
}

TEST_CASE("Barrier: abort breaks it for waiting and later parties; reset makes it usable again", "[sync][barrier]") {
  mpx::Barrier barrier(5);
  mpx::Queue<std::string> out;
  Children children;
  for (int i = 0; i < 3; ++i) children.start(helper(), barrier_outcome, barrier, out);
  REQUIRE(waiters_reach(barrier, 3));
  barrier.abort();
  for (int i = 0; i < 3; ++i) CHECK(out.get(true, 30s) == "broken");
  CHECK(barrier.broken());
  CHECK_THROWS_AS(barrier.wait(1s), mpx::BrokenBarrierError);
  children.join_all();
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  CHECK(barrier.n_waiting() == 0);

  mpx::Barrier pair(2);
  children.start(helper(), barrier_outcome, pair, out);
  CHECK(pair.wait(30s) <= 1);
  CHECK(out.get(true, 30s) == "passed");
}

TEST_CASE("Barrier: reset while parties wait gives them BrokenBarrierError; the barrier stays usable",
          "[sync][barrier]") {
  mpx::Barrier barrier(3);
  mpx::Queue<std::string> out;
  Children children;
  children.start(helper(), barrier_outcome, barrier, out);
  REQUIRE(waiters_reach(barrier, 1));
  barrier.reset();
  CHECK(out.get(true, 30s) == "broken");
  CHECK_FALSE(barrier.broken());
  CHECK(barrier.n_waiting() == 0);
  children.start(helper(), barrier_outcome, barrier, out);
  children.start(helper(), barrier_outcome, barrier, out);
  CHECK(barrier.wait(30s) <= 2);
  CHECK(out.get(true, 30s) == "passed");
  CHECK(out.get(true, 30s) == "passed");
  children.join_all();
}

TEST_CASE("Barrier: a timeout breaks it for everyone; the default timeout applies to wait()", "[sync][barrier]") {
  mpx::Barrier barrier(3);
  mpx::Queue<std::string> out;
  Children children;
  children.start(helper(), barrier_outcome, barrier, out);
  REQUIRE(waiters_reach(barrier, 1));
  const auto begin = Clock::now();
  CHECK_THROWS_AS(barrier.wait(0.1s), mpx::BrokenBarrierError);
  CHECK(Clock::now() - begin >= 90ms);
  CHECK(out.get(true, 30s) == "broken");
  CHECK(barrier.broken());
  children.join_all();

  mpx::Barrier timed(2, nullptr, 0.15s);
  const auto start = Clock::now();
  CHECK_THROWS_AS(timed.wait(), mpx::BrokenBarrierError);
  CHECK(Clock::now() - start >= 140ms);
  CHECK(timed.broken());

  mpx::Barrier immediate(2);
  CHECK_THROWS_AS(immediate.wait(0s), mpx::BrokenBarrierError);
  CHECK(immediate.broken());

  mpx::Barrier single(1);
  CHECK(single.wait(0s) == 0);
  CHECK_THROWS_AS(mpx::Barrier(0), mpx::ValueError);
}

TEST_CASE("Barrier: an action that throws breaks it; its exception reaches the party that ran it", "[sync][barrier]") {
  mpx::Barrier barrier(3, throwing_action);
  mpx::Queue<std::string> out;
  Children children;
  for (int i = 0; i < 3; ++i) children.start(helper(), barrier_outcome, barrier, out);
  std::multiset<std::string> outcomes;
  for (int i = 0; i < 3; ++i) outcomes.insert(out.get(true, 30s));
  CHECK(outcomes == std::multiset<std::string>{"broken", "broken", "threw: the action failed"});
  CHECK(barrier.broken());
  children.join_all();
}

TEST_CASE("Barrier: a party that dies while waiting breaks it for the others", "[sync][barrier][death]") {
  mpx::Barrier barrier(3);
  mpx::Queue<std::string> out;
  Children children;
  auto& doomed = children.start(helper(), barrier_outcome, barrier, out);
  children.start(helper(), barrier_outcome, barrier, out);
  REQUIRE(waiters_reach(barrier, 2));
  doomed.kill();
  CHECK(out.get(true, 30s) == "broken");
  CHECK(barrier.broken());
  CHECK_THROWS_AS(barrier.wait(1s), mpx::BrokenBarrierError);
}

TEST_CASE("Barrier: the party running the action dies; the others get BrokenBarrierError", "[sync][barrier][death]") {
  mpx::Barrier barrier(3, dying_action);
  mpx::Queue<std::string> out;
  Children children;
  for (int i = 0; i < 3; ++i) children.start(helper(), barrier_outcome, barrier, out);
  CHECK(out.get(true, 30s) == "broken");
  CHECK(out.get(true, 30s) == "broken");
  CHECK(barrier.broken());
  int killed = 0;
  for (auto& p : children.procs) {
    REQUIRE(p.join(30s));
    killed += p.exitcode() == -SIGKILL;
  }
  CHECK(killed == 1);
}

TEST_CASE("Barrier: parties arriving while the action runs join the next generation", "[sync][barrier]") {
  ScratchFile log("barrier");
  mpx::Barrier barrier(2, slow_action);
  mpx::Queue<std::vector<long>> out;
  Children children;
  for (int i = 0; i < 2; ++i) children.start(helper(), barrier_party, barrier, out);
  for (int tries = 0; read_lines(log.path).empty() && tries < 3000; ++tries) std::this_thread::sleep_for(10ms);
  REQUIRE(read_lines(log.path).size() == 1);  // the first generation's action is running
  for (int i = 0; i < 2; ++i) children.start(helper(), barrier_party, barrier, out);
  std::multiset<long> indexes;
  for (int i = 0; i < 4; ++i) indexes.insert(out.get(true, 60s)[0]);
  children.join_all();
  CHECK(indexes == std::multiset<long>{0, 0, 1, 1});
  const auto lines = read_lines(log.path);
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) { return l.rfind("action", 0) == 0; }) == 2);
  CHECK_FALSE(barrier.broken());
}

TEST_CASE("Barrier: the action takes arguments as a Process target does, run by a child of every start method",
          "[sync][barrier]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::Queue<std::string> out;
  mpx::Barrier barrier(2, record_action, out, std::string("tag"), 7);
  // This process arrives first (on a thread), so the child arrives last and runs the action.
  std::thread first([barrier]() mutable {
    try {
      (void)barrier.wait(30s);
    } catch (const std::exception&) {
    }
  });
  REQUIRE(waiters_reach(barrier, 1));
  Children children;
  auto& child = children.start(helper(method), wait_once, barrier);
  first.join();
  CHECK(out.get(true, 30s) == "tag 7 by " + std::to_string(child.pid()));
  children.join_all();
  CHECK_FALSE(barrier.broken());

  // The bound form takes a default timeout too; the zero-argument action still works.
  mpx::Barrier single(1, mpx::bind(record_action, out, std::string("bound"), 1), 10s);
  CHECK(single.wait() == 0);
  CHECK(out.get(true, 30s) == "bound 1 by " + std::to_string(::getpid()));
  mpx::Barrier timed(2, mpx::bind(record_action, out, std::string("never"), 0), 0.1s);
  CHECK_THROWS_AS(timed.wait(), mpx::BrokenBarrierError);
  mpx::Barrier plain(1, [] {});
  CHECK(plain.wait() == 0);
  CHECK(out.empty());
}

// ---- every handle, every start method --------------------------------------------------------------------------

TEST_CASE("every sync handle passes as a Process argument under fork, forkserver and spawn", "[sync][handles]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::Lock lock;
  mpx::RLock rlock;
  mpx::Semaphore sem(1);
  mpx::BoundedSemaphore bounded(1);
  mpx::Event event;
  mpx::Condition cond(lock);
  mpx::Barrier barrier(2);
  mpx::Queue<std::string> out;
  REQUIRE(lock.acquire());
  Children children;
  children.start(helper(method), use_every_handle, lock, rlock, sem, bounded, event, cond, barrier, out);
  CHECK(out.get(true, 60s) == "lock busy");
  CHECK(out.get(true, 30s) == "bounded ok");
  CHECK(sem.get_value() == 0);  // the child holds the unit (it comes back when the child exits)
  lock.release();               // the child's Condition needs it
  CHECK(barrier.wait(30s) <= 1);
  CHECK(out.get(true, 30s).rfind("index ", 0) == 0);
  children.join_all();
  CHECK(event.is_set());
  CHECK_FALSE(rlock.locked());
}

// ---- malformed requests --------------------------------------------------------------------------------------

TEST_CASE("malformed requests to the sync service get an error reply and change nothing", "[sync][malformed]") {
  using mpx::wire::Kind;
  const std::string nil = mpx::encode(mpx::Object{});
  mpx::Lock lock;
  mpx::Semaphore sem(1);
  mpx::Event event;
  mpx::Barrier barrier(2);
  mpx::Condition cond(lock);
  mpx::Queue<int> queue;

  // Wrong object ids: nonexistent, and an object of another service or another sync type.
  CHECK(error_code(raw_request(Kind::lock_acquire, 999999999, {mpx::encode(std::make_tuple(0))})) == unknown_object);
  CHECK(error_code(raw_request(Kind::lock_acquire, queue.id(), {mpx::encode(std::make_tuple(0))})) == unknown_object);
  CHECK(error_code(raw_request(Kind::sem_release, lock.id(), {nil})) == unknown_object);
  CHECK(error_code(raw_request(Kind::event_set, sem.id(), {nil})) == unknown_object);
  CHECK(error_code(raw_request(Kind::barrier_abort, event.id(), {nil})) == unknown_object);
  CHECK(error_code(raw_request(Kind::cond_notify, barrier.id(), {mpx::encode(std::make_tuple(1))})) == unknown_object);
  CHECK(error_code(raw_request(Kind::cond_create, 0, {mpx::encode(std::make_tuple(sem.id()))})) == unknown_object);
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(barrier.broken());
  CHECK(sem.get_value() == 1);

  // Garbage bodies: wrong arity, wrong types, random bytes, missing or extra frames.
  const std::vector<std::vector<std::string>> garbage = {
      {},
      {std::string("\xc1", 1)},
      {std::string("\xdd\xff\xff\xff\xff", 5)},
      {mpx::encode(std::string("acquire"))},
      {mpx::encode(std::make_tuple(0, 1))},
      {mpx::encode(std::make_tuple(true))},
      {nil, nil},
  };
  for (const auto& body : garbage) {
    CHECK(error_code(raw_request(Kind::lock_acquire, lock.id(), body)) == malformed);
    CHECK(error_code(raw_request(Kind::sem_acquire, sem.id(), body)) == malformed);
    CHECK(error_code(raw_request(Kind::event_set, event.id(), body)) == malformed);
    CHECK(error_code(raw_request(Kind::sem_release, sem.id(), body)) == malformed);
    CHECK(error_code(raw_request(Kind::barrier_wait, barrier.id(), body)) == malformed);
    CHECK(error_code(raw_request(Kind::barrier_abort, barrier.id(), body)) == malformed);
    CHECK(error_code(raw_request(Kind::cond_wait, cond.id(), body)) == malformed);
  }
  CHECK_FALSE(lock.locked());
  CHECK(sem.get_value() == 1);
  CHECK_FALSE(event.is_set());
  CHECK(barrier.n_waiting() == 0);
  CHECK_FALSE(barrier.broken());

  // While held: a garbage release leaves it held.
  REQUIRE(lock.acquire());
  CHECK(error_code(raw_request(Kind::lock_release, lock.id(), {mpx::encode(std::make_tuple(1))})) == malformed);
  CHECK(lock.locked());
  lock.release();

  // A posted release of a lock this process does not hold: no reply is awaited, it is counted and changes nothing.
  mpx::Lock other;
  const auto before = malformed_count();
  mpx::runtime::Channel::current().post(mpx::wire::make(Kind::lock_release_posted, other.id(), 0, mpx::Object{}));
  CHECK(malformed_count() == before + 1);
  CHECK_FALSE(other.locked());
  CHECK(other.acquire(false));
  other.release();
}

// ---- speed (hidden: run with `test_sync [bench]`) --------------------------------------------------------------

TEST_CASE("uncontended Lock acquire+release against a ping round trip", "[.][bench]") {
  mpx::Lock lock;
  auto& channel = mpx::runtime::Channel::current();
  auto ping = [&] {
    (void)channel.request(mpx::wire::make(mpx::wire::Kind::ping, 0, 0, mpx::Object{}), std::chrono::milliseconds(10000));
  };
  auto lock_unlock = [&] {
    lock.acquire();
    lock.release();
  };
  for (int i = 0; i < 2000; ++i) {
    ping();
    lock_unlock();
  }
  double best_ping = 1e9, best_lock = 1e9;
  for (int round = 0; round < 5; ++round) {
    best_ping = std::min(best_ping, mean_us(20000, ping));
    best_lock = std::min(best_lock, mean_us(20000, lock_unlock));
  }
  std::printf("ping round trip: %.2f us; Lock acquire+release: %.2f us (%.2fx)\n", best_ping, best_lock,
              best_lock / best_ping);
  CHECK(best_lock <= 1.5 * best_ping);
}

TEST_CASE("zero and negative timeouts do not wait: Event, Lock, Semaphore, Condition", "[sync][timeout]") {
  mpx::Event event;
  mpx::Lock lock;
  mpx::Semaphore semaphore(0);
  mpx::Condition condition;
  REQUIRE(lock.acquire());
  for (const auto seconds : {-1.0, -0.001, 0.0}) {
    const auto timeout = std::chrono::duration<double>(seconds);
    const auto begin = Clock::now();
    CHECK_FALSE(event.wait(timeout));
    CHECK_FALSE(lock.acquire(true, timeout));
    CHECK_FALSE(semaphore.acquire(true, timeout));
    condition.acquire();
    CHECK_FALSE(condition.wait(timeout));
    CHECK_FALSE(condition.wait_for([] { return false; }, timeout));
    condition.release();
    CHECK(Clock::now() - begin < 10s);  // no wait at all; generous on a loaded machine
  }
  lock.release();
}
