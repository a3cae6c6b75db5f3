// mpx::trace: requests to the coordinator (trace_enable, trace_disable, trace_status), whose bus sees the messages.
#include <mpx/trace.hpp>

#include <mpx/errors.hpp>

#include "api/call.hpp"
#include "runtime/runtime.hpp"
#include "trace/bus.hpp"

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

bool compiled_in() noexcept {
#if MPX_TRACING
  return true;
#else
  return false;
#endif
}

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
