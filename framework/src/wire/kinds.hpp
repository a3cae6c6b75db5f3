// Message kinds. framework/PROTOCOL.md documents each one with its body and its reply; keep the two in step.
#pragma once

#include <cstdint>
#include <string_view>

namespace mpx::wire {

enum class Kind : std::uint16_t {
  // generic replies
  ok = 1,     // success; body depends on the request
  error = 2,  // [code, message]
  // runtime
  hello = 10,                // actor -> coordinator: [pid, parent_pid, name]
  ping = 11,                 // -> pong
  pong = 12,
  stats = 13,                // -> ok [received, malformed, actors]
  process_error = 14,        // actor -> coordinator: [pid, type, message, host]; -> ok
  process_error_query = 15,  // [pid] -> ok [found, type, message, pid, host]
};

// The last kind this build knows; anything outside the known set is malformed.
bool is_known(std::uint16_t kind) noexcept;
std::string_view kind_name(Kind kind) noexcept;

enum class ErrorCode : std::uint16_t {
  malformed = 1,       // the body did not match the kind
  unknown_object = 2,  // no object with that id
  unsupported = 3,     // a kind the receiver does not serve
  timeout = 4,
  internal = 5,
};

}  // namespace mpx::wire
