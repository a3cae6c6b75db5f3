// mpx/detail/futures_wait.hpp — how as_completed() and wait() of mpx/executor.hpp learn that futures completed: a
// done callback on each result records its index, in completion order. F is a Future (mpx::AnyFuture).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include <mpx/pool.hpp>

namespace mpx {

namespace detail {

// Collects completions of many results, in completion order (Python's _AcquireFutures/_Waiter, in one place).
struct Completions {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::size_t> order;  // indexes, as they completed

  // Waits until `enough(order)` or the timeout; returns whether it was enough.
  template <class Enough>
  bool wait(const Timeout& timeout, Enough enough) {
    WaitingCaller waiting;
    std::unique_lock lock(mutex);
    if (!timeout) {
      changed.wait(lock, [&] { return enough(); });
      return true;
    }
    return changed.wait_for(lock, std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout),
                            [&] { return enough(); });
  }
};

// Python makes a set of the futures first: one given several times counts, and is yielded, once. First come first.
template <class F>
std::vector<F> distinct(std::vector<F> futures) {
  std::unordered_set<const ResultCore*> seen;
  std::vector<F> out;
  out.reserve(futures.size());
  for (auto& f : futures) {
    if (seen.insert(f.core().get()).second) out.push_back(std::move(f));
  }
  return out;
}

template <class F>
std::shared_ptr<Completions> watch(const std::vector<F>& futures) {
  auto c = std::make_shared<Completions>();
  for (std::size_t i = 0; i < futures.size(); ++i) {
    result_add_done_callback(*futures[i].core(), [c, i] {
      {
        std::lock_guard lock(c->mutex);
        c->order.push_back(i);
      }
      c->changed.notify_all();
    });
  }
  return c;
}

}  // namespace detail

}  // namespace mpx
