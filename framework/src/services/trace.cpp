// Trace control: switches the coordinator's trace bus from another process (mpx-trace on/off/status, or
// mpx::trace::enable in a worker), and applies MPX_TRACE when the coordinator starts.
#include <cstdio>
#include <cstdlib>

#include <mpx/errors.hpp>
#include <mpx/trace_options.hpp>

#include "runtime/runtime.hpp"
#include "services/services.hpp"
#include "shm/segment.hpp"
#include "trace/bus.hpp"

namespace mpx::services {

namespace {

class TraceService final : public Service {
 public:
  explicit TraceService(Host& host) : Service(host) {}

  void install() {
    using K = wire::Kind;
    on(K::trace_enable, [this](Peer& peer, wire::Envelope& req) {
      auto [spec] = req.body_as<std::tuple<std::string>>();
      expect_frames(req, 1);
      try {
        if (!trace::compiled_in()) throw ValueError("mpx: tracing is compiled out of this build (-Dtracing=false)");
        trace::start(trace::Options::parse(spec));
        coordinator_.tracing_changed(true);
      } catch (const Error& e) {
        // A bad spec or a sink that cannot open: the caller's mistake, and the bus is left off.
        coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, e.what());
        return;
      }
      ok(peer, req.header, encode(std::make_tuple(trace::current_status().pub_endpoint)));
    });
    on(K::trace_disable, [this](Peer& peer, wire::Envelope& req) {
      expect_nil(req);
      trace::stop();
      coordinator_.tracing_changed(false);
      const auto s = trace::current_status();
      ok(peer, req.header, encode(std::make_tuple(s.recorded, s.dropped, s.pub_dropped)));
    });
    on(K::trace_status, [this](Peer& peer, wire::Envelope& req) {
      expect_nil(req);
      const auto s = trace::current_status();
      ok(peer, req.header, encode(std::make_tuple(s.on, s.spec, s.pub_endpoint, s.recorded, s.dropped, s.pub_dropped)));
    });
    on(K::trace_lane, [this](Peer& peer, wire::Envelope& req) {
      expect_nil(req);
      static std::uint64_t made = 0;  // coordinator thread only; names stay unique across coordinators of a process
      std::pair<std::string, std::uint64_t> ring{std::string(), 0};
      const std::string& session = runtime::state().session.id;
      // The session's prefix: removed with the session's segments if the bus never gets to (the root was killed).
      if (!session.empty()) {
        const auto name =
            shm::session_prefix(session) + std::to_string(req.header.sender) + "-t" + std::to_string(++made);
        if (auto opened = trace::open_lane_ring(req.header.sender, name)) ring = std::move(*opened);
      }
      ok(peer, req.header, encode(std::make_tuple(ring.first, ring.second)));
    });
    coordinator_.on_death([](std::uint64_t actor) { trace::lane_ring_owner_died(actor); });
  }
};

}  // namespace

std::unique_ptr<Service> install_trace(Host& host) {
  auto service = installed<TraceService>(host);

  // MPX_TRACE applies to the coordinator's process only: workers inherit the variable but own no traced socket.
  // A bad value is reported and ignored: throwing here would leave the session without a coordinator.
  if (const char* spec = std::getenv("MPX_TRACE"); spec != nullptr && *spec != '\0') {
    try {
      if (!trace::compiled_in()) throw ValueError("mpx: this build has tracing compiled out (-Dtracing=false)");
      trace::start(trace::Options::parse(spec));
    } catch (const Error& e) {
      std::fprintf(stderr, "mpx: ignoring MPX_TRACE=%s: %s\n", spec, e.what());
    }
  }
  return service;
}

}  // namespace mpx::services
