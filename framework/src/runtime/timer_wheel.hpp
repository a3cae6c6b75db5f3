// A hashed timing wheel for the coordinator's deadlines: O(1) to schedule and cancel, and the poll loop asks it how
// long it may sleep. Single-threaded: only the coordinator thread touches it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <vector>

namespace mpx::runtime {

class TimerWheel {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = std::uint64_t;

  explicit TimerWheel(std::chrono::milliseconds tick = std::chrono::milliseconds(1), std::size_t slots = 512,
                      Clock::time_point origin = Clock::now());

  // Runs `fire` at the first advance() at or after `deadline`. Returns an id for cancel().
  Id schedule(Clock::time_point deadline, std::function<void()> fire);
  // Returns false if the timer already fired or was cancelled.
  bool cancel(Id id);
  // Fires every timer whose deadline is at or before `now`; returns how many fired. A timer may schedule or cancel
  // others from inside its callback.
  std::size_t advance(Clock::time_point now);
  // How long the poll loop may sleep before the next timer could be due: -1 when there is none.
  long next_timeout_ms(Clock::time_point now) const;
  std::size_t size() const noexcept { return index_.size(); }

 private:
  struct Entry {
    Id id;
    std::uint64_t due_tick;
    std::function<void()> fire;
  };
  std::uint64_t tick_of(Clock::time_point t) const;

  std::chrono::milliseconds tick_;
  Clock::time_point origin_;
  std::vector<std::list<Entry>> slots_;
  std::unordered_map<Id, std::pair<std::size_t, std::list<Entry>::iterator>> index_;
  std::uint64_t current_tick_ = 0;  // every tick before this one has been processed; this one may hold more
  Id next_id_ = 1;
};

}  // namespace mpx::runtime
