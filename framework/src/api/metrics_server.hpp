// The metrics HTTP server's life inside the root process: started by mpx::init when MPX_METRICS is set, stopped at
// exit before the coordinator.
#pragma once

namespace mpx::detail {

void start_metrics_from_environment();
// Stops the server this process started, if any (nothing in a forked child, which inherits no server thread).
void stop_metrics_server();

}  // namespace mpx::detail
