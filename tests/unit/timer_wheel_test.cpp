// The coordinator's timer wheel, driven by an explicit clock so the test is exact.
#include <catch2/catch.hpp>

#include "runtime/timer_wheel.hpp"

using mpx::runtime::TimerWheel;
using namespace std::chrono_literals;

TEST_CASE("timers fire at their deadline, not before, in any order of scheduling", "[timer]") {
  const auto t0 = TimerWheel::Clock::now();
  TimerWheel wheel(1ms, 8, t0);
  std::vector<int> fired;
  wheel.schedule(t0 + 5ms, [&] { fired.push_back(5); });
  wheel.schedule(t0 + 2ms, [&] { fired.push_back(2); });
  wheel.schedule(t0 + 30ms, [&] { fired.push_back(30); });  // several turns of an 8-slot wheel
  CHECK(wheel.size() == 3);
  CHECK(wheel.next_timeout_ms(t0) == 2);

  CHECK(wheel.advance(t0 + 1ms) == 0);
  CHECK(wheel.advance(t0 + 2ms) == 1);
  CHECK(fired == std::vector<int>{2});
  CHECK(wheel.advance(t0 + 29ms) == 1);
  CHECK(fired == std::vector<int>{2, 5});
  CHECK(wheel.next_timeout_ms(t0 + 29ms) >= 0);
  CHECK(wheel.advance(t0 + 30ms) == 1);
  CHECK(fired == std::vector<int>{2, 5, 30});
  CHECK(wheel.size() == 0);
  CHECK(wheel.next_timeout_ms(t0 + 30ms) == -1);
}

TEST_CASE("a cancelled timer never fires, and cancel reports what it did", "[timer]") {
  const auto t0 = TimerWheel::Clock::now();
  TimerWheel wheel(1ms, 16, t0);
  bool fired = false;
  auto id = wheel.schedule(t0 + 3ms, [&] { fired = true; });
  CHECK(wheel.cancel(id));
  CHECK_FALSE(wheel.cancel(id));
  wheel.advance(t0 + 10ms);
  CHECK_FALSE(fired);
}

TEST_CASE("a timer in the past fires on the next advance; callbacks may schedule more", "[timer]") {
  const auto t0 = TimerWheel::Clock::now();
  TimerWheel wheel(1ms, 4, t0);
  wheel.advance(t0 + 100ms);
  int count = 0;
  wheel.schedule(t0, [&] {
    ++count;
    wheel.schedule(t0 + 102ms, [&] { ++count; });
  });
  CHECK(wheel.next_timeout_ms(t0 + 100ms) == 0);
  CHECK(wheel.advance(t0 + 100ms) == 1);
  CHECK(count == 1);
  CHECK(wheel.advance(t0 + 102ms) == 1);
  CHECK(count == 2);
}

TEST_CASE("a late wake-up fires everything overdue, even past a full turn", "[timer]") {
  const auto t0 = TimerWheel::Clock::now();
  TimerWheel wheel(1ms, 4, t0);
  int count = 0;
  for (int i = 1; i <= 10; ++i) wheel.schedule(t0 + std::chrono::milliseconds(i), [&] { ++count; });
  CHECK(wheel.advance(t0 + 50ms) == 10);
  CHECK(count == 10);
}
