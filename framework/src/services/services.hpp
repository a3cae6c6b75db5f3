// The services: protocol state machines inside the coordinator. Each owns its objects' state and replies through
// the coordinator; none knows about sockets beyond "reply to this peer" (service.hpp: their one shape).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/coordinator.hpp"
#include "services/service.hpp"

namespace mpx::services {

// Makes every service on a coordinator before it starts, through a CoordinatorHost that lives as long as it.
void install_all(runtime::Coordinator& coordinator);

// A pool whose owner runs in the coordinator's own process (the embedded default) can take its results on the
// coordinator thread, without the hop through the owner's result socket and result thread. The API layer registers
// this hook; it returns false for a frame it does not take (a pool it does not know, a big batch), which then goes the
// usual way. It runs on the coordinator thread: it takes only short-held locks and never runs user code. Not used
// while tracing, which sees only what crosses the ROUTER.
using PoolLocalDelivery = bool (*)(std::uint64_t pool, std::string_view results);
void set_pool_local_delivery(PoolLocalDelivery hook);

// Such an owner does not post its submissions: it appends them to an outbox, which the coordinator thread pulls
// whenever it handles an event of the pool, and it posts pool_pull only when the scheduler asked for one (PROTOCOL.md,
// "Pool", the outbox). The hook moves the outbox's pool_submit messages, in order, into `out`. With `ring`, the
// scheduler is about to wait for work (a worker waits): if the outbox is empty, the owner's next submission posts
// pool_pull. It runs on the coordinator thread and takes only short-held locks.
using PoolLocalSubmissions = void (*)(std::uint64_t pool, bool ring, std::vector<wire::Envelope>& out);
void set_pool_local_submissions(PoolLocalSubmissions hook);

}  // namespace mpx::services
