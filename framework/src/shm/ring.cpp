#include "shm/ring.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <deque>

#include <fcntl.h>

#include <mpx/errors.hpp>

namespace mpx::shm {

namespace {

// Pages are allocated ahead of the ring's tail in chunks: one fallocate per MiB the ring grows, not one per page.
constexpr std::uint64_t allocation_chunk = std::uint64_t{1} << 20;

template <class T>
std::atomic_ref<T> at(T& field) noexcept {
  return std::atomic_ref<T>(field);
}

std::uint64_t pack(std::uint64_t head, std::uint64_t used) noexcept { return (head << 32) | used; }
std::uint64_t head_of(std::uint64_t position) noexcept { return position >> 32; }
std::uint64_t used_of(std::uint64_t position) noexcept { return position & 0xffffffffu; }

constexpr std::uint32_t seq_step = 2;
constexpr std::uint32_t seq_sleeper = 1;

// getters_waiting and putters_waiting: (epoch << 16) | sleepers.
constexpr std::uint32_t epoch_shift = 16;
constexpr std::uint32_t sleepers_mask = (1u << epoch_shift) - 1;
std::uint32_t sleepers_in(std::uint32_t waiting) noexcept { return waiting & sleepers_mask; }

// How long a getter that found the ring empty watches it before it sleeps: a producer a little behind its consumer
// then costs neither of them a futex call per item. Short (a few microseconds), because the machine may have fewer
// cores than processes: on 2 cores, 4000 rounds kept a core from the process that was about to put, and gave no more
// items per second than 200 in runs alternating the two (queue 1to1 and 8to8, 2026-12-02).
constexpr int spin_rounds = 200;

void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

bool passed(const Deadline& deadline) noexcept {
  return deadline && std::chrono::steady_clock::now() >= *deadline;
}

}  // namespace

std::unique_ptr<Ring> Ring::create(const std::string& name, std::uint64_t token, std::uint64_t capacity,
                                   std::uint64_t maxsize) {
  // `position` packs offsets into 32 bits.
  if (capacity > 0xffffffffu || capacity < 2 * record_overhead) throw ValueError("mpx: bad queue ring capacity");
  auto opened = shm::create(name, ring_data_offset + capacity, true);
  auto* h = reinterpret_cast<RingHeader*>(opened.mapping->base());
  h->token = token;
  h->capacity = capacity;
  h->maxsize = maxsize;
  h->lock = Lock{};
  // Last: a process that sees the magic sees an initialized header.
  at(h->magic).store(ring_magic, std::memory_order_release);
  return std::unique_ptr<Ring>(new Ring(opened.mapping, h));
}

std::unique_ptr<Ring> Ring::open(const std::string& name, std::uint64_t token) noexcept {
  try {
    auto opened = shm::open(name, true);
    if (opened.mapping->length() < ring_data_offset) return nullptr;
    auto* h = reinterpret_cast<RingHeader*>(opened.mapping->base());
    if (at(h->magic).load(std::memory_order_acquire) != ring_magic || h->token != token) return nullptr;
    if (h->capacity > opened.mapping->length() - ring_data_offset) return nullptr;
    return std::unique_ptr<Ring>(new Ring(opened.mapping, h));
  } catch (...) {
    return nullptr;  // not in this /dev/shm (another mount namespace, say): the coordinator path still works
  }
}

std::uint64_t Ring::size() const noexcept { return at(header_->count).load(std::memory_order_acquire); }

std::uint64_t Ring::puts() const noexcept { return at(header_->puts).load(std::memory_order_relaxed); }

std::uint64_t Ring::sleepers() const noexcept {
  return sleepers_in(at(header_->getters_waiting).load(std::memory_order_relaxed)) +
         sleepers_in(at(header_->putters_waiting).load(std::memory_order_relaxed));
}

bool Ring::has_flag(std::uint32_t flag) const noexcept {
  return (at(header_->flags).load(std::memory_order_acquire) & flag) != 0;
}

void Ring::set_flag(std::uint32_t flag, bool on) noexcept {
  if (on) {
    at(header_->flags).fetch_or(flag, std::memory_order_acq_rel);
  } else {
    at(header_->flags).fetch_and(~flag, std::memory_order_acq_rel);
  }
}

void Ring::restart_sleepers_locked() noexcept {
  auto* h = header_;
  for (std::uint32_t* waiting : {&h->getters_waiting, &h->putters_waiting}) {
    const std::uint32_t epoch = (at(*waiting).load(std::memory_order_relaxed) >> epoch_shift) + 1;
    at(*waiting).store(epoch << epoch_shift, std::memory_order_release);
  }
  // Each sequence moves (so a sleeper about to wait on the old value does not), its bit cleared: whoever still must
  // wait sets it again.
  for (std::uint32_t* seq : {&h->items_seq, &h->space_seq}) {
    const std::uint32_t before = at(*seq).load(std::memory_order_relaxed);
    at(*seq).store((before + seq_step) & ~seq_sleeper, std::memory_order_release);
    futex_wake(seq, INT_MAX);
  }
}

bool Ring::restart_sleepers(Deadline deadline) noexcept {
  const Locked locked = shm::lock(&header_->lock, deadline, false);
  if (locked == Locked::no) return false;
  if (locked == Locked::yes_owner_died) {
    repair();  // which restarts them too
  } else {
    restart_sleepers_locked();
  }
  shm::unlock(&header_->lock);
  return true;
}

void Ring::copy_in(std::uint64_t offset, const void* from, std::size_t n) noexcept {
  copy_into_ring(data_, static_cast<std::size_t>(header_->capacity), static_cast<std::size_t>(offset), from, n);
}

void Ring::copy_out(std::uint64_t offset, void* to, std::size_t n) const noexcept {
  copy_out_of_ring(data_, static_cast<std::size_t>(header_->capacity), static_cast<std::size_t>(offset), to, n);
}

// The ring's bytes [0, end) get pages now. A sparse tmpfs file raises SIGBUS when a page cannot be had as it is
// touched (/dev/shm full), which would kill the putter (or the coordinator, putting for a remote process); an
// allocation fails with an error instead. The ring fills from offset 0 and wraps only after reaching its end, so what
// is allocated is always a prefix.
bool Ring::reserve(std::uint64_t end) noexcept {
  auto* h = header_;
  if (end <= h->allocated) return true;
  const std::uint64_t upto = std::min(h->capacity, (end + allocation_chunk - 1) / allocation_chunk * allocation_chunk);
  const auto from = static_cast<off_t>(ring_data_offset + h->allocated);
  if (::fallocate(mapping_->fd(), 0, from, static_cast<off_t>(upto - h->allocated)) != 0) return false;
  h->allocated = upto;
  return true;
}

// The lock's previous holder died holding it: `position` is right (it is committed by one store), the rest is derived
// from it again, and every sleeper looks again.
void Ring::repair() noexcept {
  auto* h = header_;
  const std::uint64_t capacity = h->capacity;
  const std::uint64_t position = at(h->position).load(std::memory_order_acquire);
  std::uint64_t offset = head_of(position);
  std::uint64_t left = used_of(position);
  std::uint64_t records = 0;
  while (left >= record_overhead) {
    std::uint32_t length = 0;
    copy_out(offset, &length, sizeof length);
    if (length + record_overhead > left) break;
    offset = (offset + record_overhead + length) % capacity;
    left -= record_overhead + length;
    ++records;
  }
  // Published records are always whole; a remainder would be a torn one, so it is not kept.
  if (left != 0) at(h->position).store(pack(head_of(position), used_of(position) - left), std::memory_order_release);
  at(h->count).store(records, std::memory_order_release);
  restart_sleepers_locked();
}

std::optional<std::uint64_t> Ring::acquire(Deadline deadline) noexcept {
  const Locked locked = shm::lock(&header_->lock, deadline, false);
  if (locked == Locked::no) return std::nullopt;
  if (locked == Locked::yes_owner_died) repair();
  return at(header_->position).load(std::memory_order_relaxed);
}

// A sequence word counts changes in steps of 2; its bit 0 says a sleeper waits for the next change and nobody has
// woken one since. The change clears it and wakes one sleeper, so a burst of puts costs one FUTEX_WAKE, not one each
// while the woken getter is still on its way. The woken one sets it again if others still sleep, so the next change
// wakes the next of them. Under the lock (the bit may also be set by a woken sleeper, without it).
bool Ring::advance(std::uint32_t& seq) noexcept {
  const std::uint32_t before = at(seq).fetch_add(seq_step, std::memory_order_acq_rel);
  if ((before & seq_sleeper) == 0) return false;
  at(seq).fetch_and(~seq_sleeper, std::memory_order_acq_rel);
  return true;
}

// Registered, marked and sampled under the lock, so the change this waits for (made under the lock later) cannot be
// missed. It counts itself out only in the epoch it counted itself in: after a restart its count is gone already.
void Ring::release_and_sleep(std::uint32_t& seq, std::uint32_t& waiting, Deadline deadline) noexcept {
  const std::uint32_t epoch = (at(waiting).fetch_add(1, std::memory_order_acq_rel) + 1) >> epoch_shift;
  const std::uint32_t seen = at(seq).fetch_or(seq_sleeper, std::memory_order_acq_rel) | seq_sleeper;
  shm::unlock(&header_->lock);
  futex_wait(&seq, seen, deadline);
  std::uint32_t now = at(waiting).load(std::memory_order_acquire);
  while ((now >> epoch_shift) == epoch) {
    if (at(waiting).compare_exchange_weak(now, now - 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (sleepers_in(now) > 1) at(seq).fetch_or(seq_sleeper, std::memory_order_acq_rel);
      return;
    }
  }
}

Ring::Outcome Ring::put(const void* data, std::size_t n, Deadline deadline, bool wait) {
  auto* h = header_;
  const std::uint64_t capacity = h->capacity;
  const std::uint64_t need = n + record_overhead;
  Outcome outcome;
  for (;;) {
    const auto position = acquire(deadline);
    if (!position) return Outcome{Status::busy, false};
    const std::uint64_t head = head_of(*position), used = used_of(*position);
    const std::uint64_t count = at(h->count).load(std::memory_order_relaxed);
    if (used + need <= capacity && (h->maxsize == 0 || count < h->maxsize)) {
      const std::uint64_t tail = (head + used) % capacity;
      if (!reserve(std::min(tail + need, capacity))) {
        shm::unlock(&h->lock);
        outcome.status = Status::no_space;
        return outcome;
      }
      const auto length = static_cast<std::uint32_t>(n);
      copy_in(tail, &length, sizeof length);
      copy_in((tail + record_overhead) % capacity, data, n);
      at(h->position).store(pack(head, used + need), std::memory_order_release);  // the commit
      at(h->count).store(count + 1, std::memory_order_release);
      at(h->puts).store(at(h->puts).load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      const bool wake_getter = advance(h->items_seq);
      const bool room_left = used + need < capacity && (h->maxsize == 0 || count + 1 < h->maxsize);
      outcome.poke = (at(h->flags).load(std::memory_order_acquire) & ring_poke) != 0;
      shm::unlock(&h->lock);
      if (wake_getter) futex_wake(&h->items_seq, 1);
      // A putter woken for room it did not use (it timed out, or died) must not strand the others.
      if (room_left && sleepers_in(at(h->putters_waiting).load(std::memory_order_acquire)) > 0) {
        futex_wake(&h->space_seq, 1);
      }
      return outcome;
    }
    if (!wait || passed(deadline)) {
      shm::unlock(&h->lock);
      outcome.status = Status::full;
      return outcome;
    }
    release_and_sleep(h->space_seq, h->putters_waiting, deadline);
  }
}

// Copies the head record out and commits its removal. Under the lock, with a record there (`position` says so).
std::uint64_t Ring::pop_locked(std::string& out, std::uint64_t position) {
  auto* h = header_;
  const std::uint64_t capacity = h->capacity;
  const std::uint64_t head = head_of(position), used = used_of(position);
  std::uint32_t length = 0;
  copy_out(head, &length, sizeof length);
  out.resize(length);
  copy_out((head + record_overhead) % capacity, out.data(), length);
  const std::uint64_t left = used - record_overhead - length;
  // An emptied ring starts again at offset 0, so the pages it touches stay those of its deepest backlog.
  const std::uint64_t next = left == 0 ? 0 : (head + record_overhead + length) % capacity;
  at(h->position).store(pack(next, left), std::memory_order_release);  // the commit
  const std::uint64_t count = at(h->count).load(std::memory_order_relaxed);
  at(h->count).store(left == 0 || count == 0 ? 0 : count - 1, std::memory_order_release);
  return pack(next, left);
}

// After records left the ring: wakes a putter waiting for room, and another getter if records remain (a getter woken
// for an item it did not take, because it timed out or died, must not strand the others). Unlocks.
void Ring::finish_get(std::uint64_t position, Outcome& outcome) noexcept {
  auto* h = header_;
  const bool wake_putter = advance(h->space_seq);
  outcome.poke = (at(h->flags).load(std::memory_order_acquire) & ring_poke) != 0;
  shm::unlock(&h->lock);
  if (wake_putter) futex_wake(&h->space_seq, 1);
  if (used_of(position) > 0 && sleepers_in(at(h->getters_waiting).load(std::memory_order_acquire)) > 0) {
    futex_wake(&h->items_seq, 1);
  }
}

Ring::Outcome Ring::get(std::string& out, Deadline deadline, bool wait) {
  auto* h = header_;
  Outcome outcome;
  bool spun = false;
  for (;;) {
    const auto position = acquire(deadline);
    if (!position) return Outcome{Status::busy, false};
    if (used_of(*position) >= record_overhead) {
      std::uint64_t after = 0;
      try {
        after = pop_locked(out, *position);
      } catch (...) {
        shm::unlock(&h->lock);
        throw;
      }
      finish_get(after, outcome);
      return outcome;
    }
    if (!wait || passed(deadline)) {
      shm::unlock(&h->lock);
      outcome.status = Status::empty;
      return outcome;
    }
    if (!spun) {
      spun = true;
      shm::unlock(&h->lock);
      for (int i = 0; i < spin_rounds && used_of(at(h->position).load(std::memory_order_relaxed)) == 0; ++i) relax();
      continue;
    }
    release_and_sleep(h->items_seq, h->getters_waiting, deadline);
  }
}

Ring::Outcome Ring::take(std::deque<std::string>& out, std::size_t most, Deadline deadline) {
  auto* h = header_;
  Outcome outcome;
  auto position = acquire(deadline);
  if (!position) return Outcome{Status::busy, false};
  if (used_of(*position) < record_overhead) {
    shm::unlock(&h->lock);
    return Outcome{Status::empty, false};
  }
  try {
    for (std::size_t i = 0; i < most && used_of(*position) >= record_overhead; ++i) {
      out.emplace_back();
      position = pop_locked(out.back(), *position);
    }
  } catch (...) {
    shm::unlock(&h->lock);
    throw;
  }
  finish_get(*position, outcome);
  return outcome;
}

Ring::Outcome Ring::put_front(const std::deque<std::string>& items, Deadline deadline) {
  auto* h = header_;
  const std::uint64_t capacity = h->capacity;
  std::uint64_t total = 0;
  for (const auto& item : items) total += record_overhead + item.size();
  const auto position = acquire(deadline);
  if (!position) return Outcome{Status::busy, false};
  const std::uint64_t head = head_of(*position), used = used_of(*position);
  // In front of the head: below it, or (wrapping) at the ring's end, which has pages only once the ring has reached it.
  const bool room = used + total <= capacity && (used == 0 || head >= total || h->allocated == capacity);
  if (!room || (used == 0 && !reserve(total))) {
    shm::unlock(&h->lock);
    return Outcome{Status::full, false};
  }
  const std::uint64_t start = used == 0 ? 0 : (head + capacity - total) % capacity;
  std::uint64_t offset = start;
  for (const auto& item : items) {
    const auto length = static_cast<std::uint32_t>(item.size());
    copy_in(offset, &length, sizeof length);
    copy_in((offset + record_overhead) % capacity, item.data(), item.size());
    offset = (offset + record_overhead + item.size()) % capacity;
  }
  at(h->position).store(pack(start, used + total), std::memory_order_release);  // the commit
  at(h->count).store(at(h->count).load(std::memory_order_relaxed) + items.size(), std::memory_order_release);
  const bool wake_getter = advance(h->items_seq);
  Outcome outcome;
  outcome.poke = (at(h->flags).load(std::memory_order_acquire) & ring_poke) != 0;
  shm::unlock(&h->lock);
  if (wake_getter) futex_wake(&h->items_seq, 1);
  return outcome;
}

}  // namespace mpx::shm
