/// \file
/// mpx/trace_options.hpp — what a trace records and where (mpx::trace::Options), and what the trace bus reports
/// (mpx::trace::Status). mpx/trace.hpp includes it; it stands alone because the trace bus and the coordinator's trace
/// service (the trace and services floors) need these without the tracing API. Compiled in src/trace/options.cpp.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <mpx/detail/export.hpp>

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

}  // namespace mpx::trace
