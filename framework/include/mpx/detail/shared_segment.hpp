// mpx/detail/shared_segment.hpp — one POSIX shared-memory segment as a process of the session uses it, and the
// reference that travels for it. Internal: Value, Array and SharedMemory (mpx/shared.hpp) are built on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <mpx/handle.hpp>

namespace mpx::detail {

// What a shared handle sends to another process: enough to map the segment, or to reach it through the coordinator.
struct SegmentRef {
  std::uint64_t id = 0;     // the coordinator's id (0: not recorded, e.g. a SharedMemory attached by name)
  std::string endpoint;     // the coordinator that created it
  std::string name;         // without the leading '/', as Python's SharedMemory.name
  std::uint64_t size = 0;   // data bytes
  std::string host;         // which /dev/shm it lives in
  std::uint64_t token = 0;  // checked against the segment's header (0: a raw SharedMemory segment, no header)
  bool lock = false;
  bool remote = false;      // whoever decodes it uses the coordinator protocol
  std::string type;         // element type of a Value/Array (its typeid name); empty for SharedMemory
  MSGPACK_DEFINE(id, endpoint, name, size, host, token, lock, remote, type);
};

// One segment as this process uses it: mapped (local() is its data), or reached through the coordinator (local() is
// nullptr). Copies of a handle share it; it is unmapped when the last one goes.
class MPX_API Segment {
 public:
  static std::shared_ptr<Segment> create_cells(std::size_t bytes, bool lock, std::string type);
  static std::shared_ptr<Segment> create_raw(const std::optional<std::string>& name, std::size_t size, bool track);
  static std::shared_ptr<Segment> attach_raw(const std::string& name);
  // Maps the segment a decoded handle names, or falls back to the coordinator protocol.
  static std::shared_ptr<Segment> adopt(SegmentRef ref);
  std::shared_ptr<Segment> remote_copy() const;

  std::byte* local() const noexcept { return local_; }
  // The lock in the segment's header, when mapped and locked (else nullptr).
  void* mapped_lock() const noexcept { return lock_; }
  const SegmentRef& ref() const noexcept { return ref_; }
  std::size_t size() const noexcept { return ref_.size; }

  // Copies bytes out of / into the data. Remotely, 1, 2, 4 or 8 bytes at an aligned offset move as one access.
  void read(std::size_t offset, void* out, std::size_t n) const;
  void write(std::size_t offset, const void* in, std::size_t n);
  // Remote atomics on a cell of `width` bytes: returns the old value; `*succeeded` for compare_exchange.
  std::uint64_t remote_fetch_add(std::size_t offset, std::size_t width, std::uint64_t delta);
  std::uint64_t remote_compare_exchange(std::size_t offset, std::size_t width, std::uint64_t expected,
                                        std::uint64_t desired, bool* succeeded);
  // 0: not acquired; 1: acquired; 2: acquired, and its previous holder had died holding it.
  int lock(bool block, const Timeout& timeout);
  void unlock();
  void unlink_name();

  Segment(SegmentRef ref, std::shared_ptr<void> mapping, std::byte* local, void* lock)
      : ref_(std::move(ref)), mapping_(std::move(mapping)), local_(local), lock_(lock) {}

 private:
  SegmentRef ref_;
  std::shared_ptr<void> mapping_;  // keeps the mapping alive
  std::byte* local_ = nullptr;
  void* lock_ = nullptr;  // the lock in the segment's header (shm::Lock), when mapped and locked
};

// Checks a decoded handle's element type against the one it is decoded as.
MPX_API void check_element_type(const SegmentRef& ref, const char* expected);

}  // namespace mpx::detail
