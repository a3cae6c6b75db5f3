// The trace bus: socket owners hand it the messages they receive and send; a sink thread turns them into records
// for a file and a PUB socket. Off, a hook costs one relaxed load and a predictable branch. On, the traced thread
// copies a few header fields (and the body frames, if bodies are kept) into a bounded queue and goes on: the sink
// thread does the naming, encoding and writing, and when the queue is full the record is dropped and counted.
//
// Tracing a new path is one line at the socket owner, under the Meson option `tracing`:
//   MPX_TRACE_RECORD(mpx::trace::Direction::in, envelope, from_actor, to_actor);
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <mpx/trace_options.hpp>

#include "trace/format.hpp"
#include "wire/envelope.hpp"

namespace mpx::trace {

using format::Direction;
using format::coordinator_actor;

namespace detail {
extern std::atomic<bool> active;
}

// Whether the bus is recording. Relaxed: a hook that races with enable() or disable() may record one message more
// or less, which is all a trace switch promises.
inline bool on() noexcept { return detail::active.load(std::memory_order_relaxed); }

// Records one message as seen by the socket owner: `from` and `to` are actor ids (coordinator_actor for the
// coordinator). Call it before the envelope's frames are sent or moved. Never blocks and never throws.
void record(Direction direction, const wire::Envelope& envelope, std::uint64_t from, std::uint64_t to) noexcept;
// Records a sampled value of an object (a queue's depth after a put or get).
void gauge(std::uint64_t object, std::string_view name, std::int64_t value) noexcept;
// Tells the bus who an actor is (from its hello). Kept while tracing is off too, so a later trace names everyone.
void actor(std::uint64_t id, std::int64_t pid, std::string_view name);

// A process on the coordinator's host records its operations on queue rings in a trace ring of its own
// (trace/lane_ring.hpp; one per thread, so writers never wait for each other), which the sink drains: this makes one
// in a segment named `name`, and returns its name and token; nullopt while the bus is off or /dev/shm has no room.
std::optional<std::pair<std::string, std::uint64_t>> open_lane_ring(std::uint64_t actor, const std::string& name);
// The process died: its rings are drained once more, then removed.
void lane_ring_owner_died(std::uint64_t actor);

// The bus of this process. start() replaces running sinks; both throw mpx::Error on a sink that cannot open.
void start(const Options& options);
void stop();
Status current_status();
void set_object_name(std::uint64_t object_id, std::string_view name);
// The name set_object_name gave the object ("queue:jobs"), or "" if none did.
std::string given_object_name(std::uint64_t object_id);

// A message kind's number from its name ("queue_put"), as the wire knows it; nullopt for an unknown name.
std::optional<std::uint16_t> kind_number(std::string_view name) noexcept;

// The object's default name: the service that owns the kind, then the id ("queue:7"); empty for the runtime.
std::string default_object_name(std::uint16_t kind, std::uint64_t object_id);

}  // namespace mpx::trace

#if MPX_TRACING
#define MPX_TRACE_RECORD(direction, envelope, from, to)                             \
  do {                                                                              \
    if (::mpx::trace::on()) ::mpx::trace::record((direction), (envelope), (from), (to)); \
  } while (0)
#define MPX_TRACE_GAUGE(object, name, value)                                        \
  do {                                                                              \
    if (::mpx::trace::on()) ::mpx::trace::gauge((object), (name), (value));         \
  } while (0)
#define MPX_TRACE_ACTOR(id, pid, name) ::mpx::trace::actor((id), (pid), (name))
#else
#define MPX_TRACE_RECORD(direction, envelope, from, to) do { } while (0)
#define MPX_TRACE_GAUGE(object, name, value) do { } while (0)
#define MPX_TRACE_ACTOR(id, pid, name) do { } while (0)
#endif
