// The metrics HTTP server as a module of its own (libmpx-metrics-http.so), loaded with dlopen by the first
// serve_metrics() call. cpp-httplib brings OpenSSL, Kerberos, zlib and brotli with it: linked into libmpx, every
// program and every spawned child paid about 2 ms loading them at each start, for a server that only a root process
// asking for metrics runs. The module needs nothing of libmpx: it renders through the callback it is given.
#pragma once

#include <string>

namespace mpx::detail::metrics_http {

// Fills the response to GET /metrics: its body, and its status (200 unless it says otherwise).
using Render = void (*)(std::string& body, int& status);

// What the module offers, through one C symbol (module_entry) so that dlsym finds it without name mangling.
struct Module {
  // Binds HOST:PORT (port 0: any free one) and serves `render` at /metrics on a thread of its own, started with the
  // caller's signal mask. Null with `error` set if the address cannot be bound; else `bound` is the port.
  void* (*start)(const char* host, int port, Render render, int* bound, std::string* error);
  // Stops the server, joins its thread and frees it.
  void (*stop)(void* server);
};

inline constexpr const char* module_file = "libmpx-metrics-http.so";
inline constexpr const char* module_entry = "mpx_metrics_http_module";

}  // namespace mpx::detail::metrics_http
