#include "runtime/timer_wheel.hpp"

#include <algorithm>

namespace mpx::runtime {

TimerWheel::TimerWheel(std::chrono::milliseconds tick, std::size_t slots, Clock::time_point origin)
    : tick_(tick), origin_(origin), slots_(std::max<std::size_t>(slots, 1)) {}

std::uint64_t TimerWheel::tick_of(Clock::time_point t) const {
  if (t <= origin_) return 0;
  const auto elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(t - origin_).count();
  const auto tick = std::chrono::duration_cast<std::chrono::nanoseconds>(tick_).count();
  return static_cast<std::uint64_t>((elapsed + tick - 1) / tick);  // round up: never fire early
}

TimerWheel::Id TimerWheel::schedule(Clock::time_point deadline, std::function<void()> fire) {
  const std::uint64_t due = std::max(tick_of(deadline), current_tick_);
  const std::size_t slot = due % slots_.size();
  const Id id = next_id_++;
  slots_[slot].push_back(Entry{id, due, std::move(fire)});
  index_.emplace(id, std::make_pair(slot, std::prev(slots_[slot].end())));
  return id;
}

bool TimerWheel::cancel(Id id) {
  auto it = index_.find(id);
  if (it == index_.end()) return false;
  slots_[it->second.first].erase(it->second.second);
  index_.erase(it);
  return true;
}

std::size_t TimerWheel::advance(Clock::time_point now) {
  // Ticks whose end has passed: a timer due at tick T fires once now >= origin + T*tick.
  const auto elapsed = now <= origin_ ? 0 : std::chrono::duration_cast<std::chrono::nanoseconds>(now - origin_).count();
  const std::uint64_t now_tick =
      static_cast<std::uint64_t>(elapsed / std::chrono::duration_cast<std::chrono::nanoseconds>(tick_).count());
  if (index_.empty()) {
    current_tick_ = std::max(current_tick_, now_tick);
    return 0;
  }
  std::vector<std::function<void()>> due;
  // Ticks from the last one processed through now; the last is revisited next time, so a timer scheduled for "now"
  // after an advance still fires on the following advance.
  const std::uint64_t span =
      now_tick < current_tick_ ? 0 : std::min<std::uint64_t>(now_tick - current_tick_ + 1, slots_.size());
  for (std::uint64_t i = 0; i < span; ++i) {
    auto& slot = slots_[(current_tick_ + i) % slots_.size()];
    for (auto it = slot.begin(); it != slot.end();) {
      if (it->due_tick <= now_tick) {
        due.push_back(std::move(it->fire));
        index_.erase(it->id);
        it = slot.erase(it);
      } else {
        ++it;
      }
    }
  }
  current_tick_ = std::max(current_tick_, now_tick);
  for (auto& fire : due) fire();
  return due.size();
}

long TimerWheel::next_timeout_ms(Clock::time_point now) const {
  if (index_.empty()) return -1;
  // Scan from the first unprocessed tick, so an overdue timer reports 0.
  const std::uint64_t start = current_tick_;
  for (std::uint64_t i = 0; i < slots_.size(); ++i) {
    const std::uint64_t tick = start + i;
    for (const auto& e : slots_[tick % slots_.size()]) {
      if (e.due_tick <= tick) {
        const auto due_at = origin_ + tick_ * static_cast<long>(tick);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(due_at - now).count();
        return std::max<long>(ms, 0);
      }
    }
  }
  return static_cast<long>(tick_.count() * static_cast<long>(slots_.size()));
}

}  // namespace mpx::runtime
