// What the shared-memory rings have in common (the queue lane's shm/ring.hpp, the direct pipe path's
// shm/pipe_ring.hpp): their records are length records (wire/stream_framing.hpp), and a record may wrap around the
// end of the ring's bytes. Inline: both rings copy on their hot paths.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "wire/stream_framing.hpp"

namespace mpx::shm {

// A record of n bytes takes n + record_overhead bytes of a ring.
inline constexpr std::size_t record_overhead = wire::record_length_bytes;

// Copies n bytes into a ring of `capacity` bytes at `data`, from `offset` (below capacity) on, going on at its start
// if they reach its end: at most two copies.
inline void copy_into_ring(std::byte* data, std::size_t capacity, std::size_t offset, const void* from,
                           std::size_t n) noexcept {
  const std::size_t first = std::min(n, capacity - offset);
  std::memcpy(data + offset, from, first);
  if (first < n) std::memcpy(data, static_cast<const std::byte*>(from) + first, n - first);
}

inline void copy_out_of_ring(const std::byte* data, std::size_t capacity, std::size_t offset, void* to,
                             std::size_t n) noexcept {
  const std::size_t first = std::min(n, capacity - offset);
  std::memcpy(to, data + offset, first);
  if (first < n) std::memcpy(static_cast<std::byte*>(to) + first, data, n - first);
}

}  // namespace mpx::shm
