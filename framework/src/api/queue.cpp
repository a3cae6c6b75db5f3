#include <mpx/queue.hpp>

#include <cstring>
#include <deque>
#include <unordered_map>

#include <unistd.h>

#include "api/call.hpp"
#include "runtime/runtime.hpp"

namespace mpx::detail {

namespace {

// How many items one get may bring back; the coordinator lends fewer when the queue is short.
constexpr std::uint64_t batch_request = 256;

// Items lent to this thread by the coordinator, returned by get() one at a time. `consumed` counts the ones returned
// since the last report; every request about the queue carries it.
struct Lent {
  std::deque<std::string> items;
  std::uint64_t consumed = 0;
};

struct ThreadLent {
  pid_t owner = 0;
  std::unordered_map<std::uint64_t, Lent> by_queue;

  // A forked child inherits its parent thread's lent items, which are not its own: forget them.
  std::unordered_map<std::uint64_t, Lent>& get() {
    if (owner != runtime::self_pid()) {
      owner = runtime::self_pid();
      by_queue.clear();
    }
    return by_queue;
  }
  // Settles what was consumed and gives back the rest, so nothing is lost or got twice.
  void release_all() {
    if (owner != runtime::self_pid()) return;
    for (auto& [id, lent] : by_queue) {
      if (lent.items.empty() && lent.consumed == 0) continue;
      try {
        post(wire::make(wire::Kind::queue_release, id, 0, std::make_tuple(lent.consumed)));
      } catch (...) {
      }
    }
    by_queue.clear();
  }
  // A thread that ends returns what it holds.
  ~ThreadLent() { release_all(); }
};
thread_local ThreadLent thread_lent;

// A child process ends with _exit, which runs no thread_local destructors: release on the exiting thread first.
void release_at_child_exit() { thread_lent.release_all(); }

// The consumption report for `id`, reset once it is on its way.
std::uint64_t take_consumed(std::uint64_t id) {
  auto& all = thread_lent.get();
  auto it = all.find(id);
  if (it == all.end()) return 0;
  return std::exchange(it->second.consumed, 0);
}

}  // namespace

QueueCore::QueueCore(std::size_t maxsize, bool joinable) : maxsize_(maxsize) {
  auto reply = call(wire::make(wire::Kind::queue_create, 0, 0,
                               std::make_tuple(static_cast<std::uint64_t>(maxsize), joinable)),
                    0);
  auto [id] = reply.body_as<std::tuple<std::uint64_t>>();
  ref_ = ObjectRef{id, coordinator_endpoint()};
}

void QueueCore::put_bytes(std::string item, bool block, const Timeout& timeout) {
  if (closed_) throw ValueError("mpx: Queue " + std::to_string(ref_.id) + " is closed");
  if (maxsize() == 0) {
    // Unbounded: nothing to wait for, so the item is handed over without a round trip. Order per producer holds,
    // because one channel delivers in order.
    wire::Envelope e = wire::make(wire::Kind::queue_put_posted, ref_.id, 0, Object{});
    e.body.emplace_back(item.data(), item.size());
    post(std::move(e));
    return;
  }
  const auto wait = wait_ms(block, timeout);
  auto e = wire::make(wire::Kind::queue_put, ref_.id, 0, std::make_tuple(wait));
  e.body.emplace_back(item.data(), item.size());
  (void)call(std::move(e), wait);
}

std::string QueueCore::get_bytes(bool block, const Timeout& timeout) {
  static const bool hooked = (runtime::add_child_exit_hook(&release_at_child_exit), true);
  (void)hooked;
  auto& lent = thread_lent.get()[ref_.id];
  if (!lent.items.empty()) {
    std::string item = std::move(lent.items.front());
    lent.items.pop_front();
    ++lent.consumed;
    return item;
  }
  const auto wait = wait_ms(block, timeout);
  const std::uint64_t consumed = std::exchange(lent.consumed, 0);
  auto reply = call(wire::make(wire::Kind::queue_get, ref_.id, 0, std::make_tuple(wait, batch_request, consumed)),
                    wait);
  if (reply.body.size() != 2) throw ProtocolError("mpx: a queue_get reply without its items frame");
  // [u32 length][bytes]... : the first item is returned now (the coordinator counted it as got), the rest are kept.
  const auto* p = static_cast<const char*>(reply.body[1].data());
  const auto* end = p + reply.body[1].size();
  std::string first;
  bool have_first = false;
  while (p < end) {
    std::uint32_t size = 0;
    if (end - p < static_cast<std::ptrdiff_t>(sizeof size)) throw ProtocolError("mpx: truncated queue_get reply");
    std::memcpy(&size, p, sizeof size);
    p += sizeof size;
    if (static_cast<std::size_t>(end - p) < size) throw ProtocolError("mpx: truncated queue_get reply");
    if (!have_first) {
      first.assign(p, size);
      have_first = true;
    } else {
      lent.items.emplace_back(p, size);
    }
    p += size;
  }
  if (!have_first) throw ProtocolError("mpx: an empty queue_get reply");
  return first;
}

std::size_t QueueCore::qsize() const {
  auto reply = call(wire::make(wire::Kind::queue_size, ref_.id, 0, std::make_tuple(take_consumed(ref_.id))), 0);
  auto [size, maxsize] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t>>();
  maxsize_ = maxsize;
  return size;
}

std::size_t QueueCore::maxsize() const {
  if (maxsize_ == static_cast<std::size_t>(-1)) (void)qsize();
  return maxsize_;
}

bool QueueCore::full() const {
  const auto size = qsize();
  return maxsize_ != 0 && size >= maxsize_;
}

void QueueCore::task_done_core() {
  (void)call(wire::make(wire::Kind::queue_task_done, ref_.id, 0, std::make_tuple(take_consumed(ref_.id))), 0);
}

bool QueueCore::join_core(const Timeout& timeout) {
  const auto wait = wait_ms(true, timeout);
  try {
    (void)call(wire::make(wire::Kind::queue_join, ref_.id, 0, std::make_tuple(wait)), wait);
    return true;
  } catch (const TimeoutError&) {
    return false;
  }
}

}  // namespace mpx::detail
