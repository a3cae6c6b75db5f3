// A pool whose owner is a thread of the coordinator's own process (the embedded default) trades with the scheduler in
// memory instead of through its result socket (PROTOCOL.md, "Pool": local delivery and the outbox). The scheduler
// defines what it needs from such an owner (LocalPoolOwner); the owner implements it and registers itself here, so the
// scheduler never calls up into the API layer by name.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "wire/envelope.hpp"

namespace mpx::services {

// Both run on the coordinator thread, take only short-held locks and never run user code.
class LocalPoolOwner {
 public:
  virtual ~LocalPoolOwner() = default;
  // Takes one of the owner's results frames, or returns false for a frame it does not take (a big batch is better
  // parsed on its result thread), which the scheduler then pushes to the result socket as usual.
  virtual bool take_results(std::string_view results) = 0;
  // Moves the outbox's pool_submit messages, in order, into `out`. With `ring`, the scheduler is about to wait for
  // work (a worker waits): if the outbox is empty, the owner's next submission posts pool_pull.
  virtual void pull_submissions(bool ring, std::vector<wire::Envelope>& out) = 0;
};

// Before the owner's first submission. Once unregister returns (the owner's destructor, first thing), the coordinator
// thread never touches that owner again.
void register_local_pool_owner(std::uint64_t pool, std::weak_ptr<LocalPoolOwner> owner);
void unregister_local_pool_owner(std::uint64_t pool);

// The scheduler's side: false (nothing pulled) when the pool has no local owner, or the owner declined the frame.
bool deliver_to_local_owner(std::uint64_t pool, std::string_view results);
void pull_from_local_owner(std::uint64_t pool, bool ring, std::vector<wire::Envelope>& out);

}  // namespace mpx::services
