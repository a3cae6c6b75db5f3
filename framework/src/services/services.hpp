// The services: protocol state machines inside the coordinator. Each owns its objects' state and replies through
// the coordinator; none knows about sockets beyond "reply to this peer".
#pragma once

#include <cstdint>
#include <string_view>

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

// A pool whose owner runs in the coordinator's own process (the embedded default) can take its results on the
// coordinator thread, without the hop through the owner's result socket and result thread. The API layer registers
// this hook; it returns false for a frame it does not take (a pool it does not know, a big batch), which then goes the
// usual way. It runs on the coordinator thread: it takes only short-held locks and never runs user code. Not used
// while tracing, which sees only what crosses the ROUTER.
using PoolLocalDelivery = bool (*)(std::uint64_t pool, std::string_view results);
void set_pool_local_delivery(PoolLocalDelivery hook);

}  // namespace mpx::services
