// Limits on what a decode may allocate: every msgpack decode and every socket in mpx is bounded by these.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/limits.hpp"

namespace mpx::wire {

// Defined in core, where Object's bounded decode needs them.
using core::Limits;
using core::limits;

// What the coordinator keeps for one peer at most, whoever sends it: every per-peer store is bounded in count and
// bytes (PROTOCOL.md, "Bounds"), so no flood of messages grows its memory without limit.
struct StoreBounds {
  std::size_t error_reports = 1024;                 // process_error reports kept at once; the oldest goes first
  std::size_t error_report_bytes = 8u << 20;        // their type, message and host together
  std::size_t error_field_bytes = 64u << 10;        // one report's message (longer ones are cut, and say so)
  std::size_t error_name_bytes = 1u << 10;          // one report's type or host
  std::size_t side_unread_bytes = 64u << 20;        // replies a side-door connection leaves unread (plus one more)
  // Replies a ROUTER peer leaves unread: ZeroMQ's pipe to it holds `router_pipe_replies`, the coordinator keeps the
  // rest, up to these, in order; a peer past them is cut off. An mpx socket always takes its replies in (no receive
  // high-water mark), so only a client that stopped reading, or a foreign one, gets there.
  int router_pipe_replies = 1000;
  std::size_t router_unread_replies = 65536;
  std::size_t router_unread_bytes = 64u << 20;
  std::size_t router_cut_off_kept = 1024;  // cut-off peers remembered (the oldest is forgotten first)
  // Blocking requests one peer (a thread's socket or side-door connection) may have parked at once; an mpx thread
  // has one, so only a client that does not wait for its answers gets there.
  std::size_t parked_per_peer = 1024;
  // A Manager's challenges sent and not answered yet, and how long one waits for its answer (a handshake's time).
  std::size_t pending_challenges = 1024;
  std::int64_t challenge_lifetime_ms = 10'000;
};
inline constexpr StoreBounds store_bounds{};

}  // namespace mpx::wire
