#include "services/pool_local.hpp"

#include <mutex>
#include <unordered_map>

namespace mpx::services {

namespace {

// The registry's mutex is held while an owner is used, so an owner that unregisters is never touched, nor freed, by
// the coordinator thread afterwards.
std::mutex owners_mutex;
std::unordered_map<std::uint64_t, std::weak_ptr<LocalPoolOwner>>& owners() {
  static auto* map = new std::unordered_map<std::uint64_t, std::weak_ptr<LocalPoolOwner>>();  // outlives exit-time threads
  return *map;
}

}  // namespace

void register_local_pool_owner(std::uint64_t pool, std::weak_ptr<LocalPoolOwner> owner) {
  std::lock_guard lock(owners_mutex);
  owners()[pool] = std::move(owner);
}

void unregister_local_pool_owner(std::uint64_t pool) {
  std::lock_guard lock(owners_mutex);
  owners().erase(pool);
}

bool deliver_to_local_owner(std::uint64_t pool, std::string_view results) {
  std::lock_guard lock(owners_mutex);
  auto it = owners().find(pool);
  if (it == owners().end()) return false;
  auto owner = it->second.lock();
  return owner && owner->take_results(results);
}

void pull_from_local_owner(std::uint64_t pool, bool ring, std::vector<wire::Envelope>& out) {
  std::lock_guard lock(owners_mutex);
  auto it = owners().find(pool);
  if (it == owners().end()) return;
  if (auto owner = it->second.lock()) owner->pull_submissions(ring, out);
}

}  // namespace mpx::services
