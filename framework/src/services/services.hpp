// The services: protocol state machines inside the coordinator. Each owns its objects' state and replies through
// the coordinator; none knows about sockets beyond "reply to this peer".
#pragma once

#include "runtime/coordinator.hpp"

namespace mpx::services {

// Registers every service's handlers and death hooks on a coordinator before it starts.
void install_all(runtime::Coordinator& coordinator);

void install_queues(runtime::Coordinator& coordinator);
void install_sync(runtime::Coordinator& coordinator);
void install_pipes(runtime::Coordinator& coordinator);
void install_trace(runtime::Coordinator& coordinator);

// Kinds whose body is nil: anything else is malformed (throws ProtocolError).
void expect_nil(const wire::Envelope& request);
void install_shm(runtime::Coordinator& coordinator);
void install_pool(runtime::Coordinator& coordinator);
// Tracing was switched on: pipes leave the direct path (coordinator thread).
void pipes_tracing_started();

}  // namespace mpx::services
