// The shared-memory lane of a Queue or SimpleQueue (PROTOCOL.md, "Queues", the lane): a byte ring of length-prefixed
// records under one shm::Lock, in a segment the coordinator creates. Processes on the coordinator's host put and get
// by copying a record in or out under the lock, so no third party takes part per item. OS plumbing below the runtime:
// it knows nothing of messages (telling the coordinator is the caller's business, see Ring::Outcome::poke).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "shm/ring_bytes.hpp"
#include "shm/segment.hpp"

namespace mpx::shm {

// The segment starts with this header; the ring's bytes follow at ring_data_offset. Every field but the constants is
// changed only under `lock`, except the futex words and waiter counts (atomics) and `flags` (the coordinator's).
struct RingHeader {
  std::uint64_t magic;
  std::uint64_t token;     // random; a handle maps the segment by name and checks it is the ring it was told of
  std::uint64_t capacity;  // ring bytes
  std::uint64_t maxsize;   // items; 0: unbounded
  Lock lock;
  // (head offset << 32) | bytes used. One store commits a put or a get, so a holder that dies mid-operation leaves
  // the ring as it was before or after that operation, never between: a record is written first and published last.
  std::uint64_t position;
  std::uint64_t count;      // records between head and tail: a cache of `position`, recounted after a holder died
  std::uint64_t allocated;  // bytes of the ring backed by pages (fallocate): touching them never raises SIGBUS
  std::uint32_t items_seq;  // futex word: +2 at every put, bit 0 "a getter sleeps, unwoken"; getters sleep on it
  std::uint32_t space_seq;  // futex word: +2 at every get, bit 0 "a putter sleeps, unwoken"; putters sleep on it
  // (epoch << 16) | sleepers. A restart (restart_sleepers) begins a new epoch with no sleepers and wakes them all: a
  // sleeper counted in an older epoch does not count itself out, so those of dead processes are forgotten.
  std::uint32_t getters_waiting;
  std::uint32_t putters_waiting;
  std::uint32_t flags;  // ring_traced | ring_poke | ring_gets_through_coordinator, written by the coordinator
  std::uint32_t reserved;
  std::uint64_t puts;  // records put since the ring was made (not those put back in front): for metrics
};
inline constexpr std::uint64_t ring_magic = 0x31306e616c78706dULL;  // "mpxlan01", little-endian
inline constexpr std::size_t ring_data_offset = 4096;
static_assert(sizeof(RingHeader) <= ring_data_offset);
// The layout PROTOCOL.md ("Queues", the lane) gives other clients.
static_assert(offsetof(RingHeader, lock) == 32 && offsetof(RingHeader, position) == 48 &&
              offsetof(RingHeader, items_seq) == 72 && offsetof(RingHeader, flags) == 88 &&
              offsetof(RingHeader, puts) == 96);
// Tracing is on: a handle records each operation it does on the ring in its trace ring (trace/lane_ring.hpp); a client
// that cannot goes through the coordinator, which records it (and does the ring operation for it).
inline constexpr std::uint32_t ring_traced = 1u << 0;
// The coordinator has requests parked on this ring (a remote get waiting for an item, a put waiting for room): whoever
// changes the ring tells it with a queue_lane_poke.
inline constexpr std::uint32_t ring_poke = 1u << 1;
// Processes put on the ring themselves but get only through the coordinator, which must record every taker (a
// JoinableQueue's: an item taken by a process that dies before task_done goes back). Set at creation, never cleared.
inline constexpr std::uint32_t ring_gets_through_coordinator = 1u << 2;

using Deadline = std::optional<std::chrono::steady_clock::time_point>;

class Ring {
 public:
  enum class Status {
    done,
    full,      // no room (maxsize or bytes) before the deadline, or not waiting for it
    empty,     // no item before the deadline, or not waiting for one
    busy,      // the lock was not had before the deadline
    no_space,  // /dev/shm has no room for the ring's next pages
  };
  struct Outcome {
    Status status = Status::done;
    bool poke = false;  // the ring changed and the coordinator asked to hear of it
  };

  // The coordinator's: a new ring segment (sparse: pages are allocated as the ring grows into them).
  static std::unique_ptr<Ring> create(const std::string& name, std::uint64_t token, std::uint64_t capacity,
                                      std::uint64_t maxsize);
  // A handle's: maps an existing ring, or nullptr when `name` is not the ring with `token` (or cannot be mapped).
  static std::unique_ptr<Ring> open(const std::string& name, std::uint64_t token) noexcept;

  // Copies `n` bytes in as one record. Takes the lock by `deadline` (nullopt: forever), then waits for room until it
  // if `wait`. An item that can never fit (n + 4 > capacity) is the caller's to refuse (fits()).
  Outcome put(const void* data, std::size_t n, Deadline deadline, bool wait);
  // Copies the oldest record out into `out`; waits like put.
  Outcome get(std::string& out, Deadline deadline, bool wait);

  // The coordinator's, for lending to a sole consumer while tracing is on: takes up to `most` records (at least one,
  // or Status::empty) without waiting for any.
  Outcome take(std::deque<std::string>& out, std::size_t most, Deadline deadline);
  // The coordinator's: puts lent records that were not consumed back in front of the head, in order. Status::full
  // when there is no room there (the ring filled up meanwhile, or its head is at its start and the end of the ring
  // has no pages yet).
  Outcome put_front(const std::deque<std::string>& items, Deadline deadline);

  bool fits(std::size_t n) const noexcept { return n + record_overhead <= header_->capacity; }
  std::uint64_t size() const noexcept;
  std::uint64_t maxsize() const noexcept { return header_->maxsize; }
  // For metrics, read without the lock: records put since the ring was made, and processes asleep on it now.
  std::uint64_t puts() const noexcept;
  std::uint64_t sleepers() const noexcept;
  bool has_flag(std::uint32_t flag) const noexcept;
  // The coordinator's: sets or clears a flag. `ring_poke` is changed under the lock by the caller (see queues.cpp).
  void set_flag(std::uint32_t flag, bool on) noexcept;
  Lock* lock() noexcept { return &header_->lock; }
  // The coordinator's, after a process that maps the ring died: takes the lock by `deadline` (which repairs the ring
  // now if it died holding it, so qsize() is exact again at once), forgets every sleeper count and wakes every
  // sleeper, which counts itself again if it still must wait. A process woken and killed before it acted on the
  // wake-up took it along, and one killed asleep left its count behind: this undoes both. False if the lock was not
  // had by `deadline` (nothing was done: call again).
  bool restart_sleepers(Deadline deadline) noexcept;

 private:
  Ring(std::shared_ptr<Mapping> mapping, RingHeader* header)
      : mapping_(std::move(mapping)), header_(header), data_(mapping_->base() + ring_data_offset) {}
  // Takes the lock by `deadline` (repairing the ring if its last holder died holding it) and returns `position`;
  // nullopt if the lock was not had.
  std::optional<std::uint64_t> acquire(Deadline deadline) noexcept;
  // Bumps a sequence word (under the lock); true if a sleeper must be woken.
  static bool advance(std::uint32_t& seq) noexcept;
  // Gives the lock up and sleeps until `seq` moves (or the deadline), counted in `waiting` meanwhile.
  void release_and_sleep(std::uint32_t& seq, std::uint32_t& waiting, Deadline deadline) noexcept;
  void repair() noexcept;
  // Under the lock: a new sleeper epoch, every sleeper woken.
  void restart_sleepers_locked() noexcept;
  // Under the lock: copies the head record out and commits; returns the new position.
  std::uint64_t pop_locked(std::string& out, std::uint64_t position);
  void finish_get(std::uint64_t position, Outcome& outcome) noexcept;
  bool reserve(std::uint64_t end) noexcept;
  void copy_in(std::uint64_t offset, const void* from, std::size_t n) noexcept;
  void copy_out(std::uint64_t offset, void* to, std::size_t n) const noexcept;

  std::shared_ptr<Mapping> mapping_;
  RingHeader* header_;
  std::byte* data_;
};

}  // namespace mpx::shm
