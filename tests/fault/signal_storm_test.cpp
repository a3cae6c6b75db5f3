// A signal with a handler arriving every millisecond never breaks a blocking call (PEP 475): each call of the API
// returns its right result, and a timed one still times out close to its timeout, in the root and in a child, with
// and without SA_RESTART.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/time.h>

#include "children.hpp"

using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<long> alarms{0};
void count_alarm(int) { alarms.fetch_add(1, std::memory_order_relaxed); }

// SIGALRM every millisecond, handled by a counter, for the life of the object.
class AlarmStorm {
 public:
  explicit AlarmStorm(bool restart) {
    struct sigaction action {};
    action.sa_handler = &count_alarm;
    sigemptyset(&action.sa_mask);
    action.sa_flags = restart ? SA_RESTART : 0;
    ::sigaction(SIGALRM, &action, &previous_);
    const itimerval every_ms{{0, 1000}, {0, 1000}};
    ::setitimer(ITIMER_REAL, &every_ms, nullptr);
  }
  ~AlarmStorm() {
    const itimerval off{};
    ::setitimer(ITIMER_REAL, &off, nullptr);
    ::sigaction(SIGALRM, &previous_, nullptr);
  }
  AlarmStorm(const AlarmStorm&) = delete;
  AlarmStorm& operator=(const AlarmStorm&) = delete;

 private:
  struct sigaction previous_ {};
};

// A child's (and the root's) way to fail a check: an exception, so a child exits with 1 and prints it.
void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("check failed: " + what);
}

constexpr auto timeout = 300ms;

// A timed wait that found nothing: it lasted about its timeout (generous upper bound: the machine is loaded).
void require_timed_out(Clock::time_point begin, const std::string& what) {
  const auto took = Clock::now() - begin;
  require(took >= timeout - 10ms, what + " returned early, after " +
                                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
                                      " ms");
  require(took < timeout + 5s, what + " overran its timeout");
}

// The partners of the blocking calls: each lets the caller block for a while (under the storm) before it answers.
void set_later(mpx::Event event) {
  std::this_thread::sleep_for(100ms);
  event.set();
}
void hold_lock_then_release(mpx::Lock lock, mpx::Event held) {
  lock.acquire();
  held.set();
  std::this_thread::sleep_for(timeout + 200ms);
  lock.release();
}
void release_later(mpx::Semaphore semaphore) {
  std::this_thread::sleep_for(100ms);
  semaphore.release();
}
void notify_later(mpx::Condition condition) {
  std::this_thread::sleep_for(100ms);
  condition.acquire();
  condition.notify_all();
  condition.release();
}
void arrive_later(mpx::Barrier barrier) {
  std::this_thread::sleep_for(100ms);
  (void)barrier.wait();
}
void put_later(mpx::Queue<int> queue) {
  std::this_thread::sleep_for(100ms);
  queue.put(7);
}
void send_later(mpx::Connection connection) {
  std::this_thread::sleep_for(100ms);
  connection.send(std::string("late"));
}
void hold_value_lock(mpx::Value<int> value, mpx::Event held) {
  value.get_lock().acquire();
  held.set();
  std::this_thread::sleep_for(timeout + 200ms);
  value.get_lock().release();
}
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
int slow_square(int x) {
  std::this_thread::sleep_for(150ms);
  return x * x;
}

void start(mpx::Process& p) {
  p.set_daemon(true);
  p.start();
}

// Every blocking call of the API under the storm: a timed call that finds nothing, then one that is answered.
void blocking_calls_under_storm(bool restart) {
  mpx::Event event;
  mpx::Lock lock;
  mpx::Semaphore semaphore(0);
  mpx::Condition condition;
  mpx::Barrier barrier(2);
  mpx::Queue<int> queue;
  auto [mine, theirs] = mpx::Pipe();
  mpx::Value<int> value(0);
  mpx::Pool pool(1);
  auto square = pool.apply_async(slow_square, 12);  // the pool started before the storm; its task ends during it

  AlarmStorm storm(restart);
  const long alarms_before = alarms.load();

  auto begin = Clock::now();
  require(!event.wait(timeout), "Event::wait(timeout)");
  require_timed_out(begin, "Event::wait");
  mpx::Process setter(set_later, event);
  start(setter);
  require(event.wait(), "Event::wait()");

  mpx::Event held;
  mpx::Process holder(hold_lock_then_release, lock, held);
  start(holder);
  require(held.wait(30s), "the lock's holder started");
  begin = Clock::now();
  require(!lock.acquire(true, timeout), "Lock::acquire(timeout)");
  require_timed_out(begin, "Lock::acquire");
  require(lock.acquire(), "Lock::acquire()");
  lock.release();

  begin = Clock::now();
  require(!semaphore.acquire(true, timeout), "Semaphore::acquire(timeout)");
  require_timed_out(begin, "Semaphore::acquire");
  mpx::Process releaser(release_later, semaphore);
  start(releaser);
  require(semaphore.acquire(), "Semaphore::acquire()");

  condition.acquire();
  begin = Clock::now();
  require(!condition.wait(timeout), "Condition::wait(timeout)");
  require_timed_out(begin, "Condition::wait");
  mpx::Process notifier(notify_later, condition);
  start(notifier);
  require(condition.wait(), "Condition::wait()");
  condition.release();

  mpx::Process arriver(arrive_later, barrier);
  start(arriver);
  const auto index = barrier.wait();
  require(index <= 1, "Barrier::wait()");

  begin = Clock::now();
  bool empty = false;
  try {
    (void)queue.get(true, timeout);
  } catch (const mpx::Empty&) {
    empty = true;
  }
  require(empty, "Queue::get(timeout) raises Empty");
  require_timed_out(begin, "Queue::get");
  mpx::Process putter(put_later, queue);
  start(putter);
  require(queue.get() == 7, "Queue::get()");

  begin = Clock::now();
  require(!mine.poll(timeout), "Connection::poll(timeout)");
  require_timed_out(begin, "Connection::poll");
  mpx::Process sender(send_later, theirs);
  start(sender);
  require(mine.recv<std::string>() == "late", "Connection::recv()");
  // A second pipe: the first one's other end was released when its sender exited.
  auto [mine_again, theirs_again] = mpx::Pipe();
  mpx::Process sender_again(send_later, theirs_again);
  start(sender_again);
  require(mine_again.poll(30s), "Connection::poll(30 s)");
  require(mine_again.recv<std::string>() == "late", "Connection::recv() after poll");

  mpx::Event value_held;
  mpx::Process value_holder(hold_value_lock, value, value_held);
  start(value_holder);
  require(value_held.wait(30s), "the Value's lock holder started");
  begin = Clock::now();
  require(!value.get_lock().acquire(true, timeout), "Value lock acquire(timeout) (the futex)");
  require_timed_out(begin, "Value lock acquire");
  require(value.get_lock().acquire(), "Value lock acquire()");
  value.get_lock().release();

  mpx::Process sleeper(sleep_ms, 2000);
  start(sleeper);
  begin = Clock::now();
  require(!sleeper.join(timeout), "Process::join(timeout)");
  require_timed_out(begin, "Process::join");
  sleeper.join();
  require(sleeper.exitcode() == 0, "Process::join()");

  require(square.get() == 144, "AsyncResult::get()");

  for (auto* p : {&setter, &holder, &releaser, &notifier, &arriver, &putter, &sender, &sender_again, &value_holder}) {
    p->join();
    require(p->exitcode() == 0, "partner " + p->name() + " exited with 0");
  }
  require(alarms.load() - alarms_before > 100, "the storm was on (" + std::to_string(alarms.load() - alarms_before) +
                                                    " alarms)");
}

void storm_in_child(bool restart) { blocking_calls_under_storm(restart); }

}  // namespace

TEST_CASE("a SIGALRM storm during every blocking call of the API, in the root", "[signals]") {
  const bool restart = GENERATE(false, true);
  INFO("SA_RESTART " << restart);
  REQUIRE_NOTHROW(blocking_calls_under_storm(restart));
}

TEST_CASE("a SIGALRM storm during every blocking call of the API, in a child", "[signals]") {
  const bool restart = GENERATE(false, true);
  const auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("SA_RESTART " << restart << ", start method " << mpx::to_string(method));
  mpx_test::Children children;
  auto& child = children.start(mpx::ProcessOptions{"", false, method}, storm_in_child, restart);
  REQUIRE(child.join(120s));
  CHECK(child.exitcode() == 0);
}
