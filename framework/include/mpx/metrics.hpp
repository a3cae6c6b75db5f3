/// \file
/// mpx/metrics.hpp — counters and gauges the coordinator keeps, as a snapshot or as Prometheus text.
///
///   mpx::Metrics m = mpx::metrics();          // from any process of the session: asked from the coordinator
///   std::string text = mpx::metrics_text();   // the same, in the Prometheus text format 0.0.4
///
/// MPX_METRICS=127.0.0.1:9464 in the environment of the root process (or `mpx-run --metrics ADDR`, or
/// mpx::serve_metrics(ADDR)) serves that text over HTTP at /metrics; port 0 picks a free port, which
/// mpx::metrics_endpoint() tells. framework/docs/metrics.md lists every metric.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <mpx/metrics_snapshot.hpp>  // Metrics and the per-object structs it holds

namespace mpx {

/// A snapshot from the coordinator (the `metrics` message), taken between two of the messages it handles.
MPX_API Metrics metrics();
/// metrics() in the Prometheus text exposition format 0.0.4.
MPX_API std::string metrics_text();
MPX_API std::string metrics_text(const Metrics& snapshot);  ///< A given snapshot in the Prometheus text format.

/// Serves metrics_text() at http://ADDR/metrics (ADDR is host:port; port 0 picks one) from a thread of this process,
/// until the program ends. Root process only; throws mpx::ValueError for a bad ADDR or a port that cannot be bound, and
/// mpx::ProcessError if a server already runs. MPX_METRICS=ADDR calls it in mpx::init.
MPX_API void serve_metrics(std::string_view address);
/// The bound "host:port" of the running server, or "" if none runs.
MPX_API std::string metrics_endpoint();

}  ///< namespace mpx
