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

/// Message tracing (mpx's own; Python has none): record every message the coordinator handles to a file, publish it
/// live, or both. See enable() and the mpx-trace tool.
namespace mpx::trace {

/// Where and what to record: at least one of `file` and `pub`. Options::parse reads the MPX_TRACE syntax.
struct MPX_API Options {
  std::string file;              ///< record file to write; empty: none
  std::string pub;               ///< PUB endpoint to bind for live subscribers; empty: none
  std::size_t body = 0;          ///< characters of decoded body kept per record; 0: no bodies
  std::size_t queue = 65536;     ///< records buffered between the traced thread and the sink thread
  int hwm = 10000;               ///< the PUB socket's send high-water mark (records per subscriber)
  /// Only messages of these kinds ("queue_put", "ok", ...) are recorded; empty: all. A reply's kind is `ok` or
  /// `error`, so list those to keep the replies. Actor and gauge records are always kept.
  std::vector<std::string> kinds;

  /// The MPX_TRACE syntax: comma-separated `file:PATH`, `pub:ENDPOINT`, `body:N`, `queue:N`, `hwm:N`, and `kind:NAME`
  /// once per kind to keep; at least one of file and pub. Throws mpx::ValueError naming the bad item.
  static Options parse(std::string_view spec);
  /// The same syntax back.
  std::string to_string() const;
};

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
/// False in a library built with -Dtracing=false: the hooks are compiled out and enable() throws.
MPX_API bool compiled_in() noexcept;

/// What status() reports: whether the bus records, with which options, and how many records it handled and lost.
struct Status {
  bool on = false;  ///< true while recording
  std::string spec;            ///< the options in use, MPX_TRACE syntax
  std::string pub_endpoint;    ///< the bound PUB endpoint (a tcp://...:* port resolved), empty without one
  std::uint64_t recorded = 0;  ///< records handed to the sinks since enable
  std::uint64_t dropped = 0;   ///< records lost because the sink thread's queue was full
  std::uint64_t pub_dropped = 0;  ///< records a slow subscriber did not get (the PUB socket would have blocked)
};
MPX_API Status status();  ///< The coordinator's trace status (asks it: works from any process of the session).

/// Gives a shared object a name for traces (`queue:jobs` instead of `queue:7`). Local to the coordinator's process.
MPX_API void name_object(std::uint64_t object_id, std::string_view name);

/// The endpoint of this session's coordinator: what `mpx-trace on|off|status ENDPOINT` talks to.
MPX_API std::string coordinator_endpoint();

}  // namespace mpx::trace
