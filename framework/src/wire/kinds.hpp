// Message kinds. framework/PROTOCOL.md documents each one with its body and its reply; keep the two in step.
// Each service owns a range of ids: runtime 10-19, queues 20-39, sync 40-69, pipes and connections 70-89.
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

  // queues (services/queues.cpp)
  queue_create = 20,     // [maxsize, joinable] -> ok [object id]
  queue_put = 21,        // [item bytes, timeout_ms] -> ok nil | error full | error closed   (timeout_ms: -1 forever, 0 no wait)
  queue_put_posted = 22, // [item bytes] (unbounded queues, no reply; errors are counted)
  queue_get = 23,        // [timeout_ms] -> ok [item bytes] | error empty
  queue_size = 24,       // nil -> ok [qsize, maxsize]
  queue_close = 25,      // nil -> ok nil
  queue_task_done = 26,  // nil -> ok nil | error value (called too many times)
  queue_join = 27,       // [timeout_ms] -> ok nil once every item is done | error timeout
};

struct KindInfo {
  Kind kind;
  std::string_view name;
};

// Every kind this build knows; anything else is malformed.
inline constexpr KindInfo known_kinds[] = {
    {Kind::ok, "ok"},
    {Kind::error, "error"},
    {Kind::hello, "hello"},
    {Kind::ping, "ping"},
    {Kind::pong, "pong"},
    {Kind::stats, "stats"},
    {Kind::process_error, "process_error"},
    {Kind::process_error_query, "process_error_query"},
    {Kind::queue_create, "queue_create"},
    {Kind::queue_put, "queue_put"},
    {Kind::queue_put_posted, "queue_put_posted"},
    {Kind::queue_get, "queue_get"},
    {Kind::queue_size, "queue_size"},
    {Kind::queue_close, "queue_close"},
    {Kind::queue_task_done, "queue_task_done"},
    {Kind::queue_join, "queue_join"},
};

bool is_known(std::uint16_t kind) noexcept;
std::string_view kind_name(Kind kind) noexcept;

enum class ErrorCode : std::uint16_t {
  malformed = 1,       // the body did not match the kind
  unknown_object = 2,  // no object with that id (or an object of another type)
  unsupported = 3,     // a kind the receiver does not serve
  timeout = 4,         // a blocking request's deadline passed
  internal = 5,
  full = 6,            // mpx::Full
  empty = 7,           // mpx::Empty
  closed = 8,          // the object was closed (Python: ValueError)
  value = 9,           // a misuse Python reports as ValueError (task_done too many times, release past a bound)
  not_owner = 10,      // releasing what this process does not hold
  broken = 11,         // mpx::BrokenBarrierError
  eof = 12,            // mpx::EOFError
};

}  // namespace mpx::wire
