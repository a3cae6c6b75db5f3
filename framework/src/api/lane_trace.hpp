// Recording a queue's lane operations (PROTOCOL.md, "Tracing", lane records): a put or get on a shared-memory ring
// crosses no socket the trace bus watches, so the thread that did it writes the record into a trace ring of its own.
#pragma once

#include <cstdint>
#include <string_view>

#include "wire/kinds.hpp"

namespace mpx::detail {

// Records one operation (kind queue_put or queue_get) on queue `queue`, of `item`, leaving `depth` items. Never blocks
// and never throws: without a trace ring (tracing just stopped, no room) the record is lost.
void trace_lane_operation(wire::Kind kind, std::uint64_t queue, std::string_view item, std::uint64_t depth) noexcept;

}  // namespace mpx::detail
