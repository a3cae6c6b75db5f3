// How API handles talk to the coordinator: one request, one reply, error replies raised as mpx exceptions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "wire/envelope.hpp"

namespace mpx::detail {

// Sends `request` about `object` through this thread's channel and waits for the reply. `wait_ms` is the wait the
// coordinator enforces (-1 forever); the local wait allows a grace period beyond it. An error reply is raised as the
// matching exception (Full, Empty, TimeoutError, ValueError, ...).
wire::Envelope call(wire::Envelope request, std::int64_t wait_ms);
// Sends without waiting for a reply.
void post(wire::Envelope message);
// Whether a post from this thread is ordered before whatever this process sends next, from any thread (true while
// it has one channel). A post that another thread could overtake must be a call instead: a Lock released on one
// thread and then seen as still locked from another would break the lock's contract.
bool posts_are_ordered();
// Raises the exception matching an error reply.
[[noreturn]] void raise_error(const wire::Envelope& reply);
// The endpoint of this session's coordinator (what new handles record).
const std::string& coordinator_endpoint();
// MPX_SHM_REMOTE=1: this process maps no shared memory of the session (Value/Array segments, queue rings) and goes
// through the coordinator instead, as a process on another host does. For tests; always so on another node.
bool shm_forced_remote();

}  // namespace mpx::detail
