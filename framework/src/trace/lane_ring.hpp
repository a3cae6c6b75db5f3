// The trace ring of one process (PROTOCOL.md, "Tracing", lane records): operations a process does on a queue's
// shared-memory ring never cross the coordinator, so the process writes a record of each into a ring of its own, in a
// segment the coordinator's trace bus creates for it and drains. One writer per ring (the process, its threads in
// turn), one reader (the bus's sink thread): the writer publishes a record with one store of `tail` after writing it,
// the reader frees room with one store of `head`, so a writer killed mid-record leaves nothing half written behind.
// A full ring drops the record and counts it: the traced program never waits for the sink.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "shm/segment.hpp"

namespace mpx::trace {

// The segment starts with this header; the records follow at lane_ring_data_offset. `tail` and `dropped` are the
// writer's, `head` the reader's, `closed` the bus's; the rest is fixed at creation.
struct LaneRingHeader {
  std::uint64_t magic;
  std::uint64_t token;
  std::uint64_t capacity;    // bytes of records, a power of two
  std::uint32_t body_bytes;  // a record keeps an item up to this size whole, a larger one not at all (0: no bodies)
  std::uint32_t closed;      // 1: the bus let the ring go (tracing stopped): ask for a new one
  std::uint64_t dropped;     // records that found no room
  std::uint64_t reserved[3];
  alignas(64) std::uint64_t tail;  // bytes ever written; records up to here are complete
  alignas(64) std::uint64_t head;  // bytes ever consumed
};
inline constexpr std::uint64_t lane_ring_magic = 0x31306572746e706dULL;  // "mpxtre01", little-endian
inline constexpr std::size_t lane_ring_data_offset = 4096;
static_assert(offsetof(LaneRingHeader, tail) == 64 && offsetof(LaneRingHeader, head) == 128);

// One record's fixed part; `body` item bytes follow, and the whole is padded to 8 bytes. `length` 0 with `kind` 0 at
// the end of the ring is a skip marker: the next record starts at offset 0.
struct LaneRecord {
  std::uint32_t length;      // bytes of this record, padding included
  std::uint16_t kind;        // wire kind: queue_put or queue_get
  std::uint8_t direction;    // as a message record's: 0 into the coordinator's view (a put), 1 out of it (a get)
  std::uint8_t reserved;
  std::uint32_t body;        // item bytes kept after this struct
  std::uint32_t reserved2;
  std::uint64_t ts_ns;       // CLOCK_MONOTONIC
  std::uint64_t actor;       // the process (its pid)
  std::uint64_t object;      // the queue id
  std::uint64_t size;        // the item's bytes
  std::int64_t depth;        // the queue's items after the operation
};
static_assert(sizeof(LaneRecord) == 56);

class LaneRing {
 public:
  // The bus's: a new ring of `capacity` bytes (rounded up to a power of two), its pages allocated now so a write
  // never faults. Throws mpx::Error when /dev/shm has no room.
  static std::unique_ptr<LaneRing> create(const std::string& name, std::uint64_t token, std::uint64_t capacity,
                                          std::uint32_t body_bytes);
  // The process's: maps a ring the bus made; nullptr if `name` is not the ring with `token`.
  static std::unique_ptr<LaneRing> open(const std::string& name, std::uint64_t token) noexcept;

  // The writer's. Never blocks: without room the record is counted in `dropped`.
  void write(const LaneRecord& record, std::string_view item) noexcept;
  bool closed() const noexcept;
  std::uint32_t body_bytes() const noexcept { return header_->body_bytes; }

  // The reader's, in two steps: read() hands every complete record to `each(const LaneRecord&, std::string_view body)`
  // and returns where they end; release(end) frees their room once the reader is done with them (the body views stay
  // valid until then). It reads the writer's `tail` once and publishes `head` once, not per record: both sit on cache
  // lines the other side writes or reads at every record, and bouncing them between the two cores per record cost the
  // traced program more than the copying did.
  template <class F>
  std::uint64_t read(F&& each) {
    const std::uint64_t tail = published_tail();
    std::uint64_t head = consumed_head();
    for (const LaneRecord* r; (r = next(head, tail)) != nullptr;) {
      const LaneRecord copy = *r;  // the writer's memory: what was checked is what is used
      each(copy, std::string_view(reinterpret_cast<const char*>(r + 1), copy.body));
      head += copy.length;
    }
    return head;
  }
  void release(std::uint64_t end) noexcept;
  void close() noexcept;
  std::uint64_t dropped() const noexcept;
  const std::string& name() const noexcept { return name_; }

 private:
  LaneRing(std::shared_ptr<shm::Mapping> mapping, std::string name)
      : mapping_(std::move(mapping)), header_(reinterpret_cast<LaneRingHeader*>(mapping_->base())),
        data_(mapping_->base() + lane_ring_data_offset), name_(std::move(name)) {}
  std::uint64_t published_tail() const noexcept;
  std::uint64_t consumed_head() const noexcept;
  // The record at `head` (which it moves past skip markers), or nullptr at `tail` or in a corrupted ring (whose
  // records are then all dropped: `head` moves to `tail`).
  const LaneRecord* next(std::uint64_t& head, std::uint64_t tail) noexcept;

  std::shared_ptr<shm::Mapping> mapping_;
  LaneRingHeader* header_;
  std::byte* data_;
  std::string name_;
  std::uint64_t known_head_ = 0;  // the writer's last look at `head`: read again only when the room seems short
};

}  // namespace mpx::trace
