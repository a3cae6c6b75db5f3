// The services: protocol state machines inside the coordinator. Each owns its objects' state and replies through
// the coordinator; none knows about sockets beyond "reply to this peer".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
// An object's name in metrics: the one a topology gave it ("queue:jobs" -> "jobs", for `type` "queue"), else its id.
std::string metrics_name(std::string_view type, std::uint64_t id);
void install_shm(runtime::Coordinator& coordinator);
void install_pool(runtime::Coordinator& coordinator);
// Tracing was switched on: pipes leave the direct path (coordinator thread).
void pipes_tracing_started();
// Tracing was switched on or off: queue rings are flagged, so their users record what they do there (coordinator
// thread).
void queues_tracing_changed(bool on);

}  // namespace mpx::services
