#include "trace/lane_ring.hpp"

#include <atomic>
#include <bit>
#include <cstring>

#include <fcntl.h>

#include <mpx/errors.hpp>

namespace mpx::trace {

namespace {

template <class T>
std::atomic_ref<T> at(T& field) noexcept {
  return std::atomic_ref<T>(field);
}

constexpr std::uint64_t pad8(std::uint64_t n) noexcept { return (n + 7) & ~std::uint64_t{7}; }

}  // namespace

std::unique_ptr<LaneRing> LaneRing::create(const std::string& name, std::uint64_t token, std::uint64_t capacity,
                                           std::uint32_t body_bytes) {
  capacity = std::bit_ceil(std::max<std::uint64_t>(capacity, 64 * 1024));
  auto opened = shm::create(name, lane_ring_data_offset + capacity, true);
  // Pages now, or an error now: a writer touching a page /dev/shm cannot back would get SIGBUS.
  if (const int e = ::posix_fallocate(opened.mapping->fd(), 0, static_cast<off_t>(opened.mapping->length())); e != 0) {
    shm::unlink(name);
    throw Error("mpx: no room in /dev/shm for a trace ring of " + std::to_string(capacity) + " bytes: " +
                std::strerror(e));
  }
  std::unique_ptr<LaneRing> ring(new LaneRing(std::move(opened.mapping), name));
  auto* h = ring->header_;
  h->token = token;
  h->capacity = capacity;
  h->body_bytes = body_bytes;
  at(h->magic).store(lane_ring_magic, std::memory_order_release);  // last: a mapper checks it
  return ring;
}

std::unique_ptr<LaneRing> LaneRing::open(const std::string& name, std::uint64_t token) noexcept {
  try {
    auto opened = shm::open(name);
    if (opened.mapping->length() < lane_ring_data_offset) return nullptr;
    const auto* h = reinterpret_cast<LaneRingHeader*>(opened.mapping->base());
    if (at(const_cast<std::uint64_t&>(h->magic)).load(std::memory_order_acquire) != lane_ring_magic ||
        h->token != token || lane_ring_data_offset + h->capacity > opened.mapping->length()) {
      return nullptr;
    }
    return std::unique_ptr<LaneRing>(new LaneRing(std::move(opened.mapping), name));
  } catch (...) {
    return nullptr;
  }
}

void LaneRing::write(const LaneRecord& record, std::string_view item) noexcept {
  auto* h = header_;
  const std::uint64_t capacity = h->capacity;
  // The whole item or none of it: a cut msgpack value would not decode. The sink shows a missing one by its size.
  const auto body = static_cast<std::uint32_t>(item.size() <= h->body_bytes ? item.size() : 0);
  const std::uint64_t length = pad8(sizeof(LaneRecord) + body);
  const std::uint64_t tail = at(h->tail).load(std::memory_order_relaxed);  // only this writer changes it
  const std::uint64_t offset = tail & (capacity - 1);
  // A record never wraps: when it does not fit before the end, a skip marker fills the rest.
  const std::uint64_t skip = offset + length > capacity ? capacity - offset : 0;
  // The reader's `head` only grows: room seen earlier is still there, and the line it sits on is read again only
  // when that room runs short.
  if (tail + skip + length - known_head_ > capacity) known_head_ = at(h->head).load(std::memory_order_acquire);
  if (length > capacity / 2 || tail + skip + length - known_head_ > capacity) {
    at(h->dropped).fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (skip != 0) {
    LaneRecord marker{};
    std::memcpy(data_ + offset, &marker, sizeof(std::uint32_t) * 2);  // skip >= 8: records are 8-aligned
  }
  std::byte* to = data_ + ((tail + skip) & (capacity - 1));
  LaneRecord r = record;
  r.length = static_cast<std::uint32_t>(length);
  r.body = body;
  std::memcpy(to, &r, sizeof r);
  if (body != 0) std::memcpy(to + sizeof r, item.data(), body);
  at(h->tail).store(tail + skip + length, std::memory_order_release);
}

bool LaneRing::closed() const noexcept { return at(header_->closed).load(std::memory_order_acquire) != 0; }

void LaneRing::close() noexcept { at(header_->closed).store(1, std::memory_order_release); }

std::uint64_t LaneRing::dropped() const noexcept { return at(header_->dropped).load(std::memory_order_relaxed); }

std::uint64_t LaneRing::published_tail() const noexcept { return at(header_->tail).load(std::memory_order_acquire); }

std::uint64_t LaneRing::consumed_head() const noexcept {
  return at(header_->head).load(std::memory_order_relaxed);  // only this reader changes it
}

void LaneRing::release(std::uint64_t end) noexcept { at(header_->head).store(end, std::memory_order_release); }

const LaneRecord* LaneRing::next(std::uint64_t& head, std::uint64_t tail) noexcept {
  const std::uint64_t capacity = header_->capacity;
  while (head != tail) {
    const std::uint64_t offset = head & (capacity - 1);
    std::uint32_t length = 0;
    std::memcpy(&length, data_ + offset, sizeof length);
    if (length == 0) {  // a skip marker: the record is at the start of the ring
      head += capacity - offset;
      continue;
    }
    // A writer's record is never longer than the ring, nor past its tail; anything else is a corrupted ring, and
    // everything in it is dropped rather than read out of bounds.
    const auto* r = reinterpret_cast<const LaneRecord*>(data_ + offset);
    if (length < sizeof(LaneRecord) || offset + length > capacity || head + length > tail ||
        sizeof(LaneRecord) + r->body > length) {
      head = tail;
      at(header_->dropped).fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    return r;
  }
  return nullptr;
}

}  // namespace mpx::trace
