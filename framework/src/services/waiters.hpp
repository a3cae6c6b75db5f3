// A blocked request: kept by a service until it can be answered or its deadline passes. The coordinator's timer
// wheel enforces the deadline, so a waiter is always answered (or forgotten with its dead process), never leaked.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "services/service.hpp"

namespace mpx::services {

struct Waiter {
  Coordinator::Peer peer;
  wire::Header request;
  runtime::TimerWheel::Id timer = 0;
  std::string payload;  // what the waiter brought (a put's item), if anything
  std::uint64_t serial = 0;  // unique per waiter: how an expiring deadline finds it
  std::uint64_t max_items = 1;  // a get's: how many items its answer may carry (the rest lent)

  std::uint64_t actor() const noexcept { return request.sender; }
};

// Body of a wait: milliseconds, -1 forever, 0 no wait.
inline bool waits_forever(std::int64_t ms) noexcept { return ms < 0; }

// Takes the peer out of a handler's arguments, so it can be answered later.
inline Waiter make_waiter(Coordinator::Peer& peer, const wire::Envelope& request, std::string payload = {}) {
  Waiter w;
  w.peer.routing = std::move(peer.routing);
  w.peer.actor = peer.actor;
  w.peer.side = peer.side;
  w.request = request.header;
  w.payload = std::move(payload);
  static std::uint64_t next_serial = 1;  // coordinator thread only
  w.serial = next_serial++;
  return w;
}

// Arms the waiter's deadline (unless it waits forever); `expire` runs on the coordinator thread when it passes and
// must remove the waiter and answer it.
inline void arm(Host& coordinator, Waiter& waiter, std::int64_t wait_ms, std::function<void()> expire) {
  if (waits_forever(wait_ms)) return;
  waiter.timer = coordinator.timers().schedule(
      runtime::TimerWheel::Clock::now() + std::chrono::milliseconds(wait_ms), std::move(expire));
}

inline void disarm(Host& coordinator, Waiter& waiter) {
  if (waiter.timer) coordinator.timers().cancel(waiter.timer);
  waiter.timer = 0;
}

// Removes and returns the waiter with this serial, if it is still waiting (of whatever waiter type the list holds).
template <class Container>
std::optional<typename Container::value_type> take(Container& waiters, std::uint64_t serial) {
  for (auto it = waiters.begin(); it != waiters.end(); ++it) {
    if (it->serial == serial) {
      auto w = std::move(*it);
      waiters.erase(it);
      return w;
    }
  }
  return std::nullopt;
}

// Queues a blocked request at the back of `list` and arms its deadline. When the deadline passes, `find_list()` finds
// the list again (nullptr once its object is gone), the waiter is taken out if it is still there, and `expire`
// answers it. Every service parks its waiters this way, so none can outlive its deadline.
template <class W, class FindList, class Expire>
void park(Host& coordinator, std::deque<W>& list, W waiter, std::int64_t wait_ms, FindList find_list,
          Expire expire) {
  list.push_back(std::move(waiter));
  W& queued = list.back();
  const auto serial = queued.serial;
  arm(coordinator, queued, wait_ms, [find_list, expire, serial] {
    auto* waiting = find_list();
    if (waiting == nullptr) return;
    if (auto expired = take(*waiting, serial)) {
      expired->timer = 0;
      expire(*expired);
    }
  });
}

// Removes every waiter of a dead process; their replies could never be delivered.
template <class Container>
void forget_actor(Host& coordinator, Container& waiters, std::uint64_t actor) {
  for (auto it = waiters.begin(); it != waiters.end();) {
    if (it->actor() == actor) {
      disarm(coordinator, *it);
      it = waiters.erase(it);
    } else {
      ++it;
    }
  }
}

// Answers a waiter: ok with `body` frames.
inline void answer(Host& coordinator, Waiter& waiter, wire::Kind kind, std::string body,
                   std::string raw = {}, bool with_raw = false) {
  disarm(coordinator, waiter);
  auto reply = wire::make_reply(waiter.request, kind, std::move(body));
  if (with_raw) reply.body.emplace_back(raw.data(), raw.size());
  coordinator.reply(waiter.peer, reply);
}

inline void answer_error(Host& coordinator, Waiter& waiter, wire::ErrorCode code, std::string_view message) {
  disarm(coordinator, waiter);
  coordinator.reply_error(waiter.peer, waiter.request, code, message);
}

// A request that cannot be answered yet: refused at once with `code` when it does not wait (`wait_ms` 0), else parked
// as park() does until its deadline answers it with the same code.
template <class FindList>
void park_or_refuse(Host& coordinator, std::deque<Waiter>& list, Waiter waiter, std::int64_t wait_ms,
                    FindList find_list, wire::ErrorCode code, const char* refused, const char* expired) {
  if (wait_ms == 0) {
    coordinator.reply_error(waiter.peer, waiter.request, code, refused);
    return;
  }
  park(coordinator, list, std::move(waiter), wait_ms, find_list,
       [&coordinator, code, expired](Waiter& w) { answer_error(coordinator, w, code, expired); });
}

}  // namespace mpx::services
