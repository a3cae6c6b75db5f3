// Limits on what a decode may allocate: every msgpack decode and every socket in mpx is bounded by these. They sit in
// core because Object's bounded decode (mpx::decode, detail::unpack_bounded) is core; wire/limits.hpp names them for
// the transports.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpx::core {

struct Limits {
  std::size_t max_array = 1u << 20;        // elements in one msgpack array
  std::size_t max_map = 1u << 20;          // pairs in one msgpack map
  std::size_t max_str = 64u << 20;         // bytes in one msgpack str
  std::size_t max_bin = 256u << 20;        // bytes in one msgpack bin
  std::size_t max_ext = 1u << 20;          // bytes in one msgpack ext
  std::size_t max_depth = 64;              // nesting depth
  std::int64_t max_message_bytes = 512ll << 20;  // ZMQ_MAXMSGSIZE on every socket
};

// The limits in force for this process.
const Limits& limits() noexcept;

}  // namespace mpx::core
