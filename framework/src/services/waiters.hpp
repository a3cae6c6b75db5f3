// A blocked request: kept by a service until it can be answered or its deadline passes. The coordinator's timer
// wheel enforces the deadline, so a waiter is always answered (or forgotten with its dead process), never leaked.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "services/service.hpp"
#include "wire/limits.hpp"

namespace mpx::services {

// One place among a peer's parked waiters (a peer: one ZeroMQ socket, or one side-door connection), held by a Waiter
// for as long as it lives, so the count of each peer's waiters stays right however services keep, answer or forget
// them. Coordinator thread only.
class ParkedSlot {
 public:
  ParkedSlot() = default;
  explicit ParkedSlot(std::string peer) : peer_(std::move(peer)) { ++counts()[peer_]; }
  ParkedSlot(const ParkedSlot& other) : peer_(other.peer_) { hold(); }
  ParkedSlot(ParkedSlot&& other) noexcept : peer_(std::exchange(other.peer_, {})) {}
  ParkedSlot& operator=(const ParkedSlot& other) {
    if (this != &other) {
      release();
      peer_ = other.peer_;
      hold();
    }
    return *this;
  }
  ParkedSlot& operator=(ParkedSlot&& other) noexcept {
    if (this != &other) {
      release();
      peer_ = std::exchange(other.peer_, {});
    }
    return *this;
  }
  ~ParkedSlot() { release(); }

  static std::size_t held_by(const std::string& peer) {
    auto it = counts().find(peer);
    return it == counts().end() ? 0 : it->second;
  }
  static std::string peer_of(const Coordinator::Peer& peer) {
    if (peer.side != 0) return "side:" + std::to_string(peer.side);
    return "zmq:" + std::string(static_cast<const char*>(peer.routing.data()), peer.routing.size());
  }

 private:
  static std::unordered_map<std::string, std::size_t>& counts() {
    // Never destroyed: the coordinator thread still parks waiters while exit runs the static destructors (a Pool
    // still alive at the end of main terminates itself then), and a destroyed map there crashed the program.
    static auto* by_peer = new std::unordered_map<std::string, std::size_t>();
    return *by_peer;
  }
  void hold() {
    if (!peer_.empty()) ++counts()[peer_];
  }
  void release() noexcept {
    if (peer_.empty()) return;
    if (auto it = counts().find(peer_); it != counts().end() && --it->second == 0) counts().erase(it);
    peer_.clear();
  }
  std::string peer_;
};

struct Waiter {
  Coordinator::Peer peer;
  wire::Header request;
  runtime::TimerWheel::Id timer = 0;
  std::string payload;  // what the waiter brought (a put's item), if anything
  std::uint64_t serial = 0;  // unique per waiter: how an expiring deadline finds it
  std::uint64_t max_items = 1;  // a get's: how many items its answer may carry (the rest lent)
  ParkedSlot slot;

  std::uint64_t actor() const noexcept { return request.sender; }
};

// Body of a wait: milliseconds, -1 forever, 0 no wait.
inline bool waits_forever(std::int64_t ms) noexcept { return ms < 0; }

// Takes the peer out of a handler's arguments, so it can be answered later. A peer with as many waiters parked as
// the bound allows (PROTOCOL.md, "Bounds") is refused: the coordinator counts it as malformed and answers an error.
inline Waiter make_waiter(Coordinator::Peer& peer, const wire::Envelope& request, std::string payload = {}) {
  std::string parked_by = ParkedSlot::peer_of(peer);
  if (ParkedSlot::held_by(parked_by) >= wire::store_bounds.parked_per_peer) {
    throw ProtocolError("mpx: refused: this peer already has " + std::to_string(wire::store_bounds.parked_per_peer) +
                        " blocking requests waiting at the coordinator (the bound per peer)");
  }
  Waiter w;
  w.slot = ParkedSlot(std::move(parked_by));
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
