// Value, Array, RawValue, RawArray and SharedMemory with real processes and real /dev/shm segments: exact sums with
// fetch_add and with the lock, a lock holder SIGKILLed mid-critical-section, segment clean-up after a normal exit and
// after a SIGKILLed root, the remote mode, handles under every start method, and bad arguments and messages.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/channel.hpp"
#include "wire/envelope.hpp"
#include "children.hpp"

using namespace std::chrono_literals;

namespace {

using mpx_test::Children;

mpx::ProcessOptions with(mpx::StartMethod method) { return mpx::ProcessOptions{"", true, method}; }

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("child check failed: " + what);
}

bool segment_exists(const std::string& name) { return std::filesystem::exists("/dev/shm/" + name); }

struct Pair {
  std::int64_t a;
  std::int64_t b;
  std::int64_t c;  // 24 bytes: not one atomic access, so value()/set() take the lock
};

// ---- children ------------------------------------------------------------------------------------------------

void add_atomically(mpx::Value<long> v, mpx::Array<int> a, int times) {
  for (int i = 0; i < times; ++i) {
    v.fetch_add(1);
    a[static_cast<std::size_t>(i % 3)].fetch_add(1);
  }
}

void add_locked(mpx::Value<long> v, mpx::Value<Pair> pair, int times) {
  for (int i = 0; i < times; ++i) {
    {
      std::scoped_lock guard(v.get_lock());
      v.set(v.value() + 1);  // not atomic by itself: the lock makes the read-modify-write whole
    }
    pair.with_lock([](Pair& p) {
      ++p.a;
      p.b += 2;
      p.c = p.a + p.b;
    });
  }
}

void hold_lock_and_hang(mpx::Value<long> v, mpx::Event held) {
  v.get_lock().lock();
  v.set(42);  // mid-critical-section: the second half never happens
  held.set();
  for (;;) ::pause();
}

void hold_lock_then_release(mpx::Value<long> v, mpx::Event held, mpx::Event go) {
  std::scoped_lock guard(v.get_lock());
  held.set();
  go.wait();
}

// Blocks in acquire with no timeout: only the holder's release or recovery can end the wait.
void wait_for_lock(mpx::Value<long> v, mpx::Event waiting, mpx::Value<int> outcome) {
  auto& lock = v.get_lock();
  waiting.set();
  lock.acquire();
  outcome.set(lock.previous_owner_died() ? 1 : 2);
  v.set(v.value() + 1);
  lock.release();
}

void lock_loop(mpx::Value<long> v) {
  for (;;) {
    std::scoped_lock guard(v.get_lock());
    v.set(v.value() + 1);
  }
}

// Dies holding the lock right after taking it, at a different iteration each time.
void lock_then_die(mpx::Value<long> v, int iterations) {
  auto& lock = v.get_lock();
  for (int i = 0; i < iterations; ++i) {
    lock.lock();
    v.set(v.value() + 1);
    lock.unlock();
  }
  lock.lock();
  ::kill(::getpid(), SIGKILL);
}

// One thread of this process takes the lock and ends without releasing it; the process lives on.
void thread_exits_holding(mpx::Value<long> v, mpx::Event done) {
  std::thread([&v] { v.get_lock().lock(); }).join();
  done.set();
  for (;;) ::pause();
}

void negate(mpx::Value<double> n, mpx::Array<int> a, mpx::SharedMemory block) {
  n.set(3.1415927);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = -a[i];
  auto bytes = block.buf();
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i + 1);
}

void remote_worker(mpx::Value<long> v, mpx::Array<int> a, int times) {
  require(v.is_remote() && a.is_remote(), "handles are in remote mode");
  for (int i = 0; i < times; ++i) {
    v.fetch_add(1);
    a.with_lock([](std::span<int> s) { s[0] += 1; });
  }
}

// A Pool task: every call adds to the shared counters and marks its own byte of the block, so the owner sees each
// call's effect in memory it mapped itself. Returns whether this worker's Value handle is remote.
bool pool_mark(mpx::Value<long> v, mpx::Array<int> a, mpx::SharedMemory block, int i) {
  v.fetch_add(1);
  a[static_cast<std::size_t>(i) % a.size()].fetch_add(i);
  block.buf()[static_cast<std::size_t>(i)] = static_cast<std::byte>(i + 1);
  return v.is_remote();
}

void remote_by_environment(mpx::Value<long> v, mpx::SharedMemory block) {
  require(v.is_remote(), "MPX_SHM_REMOTE=1 makes the Value remote");
  require(block.is_remote(), "MPX_SHM_REMOTE=1 makes the SharedMemory remote");
  v.with_lock([](long& x) { x += 100; });
  const std::byte b[] = {std::byte{7}, std::byte{8}};
  block.write(2, b);
}

void attach_and_exit(std::string name) {
  mpx::SharedMemory block(name);
  require(block.size() >= 16, "attached size");
  auto bytes = block.buf();
  bytes[0] = std::byte{0x5a};
  block.close();
}

// ---- helpers for the session tests ---------------------------------------------------------------------------

// Runs this test binary as a separate root session running the hidden helper test in `mode`; returns its pid and the
// read end of a pipe on which it reports segment names.
pid_t start_session_helper(const std::string& mode, int* read_fd) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = mpx_test::spawn_session(
      "shm session helper", {"MPX_SHM_HELPER_MODE=" + mode, "MPX_SHM_HELPER_FD=" + std::to_string(fds[1])}, fds[0]);
  ::close(fds[1]);
  *read_fd = fds[0];
  return pid;
}

// Reads names, one a line, until "ready".
std::vector<std::string> read_names(int fd) {
  std::string text;
  char buffer[512];
  while (text.find("ready\n") == std::string::npos) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  std::vector<std::string> names;
  std::size_t start = 0;
  for (std::size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    std::string line = text.substr(start, end - start);
    if (line != "ready") names.push_back(line);
  }
  return names;
}

// Polls `done` until it holds or `timeout` passes (the poll interval decides nothing but how soon it is seen).
template <class Pred>
bool eventually(Pred done, std::chrono::seconds timeout = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Whether the main thread of `pid` is inside a futex system call now: the first field of /proc/.../syscall is the
// system call's number ("running" when it runs). Where that file cannot be read (no ptrace access), it cannot tell,
// and says yes: the test then checks the same outcome, only less sharply.
bool in_futex_wait(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/syscall");
  std::string first;
  if (!(in >> first)) return true;
  return first == std::to_string(SYS_futex);
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

}  // namespace

// The helper, run only by name as its own root session: creates every kind of segment, reports their names, then
// exits normally ("exit") or hangs until SIGKILLed ("hang").
TEST_CASE("shm session helper", "[.]") {
  const char* mode = std::getenv("MPX_SHM_HELPER_MODE");
  const char* fd_text = std::getenv("MPX_SHM_HELPER_FD");
  if (!mode || !fd_text) return;
  const int fd = std::atoi(fd_text);
  mpx::Value<int> v(1);
  mpx::Array<double> a(5);
  mpx::SharedMemory anonymous(std::nullopt, true, 64);
  mpx::SharedMemory named("mpxtest-user-" + std::to_string(::getpid()), true, 64);
  std::string report = v.segment_name() + "\n" + a.segment_name() + "\n" + anonymous.name() + "\n" + named.name() + "\nready\n";
  REQUIRE(::write(fd, report.data(), report.size()) == static_cast<ssize_t>(report.size()));
  if (std::string(mode) == "hang") {
    for (;;) ::pause();
  }
}

TEST_CASE("Value and Array hold values; Array copies out, checks indexes; Raw kinds have no lock", "[shared]") {
  mpx::Value<int> v(7);
  CHECK(v.value() == 7);
  v.set(8);
  CHECK(v.load() == 8);
  v.store(9);
  CHECK(v.value() == 9);
  CHECK(segment_exists(v.segment_name()));

  mpx::Array<int> zeros(4);
  CHECK(zeros.to_vector() == std::vector<int>{0, 0, 0, 0});
  mpx::Array<double> a({0.0, 100.0, 200.0});
  CHECK(a.size() == 3);
  a[1] += 1.5;  // a read and a write (not atomic, as in Python)
  CHECK(a[1] == 101.5);
  a.span()[2] = 7.0;
  CHECK(a.to_vector() == std::vector<double>{0.0, 101.5, 7.0});
  CHECK_THROWS_AS(a[3], mpx::IndexError);

  mpx::RawValue<long> raw(5);
  CHECK(raw.fetch_add(2) == 5);
  CHECK(raw.value() == 7);
  long expected = 6;
  CHECK_FALSE(raw.compare_exchange(expected, 1));
  CHECK(expected == 7);
  CHECK(raw.compare_exchange(expected, 1));
  CHECK(raw.value() == 1);
  mpx::RawArray<char> chars({'a', 'b'});
  CHECK(chars.to_vector() == std::vector<char>{'a', 'b'});

  mpx::Value<int> unlocked(1, false);
  CHECK_THROWS_AS(unlocked.get_lock(), mpx::ValueError);
  CHECK(v.with_lock([](int& x) { return x *= 2; }) == 18);
  CHECK(v.value() == 18);
  CHECK_THROWS_AS(v.get_lock().release(), mpx::ValueError);  // cannot release un-acquired lock
  // Recursive, like Python's RLock: value() inside the held lock does not deadlock.
  mpx::Value<Pair> pair(Pair{1, 2, 3});
  {
    std::scoped_lock guard(pair.get_lock());
    CHECK(pair.value().c == 3);
  }
}

TEST_CASE("Array slices: slice reads, assign_slice writes, bounds are checked and named", "[shared]") {
  mpx::Array<int> a({0, 1, 2, 3, 4, 5});
  CHECK(a.slice(1, 4) == std::vector<int>{1, 2, 3});
  CHECK(a.slice(0, 6) == a.to_vector());
  CHECK(a.slice(3, 3).empty());
  a.assign_slice(2, {20, 30});
  CHECK(a.to_vector() == std::vector<int>{0, 1, 20, 30, 4, 5});
  a.assign_slice(6, {});  // an empty write at the end is in range
  CHECK_THROWS_AS(a.slice(2, 7), mpx::IndexError);
  CHECK_THROWS_WITH(a.slice(2, 7), Catch::Contains("slice [2:7]"));
  CHECK_THROWS_AS(a.slice(4, 2), mpx::IndexError);
  CHECK_THROWS_WITH(a.slice(4, 2), Catch::Contains("slice [4:2]"));
  CHECK_THROWS_AS(a.assign_slice(5, {1, 2}), mpx::IndexError);
  CHECK_THROWS_WITH(a.assign_slice(5, {1, 2}), Catch::Contains("slice assignment [5:7]") && Catch::Contains("Array of 6"));
  CHECK(a.to_vector() == std::vector<int>{0, 1, 20, 30, 4, 5});  // a refused write changes nothing

  // Through the coordinator (what a process on another host does), and on a struct that is not one atomic access.
  auto remote = a.as_remote();
  CHECK(remote.slice(2, 4) == std::vector<int>{20, 30});
  remote.assign_slice(0, {7, 8});
  CHECK(a.slice(0, 3) == std::vector<int>{7, 8, 20});
  mpx::RawArray<Pair> pairs({Pair{1, 2, 3}, Pair{4, 5, 6}});
  pairs.assign_slice(1, {Pair{7, 8, 9}});
  CHECK(pairs.slice(1, 2).at(0).c == 9);
}

TEST_CASE("concurrent fetch_add from 4 processes sums exactly", "[shared]") {
  constexpr int times = 50000;
  mpx::Value<long> v(0);
  mpx::Array<int> a(3);
  Children kids;
  for (int i = 0; i < 4; ++i) kids.start(add_atomically, v, a, times);
  kids.join_all();
  CHECK(v.value() == 4L * times);
  const auto cells = a.to_vector();
  CHECK(cells[0] + cells[1] + cells[2] == 4 * times);
}

TEST_CASE("locked increments from 4 processes sum exactly, for a T that is not one atomic access", "[shared]") {
  constexpr int times = 5000;
  mpx::Value<long> v(0);
  mpx::Value<Pair> pair(Pair{0, 0, 0});
  Children kids;
  for (int i = 0; i < 4; ++i) kids.start(add_locked, v, pair, times);
  kids.join_all();
  CHECK(v.value() == 4L * times);
  const Pair p = pair.value();
  CHECK(p.a == 4L * times);
  CHECK(p.b == 8L * times);
  CHECK(p.c == p.a + p.b);
}

TEST_CASE("a lock holder SIGKILLed mid-critical-section: the next locker is told and the data is usable", "[shared]") {
  for (bool remote_holder : {false, true}) {
    DYNAMIC_SECTION((remote_holder ? "holder in remote mode" : "holder maps the segment")) {
      mpx::Value<long> v(0);
      mpx::Event held;
      Children kids;
      auto& holder = kids.start(hold_lock_and_hang, remote_holder ? v.as_remote() : v, held);
      REQUIRE(held.wait(30s));
      auto& lock = v.get_lock();
      CHECK_FALSE(lock.acquire(true, 200ms));  // held: the timed acquire gives up
      holder.kill();
      REQUIRE(holder.join(30s));
      REQUIRE(lock.acquire(true, 30s));  // Python would deadlock here
      CHECK(lock.previous_owner_died());
      CHECK(v.value() == 42);  // what the dead holder wrote
      v.set(43);
      lock.release();
      REQUIRE(lock.acquire(false));
      CHECK_FALSE(lock.previous_owner_died());
      CHECK(v.value() == 43);
      lock.release();
    }
  }
}

TEST_CASE("acquire honours block and timeout; a released lock is taken again", "[shared]") {
  mpx::Value<long> v(0);
  mpx::Event held, go;
  Children kids;
  kids.start(hold_lock_then_release, v, held, go);
  REQUIRE(held.wait(30s));
  auto& lock = v.get_lock();
  CHECK_FALSE(lock.try_lock());
  CHECK_FALSE(lock.acquire(false));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(lock.acquire(true, 300ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);
  go.set();
  REQUIRE(lock.acquire(true, 30s));
  CHECK_FALSE(lock.previous_owner_died());
  lock.release();
  kids.join_all();
}

TEST_CASE("the lock is recursive for its thread and excludes the other threads of the same process", "[shared]") {
  mpx::Value<long> v(0);
  auto& lock = v.get_lock();
  REQUIRE(lock.acquire());
  REQUIRE(lock.acquire(false));  // the same thread again: at once, like Python's RLock
  CHECK_FALSE(lock.previous_owner_died());
  bool took = true, timed_out_took = true, release_refused = false;
  std::thread([copy = v, &took, &timed_out_took, &release_refused]() mutable {
    auto& other = copy.get_lock();
    took = other.try_lock();
    timed_out_took = other.acquire(true, 100ms);
    try {
      other.release();
    } catch (const mpx::ValueError&) {
      release_refused = true;
    }
  }).join();
  CHECK_FALSE(took);
  CHECK_FALSE(timed_out_took);
  CHECK(release_refused);
  lock.release();
  lock.release();
  CHECK_THROWS_AS(lock.release(), mpx::ValueError);  // a third release: no level is left
  std::thread([copy = v, &took]() mutable {
    took = copy.get_lock().try_lock();
    copy.get_lock().release();
  }).join();
  CHECK(took);
}

TEST_CASE("a holder SIGKILLed while another process waits with no timeout: the waiter wakes and is told",
          "[shared]") {
  mpx::Value<long> v(0);
  mpx::Value<int> outcome(0);
  mpx::Event held, waiting;
  Children kids;
  auto& holder = kids.start(hold_lock_and_hang, v, held);
  REQUIRE(held.wait(30s));
  auto& waiter = kids.start(wait_for_lock, v, waiting, outcome);
  REQUIRE(waiting.wait(30s));
  // Asleep on the lock's futex, not merely on its way to it.
  REQUIRE(eventually([&] { return in_futex_wait(waiter.pid()); }));
  holder.kill();
  REQUIRE(holder.join(30s));
  REQUIRE(waiter.join(30s));
  CHECK(waiter.exitcode() == 0);
  CHECK(outcome.value() == 1);  // it learned that the previous owner died
  CHECK(v.value() == 43);
  auto& lock = v.get_lock();
  REQUIRE(lock.acquire(false));
  CHECK_FALSE(lock.previous_owner_died());
  lock.release();
}

TEST_CASE("holders killed mid-loop, or right after acquiring, never leave the lock stuck", "[shared]") {
  mpx::Value<long> v(0);
  auto& lock = v.get_lock();
  SECTION("two processes in a tight lock loop; one is SIGKILLed, then the other") {
    for (int round = 0; round < 5; ++round) {
      Children kids;
      auto& first = kids.start(lock_loop, v);
      auto& second = kids.start(lock_loop, v);
      const long before = v.value();
      REQUIRE(eventually([&] { return v.value() >= before + 10000; }));
      first.kill();
      REQUIRE(first.join(30s));
      const long after = v.value();
      REQUIRE(eventually([&] { return v.value() >= after + 10000; }));  // the survivor is not stuck behind it
      second.kill();
      REQUIRE(second.join(30s));
      REQUIRE(lock.acquire(true, 30s));
      lock.release();
    }
  }
  SECTION("a process SIGKILLs itself right after acquiring") {
    for (int iterations : {0, 1, 1000}) {
      Children kids;
      auto& p = kids.start(lock_then_die, v, iterations);
      REQUIRE(p.join(30s));
      CHECK(p.exitcode() == -SIGKILL);
      REQUIRE(lock.acquire(true, 30s));
      CHECK(lock.previous_owner_died());
      lock.release();
    }
  }
}

TEST_CASE("a thread that exits holding the lock keeps it held until its process dies (as in Python)", "[shared]") {
  mpx::Value<long> v(0);
  mpx::Event done;
  Children kids;
  auto& p = kids.start(thread_exits_holding, v, done);
  REQUIRE(done.wait(30s));
  auto& lock = v.get_lock();
  CHECK_FALSE(lock.try_lock());
  CHECK_FALSE(lock.acquire(true, 100ms));
  p.kill();
  REQUIRE(p.join(30s));
  REQUIRE(lock.acquire(true, 30s));
  CHECK(lock.previous_owner_died());
  lock.release();
}

TEST_CASE("a remote holder's death recovers its own hold and nothing else of the coordinator's process", "[shared]") {
  mpx::Value<long> mine(0), theirs(0);
  auto& my_lock = mine.get_lock();
  REQUIRE(my_lock.acquire());  // held by this thread, in the coordinator's process, like the agents' holds
  mpx::Event held;
  Children kids;
  auto& holder = kids.start(hold_lock_and_hang, theirs.as_remote(), held);
  REQUIRE(held.wait(30s));
  holder.kill();
  REQUIRE(holder.join(30s));
  auto& their_lock = theirs.get_lock();
  REQUIRE(their_lock.acquire(true, 30s));
  CHECK(their_lock.previous_owner_died());
  their_lock.release();
  bool took = true;
  std::thread([copy = mine, &took]() mutable { took = copy.get_lock().try_lock(); }).join();
  CHECK_FALSE(took);  // still this thread's
  my_lock.release();
  CHECK_THROWS_AS(my_lock.release(), mpx::ValueError);
}

TEST_CASE("handles pass as Process arguments under fork, spawn and forkserver", "[shared]") {
  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::spawn, mpx::StartMethod::forkserver}) {
    DYNAMIC_SECTION("start method " << mpx::to_string(method)) {
      mpx::Value<double> n(0.0);
      mpx::Array<int> a({0, 1, 2, 3, 4});
      mpx::SharedMemory block(std::nullopt, true, 16);
      Children kids;
      kids.start(with(method), negate, n, a, block);
      kids.join_all();
      CHECK(n.value() == 3.1415927);
      CHECK(a.to_vector() == std::vector<int>{0, -1, -2, -3, -4});
      CHECK(block.buf()[0] == std::byte{1});
      CHECK(block.buf()[15] == std::byte{16});
    }
  }
}

TEST_CASE("handles pass as Pool task arguments under fork, spawn and forkserver, mapped or remote", "[shared]") {
  constexpr int tasks = 12;
  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::spawn, mpx::StartMethod::forkserver}) {
    for (bool remote : {false, true}) {
      DYNAMIC_SECTION("start method " << mpx::to_string(method) << (remote ? ", remote handles" : ", mapped handles")) {
        mpx::Value<long> v(0);
        mpx::Array<int> a(3);
        mpx::SharedMemory block(std::nullopt, true, tasks);
        mpx::PoolOptions options;
        options.processes = 2;
        options.method = method;
        mpx::Pool pool(options);
        std::vector<mpx::AsyncResult<bool>> results;
        for (int i = 0; i < tasks; ++i) {
          results.push_back(remote ? pool.apply_async(pool_mark, v.as_remote(), a.as_remote(), block, i)
                                   : pool.apply_async(pool_mark, v, a, block, i));
        }
        for (auto& r : results) CHECK(r.get(30s) == remote);
        pool.close();
        pool.join();
        CHECK(v.value() == tasks);
        // i goes to slot i % 3: slot 0 gets 0+3+6+9, slot 1 gets 1+4+7+10, slot 2 gets 2+5+8+11.
        CHECK(a.to_vector() == std::vector<int>{18, 22, 26});
        for (int i = 0; i < tasks; ++i) CHECK(block.buf()[static_cast<std::size_t>(i)] == static_cast<std::byte>(i + 1));
      }
    }
  }
}

TEST_CASE("remote mode: the same results through the coordinator, mixed with local handles", "[shared]") {
  constexpr int times = 500;
  mpx::Value<long> v(0);
  mpx::Array<int> a(2);
  Children kids;
  for (int i = 0; i < 2; ++i) kids.start(remote_worker, v.as_remote(), a.as_remote(), times);
  // This process keeps using the mapped memory meanwhile: both kinds of handle share the atomics and the lock.
  for (int i = 0; i < times; ++i) {
    v.fetch_add(1);
    a.with_lock([](std::span<int> s) { s[0] += 1; });
  }
  kids.join_all();
  CHECK(v.value() == 3L * times);
  CHECK(a.to_vector() == std::vector<int>{3 * times, 0});

  auto r = v.as_remote();
  CHECK(r.is_remote());
  r.set(10);
  CHECK(v.value() == 10);
  long expected = 10;
  CHECK(r.compare_exchange(expected, 11));
  CHECK_FALSE(r.compare_exchange(expected, 12));
  CHECK(expected == 11);
  CHECK(r.fetch_sub(1) == 11);
  CHECK(r.value() == 10);
  CHECK_THROWS_AS(a.as_remote().span(), mpx::ValueError);
  mpx::Value<Pair> pair(Pair{1, 2, 3});
  auto rp = pair.as_remote();
  CHECK(rp.value().c == 3);
  rp.with_lock([](Pair& p) { p.c = 30; });
  CHECK(pair.value().c == 30);

  // MPX_SHM_REMOTE=1 in a spawned child's environment: every handle it decodes is remote.
  mpx::SharedMemory block(std::nullopt, true, 8);
  ::setenv("MPX_SHM_REMOTE", "1", 1);
  Children env_kids;
  env_kids.start(with(mpx::StartMethod::spawn), remote_by_environment, v, block);
  ::unsetenv("MPX_SHM_REMOTE");
  env_kids.join_all();
  CHECK(v.value() == 110);
  CHECK(block.buf()[2] == std::byte{7});
  CHECK(block.buf()[3] == std::byte{8});
}

TEST_CASE("SharedMemory: create, attach by name, close, unlink, and no premature unlink by an attaching process",
          "[shared]") {
  const std::string name = "mpxtest-" + std::to_string(::getpid()) + "-block";
  mpx::SharedMemory block(name, true, 32);
  CHECK(block.name() == name);
  CHECK(block.size() == 32);
  CHECK(segment_exists(name));
  CHECK_THROWS_AS(mpx::SharedMemory(name, true, 32), mpx::FileExistsError);

  Children kids;
  kids.start(attach_and_exit, name);
  kids.join_all();
  CHECK(segment_exists(name));  // CPython gh-82300: the attaching process's exit unlinked it
  CHECK(block.buf()[0] == std::byte{0x5a});
  mpx::SharedMemory again(name);
  CHECK(again.size() == 32);

  auto remote = block.as_remote();
  CHECK(remote.read(0, 1)[0] == std::byte{0x5a});

  block.close();
  CHECK_THROWS_AS(block.buf(), mpx::ValueError);
  again.unlink();
  CHECK_FALSE(segment_exists(name));
  CHECK_THROWS_AS(again.unlink(), mpx::FileNotFoundError);
  CHECK(again.buf().size() == 32);  // still mapped after the unlink, as in Python
  CHECK_THROWS_AS(mpx::SharedMemory(name), mpx::FileNotFoundError);
}

TEST_CASE("bad arguments and handles of the wrong type are refused with clear errors", "[shared]") {
  CHECK_THROWS_AS(mpx::SharedMemory(std::nullopt, false), mpx::ValueError);
  CHECK_THROWS_AS(mpx::SharedMemory(std::nullopt, true, 0), mpx::ValueError);
  CHECK_THROWS_AS(mpx::SharedMemory(std::string("a/b"), true, 8), mpx::ValueError);
  CHECK_THROWS_AS(mpx::SharedMemory(std::string(""), true, 8), mpx::ValueError);
  CHECK_THROWS_AS(mpx::SharedMemory("mpxtest-no-such-block-" + std::to_string(::getpid())), mpx::FileNotFoundError);

  mpx::Value<int> v(3);
  const std::string bytes = mpx::encode(v);
  CHECK(mpx::decode<mpx::Value<int>>(bytes).value() == 3);
  CHECK_THROWS_AS(mpx::decode<mpx::Value<double>>(bytes), mpx::SerializationError);
  CHECK_THROWS_AS(mpx::decode<mpx::SharedMemory>(bytes), mpx::SerializationError);
  mpx::SharedMemory block(std::nullopt, true, 4);
  CHECK_THROWS_AS(block.read(2, 3), mpx::ValueError);
}

TEST_CASE("malformed shm requests get error replies, change nothing, and the coordinator keeps serving", "[shared]") {
  mpx::Value<int> v(5);
  const auto id = v.ref().id;
  auto& channel = mpx::runtime::Channel::current();
  auto ask = [&](mpx::wire::Envelope e) { return channel.request(std::move(e), std::chrono::milliseconds(10000)); };
  using K = mpx::wire::Kind;
  auto error_code = [](const mpx::wire::Envelope& reply) {
    REQUIRE(reply.header.kind == K::error);
    return std::get<0>(reply.body_as<std::tuple<std::uint16_t, std::string>>());
  };
  CHECK(error_code(ask(mpx::wire::make(K::shm_read, id, 0, std::make_tuple(std::uint64_t{0})))) == 1);
  CHECK(error_code(ask(mpx::wire::make(K::shm_read, id, 0, std::make_tuple(std::uint64_t{2}, std::uint64_t{1u << 20})))) == 9);
  CHECK(error_code(ask(mpx::wire::make(K::shm_read, 999999, 0, std::make_tuple(std::uint64_t{0}, std::uint64_t{4})))) == 2);
  CHECK(error_code(ask(mpx::wire::make(K::shm_atomic, id, 0,
                                       std::make_tuple(std::uint64_t{1}, std::uint64_t{1}, std::uint64_t{4},
                                                       std::uint64_t{1}, std::uint64_t{0})))) == 1);  // misaligned
  CHECK(error_code(ask(mpx::wire::make(K::shm_create, 0, 0,
                                       std::make_tuple(mpx::Object(42), std::uint64_t{8}, false, false, true)))) == 1);
  CHECK(error_code(ask(mpx::wire::make(K::shm_agent_done, id, 0, std::make_tuple(std::uint64_t{12345})))) == 1);
  CHECK(error_code(ask(mpx::wire::make(K::shm_unlock, id, 0, mpx::Object{}))) == 10);
  CHECK(v.value() == 5);
  auto listed = ask(mpx::wire::make(K::shm_list, 0, 0, mpx::Object{}));
  REQUIRE(listed.header.kind == K::ok);
  auto [names] = listed.body_as<std::tuple<std::vector<std::string>>>();
  CHECK(std::find(names.begin(), names.end(), v.segment_name()) != names.end());
  CHECK(ask(mpx::wire::make(K::ping, 0, 0, mpx::Object{})).header.kind == K::pong);
}

TEST_CASE("segments are unlinked when a session ends normally, and by the janitor after a SIGKILLed root",
          "[shared]") {
  SECTION("normal exit") {
    int fd = -1;
    const pid_t pid = start_session_helper("exit", &fd);
    const auto names = read_names(fd);
    ::close(fd);
    const int status = wait_exit(pid);
    CHECK(WIFEXITED(status));
    REQUIRE(names.size() == 4);
    for (const auto& n : names) CHECK_FALSE(segment_exists(n));
  }
  SECTION("SIGKILLed root, cleaned by its session's janitor") {
    // The root cannot unlink anything after SIGKILL: the session's janitor (runtime/session.cpp) does, at once, without
    // waiting for the next mpx program to start (issue 14, 3.5).
    int fd = -1;
    const pid_t pid = start_session_helper("hang", &fd);
    const auto names = read_names(fd);
    ::close(fd);
    REQUIRE(names.size() == 4);
    for (const auto& n : names) CHECK(segment_exists(n));
    ::kill(pid, SIGKILL);
    wait_exit(pid);
    for (const auto& n : names) CHECK(eventually([&] { return !segment_exists(n); }, 5s));
  }
}
