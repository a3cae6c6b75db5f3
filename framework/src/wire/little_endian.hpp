// Little-endian integers in byte streams (the direct pipe path, the coordinator's side door): what the wire writes
// outside msgpack, in one place.
#pragma once

#include <cstdint>

namespace mpx::wire {

// The low `bytes` bytes of `v` at p, least significant first.
inline void store_le(char* p, std::uint64_t v, int bytes) noexcept {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

inline std::uint64_t load_le(const char* p, int bytes) noexcept {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace mpx::wire
