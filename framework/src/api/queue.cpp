#include <mpx/queue.hpp>

#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <unistd.h>

#include <mpx/process.hpp>

#include "api/call.hpp"
#include "api/lane_trace.hpp"
#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "shm/ring.hpp"
#include "wire/stream_framing.hpp"

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
  // A thread that ends returns what it holds (release_at_exit runs first, while its channel still works).
  ~ThreadLent();
};
thread_local ThreadLent thread_lent;
// Whether this thread's thread_lent holds anything (made and not yet destroyed): a thread that only ever gets from a
// ring never fills it, and the exit hooks must not touch it once it is destroyed.
thread_local bool thread_lent_made = false;

ThreadLent::~ThreadLent() {
  release_all();
  thread_lent_made = false;
}

// A child process ends with _exit, which runs no thread_local destructors: release on the exiting thread first. A
// thread that ends releases before its channel closes (a thread_local of this file may be destroyed after it).
void release_at_exit() {
  if (thread_lent_made) thread_lent.release_all();
}

// ---- the lane (PROTOCOL.md, "Queues", the lane) -------------------------------------------------------------------

// This process's mappings of queue rings, by queue id (nullptr: the queue has no lane here), asked for once per process
// per queue. A forked child asks again: the parent's entries are dropped, never used.
struct Lanes {
  std::mutex mutex;
  pid_t owner = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<shm::Ring>> by_queue;
};
Lanes& lanes() {
  static auto* all = new Lanes;  // never destroyed: threads may still use a ring while the process exits
  return *all;
}

// Each thread's view: the same entries without the mutex on every put and get.
struct ThreadLanes {
  pid_t owner = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<shm::Ring>> by_queue;
  ThreadLanes& get() {
    if (owner != runtime::self_pid()) {
      owner = runtime::self_pid();
      by_queue.clear();
    }
    return *this;
  }
};
thread_local ThreadLanes thread_lanes;

std::shared_ptr<shm::Ring> map_lane(const std::string& name, std::uint64_t token, const std::string& host) {
  if (name.empty() || shm_forced_remote() || host != shm::host_key()) return nullptr;
  // The coordinator recovers the ring's lock if this process dies holding it, and it can do that only for a process it
  // watches: make sure it knows this one before the first lock.
  runtime::ensure_known();
  return shm::Ring::open(name, token);
}

void remember_lane(std::uint64_t id, std::shared_ptr<shm::Ring> ring) {
  auto& all = lanes();
  std::lock_guard guard(all.mutex);
  if (all.owner != runtime::self_pid()) {
    all.owner = runtime::self_pid();
    all.by_queue.clear();
  }
  all.by_queue.emplace(id, std::move(ring));
}

// The ring of queue `id` mapped in this process, or nullptr.
shm::Ring* lane_of(std::uint64_t id) {
  auto& mine = thread_lanes.get();
  if (auto it = mine.by_queue.find(id); it != mine.by_queue.end()) return it->second.get();
  auto& all = lanes();
  {
    std::lock_guard guard(all.mutex);
    if (all.owner == runtime::self_pid()) {
      if (auto it = all.by_queue.find(id); it != all.by_queue.end()) {
        return mine.by_queue.emplace(id, it->second).first->second.get();
      }
    }
  }
  std::shared_ptr<shm::Ring> ring;
  if (!shm_forced_remote()) {
    auto reply = call(wire::make(wire::Kind::queue_lane, id, 0, Object{}), 0);
    auto [name, token, host] = reply.body_as<std::tuple<std::string, std::uint64_t, std::string>>();
    ring = map_lane(name, token, host);
  }
  remember_lane(id, ring);
  return mine.by_queue.emplace(id, std::move(ring)).first->second.get();
}

// While tracing is on the ring says so, and this thread records what it did there (the coordinator never sees it).
void trace_if_traced(const shm::Ring& ring, wire::Kind kind, std::uint64_t id, std::string_view item) {
  if (ring.has_flag(shm::ring_traced)) trace_lane_operation(kind, id, item, ring.size());
}

// The ring when this thread may also get from it (and read its size as the queue's): not a JoinableQueue's, whose
// gets go through the coordinator so that it knows every taker, and lends batches that still count in qsize().
shm::Ring* gettable_lane(std::uint64_t id) {
  shm::Ring* ring = lane_of(id);
  return ring != nullptr && !ring->has_flag(shm::ring_gets_through_coordinator) ? ring : nullptr;
}

void poke(std::uint64_t id) { post(wire::make(wire::Kind::queue_lane_poke, id, 0, Object{})); }

// An item this thread got and could not decode goes back to the head of the queue, through the coordinator.
void unget(std::uint64_t id, const std::string& item) {
  wire::Envelope e = wire::make(wire::Kind::queue_unget, id, 0, Object{});
  e.body.emplace_back(item.data(), item.size());
  post(std::move(e));
}

// Python's (block, timeout) as the ring's terms: the deadline (nullopt: none) and whether to wait at all.
std::pair<shm::Deadline, bool> ring_wait(bool block, const Timeout& timeout) {
  if (!block) return {std::nullopt, false};
  if (!timeout) return {std::nullopt, true};
  if (timeout->count() <= 0) return {std::nullopt, false};
  return {std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout), true};
}

// The consumption report for `id`, reset once it is on its way.
std::uint64_t take_consumed(std::uint64_t id) {
  if (!thread_lent_made) return 0;
  auto& all = thread_lent.get();
  auto it = all.find(id);
  if (it == all.end()) return 0;
  return std::exchange(it->second.consumed, 0);
}

}  // namespace

QueueCore::QueueCore(const QueueOptions& options, bool joinable) : maxsize_(options.maxsize) {
  const auto maxsize = static_cast<std::uint64_t>(options.maxsize);
  // Asks for a lane even when this process will not use it: other processes on the coordinator's host may.
  auto reply = call(wire::make(wire::Kind::queue_create, 0, 0, std::make_tuple(maxsize, joinable, true, options.name)),
                    0);
  auto [id, name, token, host] = reply.body_as<std::tuple<std::uint64_t, std::string, std::uint64_t, std::string>>();
  ref_ = ObjectRef{id, coordinator_endpoint()};
  remember_lane(id, map_lane(name, token, host));
}

void QueueCore::check_open() const {
  // Python's Queue._check_closed: raised at once by get and put, never waited out.
  if (closed_) throw ValueError("mpx: Queue " + std::to_string(ref_.id) + " is closed");
}

bool QueueCore::empty_if_open(bool even_if_unused) const {
  if (used_ || even_if_unused) check_open();
  return qsize() == 0;
}

void QueueCore::put_bytes(std::string item, bool block, const Timeout& timeout) {
  check_open();
  used_ = true;
  if (shm::Ring* ring = lane_of(ref_.id)) {
    if (!ring->fits(item.size())) {
      throw ValueError("mpx: an item of " + std::to_string(item.size()) + " bytes is larger than the queue can hold");
    }
    const auto [deadline, wait] = ring_wait(block, timeout);
    const auto outcome = ring->put(item.data(), item.size(), deadline, wait);
    switch (outcome.status) {
      case shm::Ring::Status::done:
        trace_if_traced(*ring, wire::Kind::queue_put, ref_.id, item);
        if (outcome.poke) poke(ref_.id);
        return;
      case shm::Ring::Status::no_space:
        throw Error("mpx: /dev/shm has no room for queue " + std::to_string(ref_.id) + "'s items");
      default:
        throw Full("mpx: the queue is full");
    }
  }
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
  std::string item;
  get_into(item, block, timeout);
  return item;
}

std::string_view QueueCore::get_view(bool block, const Timeout& timeout) {
  // Reused: a get from the ring then copies the item into memory this thread already has, not into a new string.
  static thread_local std::string buffer;
  if (buffer.capacity() > (std::size_t{1} << 20)) std::string().swap(buffer);  // kept no longer than one more get
  get_into(buffer, block, timeout);
  return buffer;
}

void QueueCore::get_decoded(bool block, const Timeout& timeout, const Decoder& decoder) {
  static thread_local std::string buffer;  // as get_view's: the item is decoded from memory this thread already has
  if (buffer.capacity() > (std::size_t{1} << 20)) std::string().swap(buffer);
  get_into(buffer, block, timeout, &decoder);
}

void QueueCore::refuse(const std::string& item, const Decoder& decoder, const char* why) const {
  std::string holds;
  try {
    const auto value = decode<Object>(item);
    holds = std::string(Object::type_name(value.type())) + " " + value.repr();
    if (holds.size() > 200) holds = holds.substr(0, 200) + "...";
  } catch (const std::exception& e) {
    holds = std::string("undecodable bytes (") + e.what() + ")";
  }
  throw SerializationError("mpx: Queue " + std::to_string(ref_.id) + ": the item at its head is not a " +
                           demangle(decoder.expected) + " (" + why + "); it holds " + holds +
                           ". It stays at the head of the queue");
}

void QueueCore::get_into(std::string& out, bool block, const Timeout& timeout, const Decoder* decoder) {
  static const bool hooked =
      (runtime::add_child_exit_hook(&release_at_exit), runtime::add_thread_exit_hook(&release_at_exit), true);
  (void)hooked;
  check_open();
  used_ = true;
  // Decodes what was got; the reason it did not, or nullopt (no decoder: the caller takes the bytes as they are).
  const auto failure = [decoder](const std::string& item) -> std::optional<std::string> {
    if (decoder == nullptr) return std::nullopt;
    try {
      decoder->into(item, decoder->out);
      return std::nullopt;
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  };
  Lent* lent = thread_lent_made ? &thread_lent.get()[ref_.id] : nullptr;
  if (lent != nullptr && !lent->items.empty()) {
    out = std::move(lent->items.front());
    lent->items.pop_front();
    if (auto why = failure(out)) {
      // Not consumed: the coordinator, which still counts it lent, gives it back to the head of the queue with the
      // rest lent here, in order.
      post(wire::make(wire::Kind::queue_release, ref_.id, 0, std::make_tuple(std::exchange(lent->consumed, 0))));
      lent->items.clear();
      refuse(out, *decoder, why->c_str());
    }
    ++lent->consumed;
    // Lent by the coordinator, the last of them returned now that this thread gets from the ring: report them
    // consumed at once, since no later request about the queue will (if this process died, the coordinator would give
    // them back and they would be got twice).
    if (lent->items.empty() && gettable_lane(ref_.id) != nullptr) {
      post(wire::make(wire::Kind::queue_release, ref_.id, 0, std::make_tuple(std::exchange(lent->consumed, 0))));
    }
    return;
  }
  if (shm::Ring* ring = gettable_lane(ref_.id)) {
    const auto [deadline, wait] = ring_wait(block, timeout);
    const auto outcome = ring->get(out, deadline, wait);
    if (outcome.status != shm::Ring::Status::done) throw Empty("mpx: the queue is empty");
    bool changed = outcome.poke;
    if (auto why = failure(out)) {
      // Back in front of the head. If there is no room there now, the coordinator puts it back (in front, or at the
      // tail if the ring stays full there).
      const auto back = ring->put_front({out}, std::nullopt);
      if (back.status == shm::Ring::Status::done) {
        changed = changed || back.poke;
      } else {
        unget(ref_.id, out);
      }
      if (changed) poke(ref_.id);
      refuse(out, *decoder, why->c_str());
    }
    trace_if_traced(*ring, wire::Kind::queue_get, ref_.id, out);
    if (changed) poke(ref_.id);
    return;
  }
  const auto wait = wait_ms(block, timeout);
  const std::uint64_t consumed = lent != nullptr ? std::exchange(lent->consumed, 0) : 0;
  auto reply = call(wire::make(wire::Kind::queue_get, ref_.id, 0, std::make_tuple(wait, batch_request, consumed)),
                    wait);
  if (reply.body.size() != 2) throw ProtocolError("mpx: a queue_get reply without its items frame");
  // Length records: the first item is returned now (the coordinator counted it as got), the rest are kept.
  wire::RecordReader items(std::string_view(static_cast<const char*>(reply.body[1].data()), reply.body[1].size()),
                           "a queue_get reply");
  bool have_first = false;
  while (auto item = items.next()) {
    if (!have_first) {
      out.assign(*item);
      have_first = true;
    } else {
      if (lent == nullptr) {
        thread_lent_made = true;
        lent = &thread_lent.get()[ref_.id];
      }
      lent->items.emplace_back(*item);
    }
  }
  if (!have_first) throw ProtocolError("mpx: an empty queue_get reply");
  if (auto why = failure(out)) {
    // What was lent with it goes back first, then the item itself in front of them: the order is the queue's again.
    if (lent != nullptr && !lent->items.empty()) {
      post(wire::make(wire::Kind::queue_release, ref_.id, 0, std::make_tuple(std::exchange(lent->consumed, 0))));
      lent->items.clear();
    }
    unget(ref_.id, out);
    refuse(out, *decoder, why->c_str());
  }
}

std::size_t QueueCore::qsize() const {
  if (shm::Ring* ring = gettable_lane(ref_.id)) {
    maxsize_ = ring->maxsize();
    return ring->size();
  }
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
