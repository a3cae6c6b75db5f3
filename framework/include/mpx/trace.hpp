/// \file
/// Message tracing: every message that crosses the coordinator, and every put and get on a queue's shared-memory ring
/// (recorded by the process that does it), to a file and/or published live.
///
///   mpx::trace::enable("file:run.mpxt,body:256");   // or MPX_TRACE=file:run.mpxt,body:256 in the environment
///   ... the program runs ...
///   mpx::trace::disable();                          // flushes and closes the sinks
///
/// Read the result with `mpx-trace show run.mpxt`, `mpx-trace stats run.mpxt`, or watch live with
/// `MPX_TRACE=pub:tcp://127.0.0.1:5999` and `mpx-trace live tcp://127.0.0.1:5999`. Tracing is off by default; off, it
/// costs one predictable branch per message. The sinks never block the traced program: when they cannot keep up,
/// records are dropped and counted, and the counts appear in the trace.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <mpx/trace_options.hpp>  // Options, Status, compiled_in

/// Message tracing (mpx's own; Python has none): record every message the coordinator handles to a file, publish it
/// live, or both. See enable() and the mpx-trace tool.
namespace mpx::trace {

/// Starts recording with these sinks (replacing any current ones), from any process of the session: it asks the
/// coordinator (the trace_enable message), so a relative file path is relative to the root process's directory.
/// Throws mpx::ValueError on bad options or a sink that cannot open (a file, an endpoint), mpx::Error if the library
/// was built with -Dtracing=false.
MPX_API void enable(const Options& options);
MPX_API void enable(std::string_view spec);  ///< The same, with options in MPX_TRACE syntax (Options::parse).
/// Stops recording: the sink thread drains what is queued, writes a last drop count, closes the file and the socket.
/// Everything the calling thread's earlier calls caused is in the trace (the request queues behind them).
MPX_API void disable();
/// Whether the coordinator's bus is recording.
MPX_API bool enabled();
MPX_API Status status();  ///< The coordinator's trace status (asks it: works from any process of the session).

/// Gives a shared object a name for traces (`queue:jobs` instead of `queue:7`). Local to the coordinator's process.
MPX_API void name_object(std::uint64_t object_id, std::string_view name);

/// The endpoint of this session's coordinator: what `mpx-trace on|off|status ENDPOINT` talks to.
MPX_API std::string coordinator_endpoint();

}  // namespace mpx::trace
