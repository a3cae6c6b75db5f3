// mpx::trace: requests to the coordinator (trace_enable, trace_disable, trace_status), whose bus sees the messages.
#include <mpx/trace.hpp>

#include <chrono>
#include <memory>

#include <mpx/errors.hpp>

#include "api/call.hpp"
#include "api/lane_trace.hpp"
#include "runtime/runtime.hpp"
#include "trace/bus.hpp"
#include "trace/lane_ring.hpp"

namespace mpx::trace {

namespace {

bool in_coordinator_process() {
  runtime::require_initialized();
  const auto& st = runtime::state();
  return st.self.is_root && runtime::self_pid() == st.root_pid;
}

wire::Envelope ask(wire::Kind kind, std::string body) {
  wire::Envelope request;
  request.header.kind = kind;
  request.body.emplace_back(body.data(), body.size());
  return mpx::detail::call(std::move(request), -1);
}

}  // namespace

// Always through the coordinator, even in its own process: the request is ordered after this thread's earlier
// messages, so disable() records everything they caused (a reply, a queue's depth) before the sinks close.
void enable(const Options& options) {
  if (!compiled_in()) throw Error("mpx: tracing is compiled out of this build (meson -Dtracing=false)");
  (void)ask(wire::Kind::trace_enable, encode(std::make_tuple(options.to_string())));
}

void enable(std::string_view spec) { enable(Options::parse(spec)); }

void disable() { (void)ask(wire::Kind::trace_disable, encode(Object{})); }

Status status() {
  auto reply = ask(wire::Kind::trace_status, encode(Object{}));
  auto [on, spec, pub, recorded, dropped, pub_dropped] =
      reply.body_as<std::tuple<bool, std::string, std::string, std::uint64_t, std::uint64_t, std::uint64_t>>();
  return Status{on, spec, pub, recorded, dropped, pub_dropped};
}

bool enabled() { return status().on; }

void name_object(std::uint64_t object_id, std::string_view name) {
  if (!in_coordinator_process()) {
    throw Error("mpx: trace::name_object names objects in the coordinator's process only");
  }
  set_object_name(object_id, name);
}

std::string coordinator_endpoint() { return mpx::detail::coordinator_endpoint(); }

}  // namespace mpx::trace

namespace mpx::detail {

namespace {

// This thread's trace ring. Per thread, so recording takes no lock (a lock held by another thread at a fork would
// stay held in the child); a forked child asks for a ring of its own.
struct ThreadTraceRing {
  pid_t owner = 0;
  std::unique_ptr<trace::LaneRing> ring;
  // After a refusal (tracing stopped while the queue's ring still said it was on) the next ask waits a little, so
  // the few operations in between cost no round trip each.
  std::chrono::steady_clock::time_point ask_after{};
};
thread_local ThreadTraceRing thread_trace_ring;

trace::LaneRing* trace_ring() {
  auto& mine = thread_trace_ring;
  if (mine.owner != runtime::self_pid()) {
    mine.owner = runtime::self_pid();
    mine.ring.reset();
  }
  if (mine.ring && !mine.ring->closed()) return mine.ring.get();
  const auto now = std::chrono::steady_clock::now();
  if (now < mine.ask_after) return nullptr;
  mine.ring.reset();
  auto reply = call(wire::make(wire::Kind::trace_lane, 0, 0, Object{}), 0);
  auto [name, token] = reply.body_as<std::tuple<std::string, std::uint64_t>>();
  if (!name.empty()) mine.ring = trace::LaneRing::open(name, token);
  if (!mine.ring) mine.ask_after = now + std::chrono::milliseconds(10);
  return mine.ring.get();
}

}  // namespace

void trace_lane_operation(wire::Kind kind, std::uint64_t queue, std::string_view item, std::uint64_t depth) noexcept {
  try {
    trace::LaneRing* ring = trace_ring();
    if (ring == nullptr) return;
    trace::LaneRecord r{};
    r.kind = static_cast<std::uint16_t>(kind);
    r.direction = static_cast<std::uint8_t>(kind == wire::Kind::queue_get ? trace::Direction::out : trace::Direction::in);
    r.ts_ns = wire::monotonic_ns();
    r.actor = static_cast<std::uint64_t>(runtime::self_pid());
    r.object = queue;
    r.size = item.size();
    r.depth = static_cast<std::int64_t>(depth);
    ring->write(r, item);
  } catch (...) {
    // The coordinator is gone or refused: a lost record, never a failed put or get.
  }
}

}  // namespace mpx::detail
