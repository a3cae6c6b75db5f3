// Local delivery: the coordinator-thread shortcut for a pool whose owner runs in the coordinator's own process (the
// embedded default). PoolCore implements the scheduler's services::LocalPoolOwner: the coordinator thread hands the
// owner small results frames itself (take_results) instead of pushing them to the result socket. A result with no
// callback completes right there, one notify to its waiting caller, which saves the hop through the result thread on
// a lone task's round trip; one with a callback (callback, error_callback, progress, a done callback) is queued for
// the result thread, so that every callback still runs there, in arrival order. The other way, the owner's
// submissions wait in its outbox for the coordinator thread to pull them (pull_submissions; PROTOCOL.md, "Pool", the
// outbox).
#include <iostream>
#include <memory>
#include <mutex>

#include "api/call.hpp"
#include "api/pool/pool_core.hpp"
#include "runtime/runtime.hpp"
#include "services/pool_local.hpp"

namespace mpx::detail {

// ---- the outbox of an owner in the coordinator's process ----

// The open batch is sealed into a message at this size, so that no one pull hands the scheduler a huge message.
constexpr std::size_t batch_max_bytes = std::size_t{1} << 20;

void PoolCore::seal_batch() {
  if (batch_sizes.empty()) return;
  outbox.push_back(submit_message(id, *batch_function, batch_sizes, batch_payload));  // copied: keeps its capacity
  outbox.back().header.sender = static_cast<std::uint64_t>(runtime::self_pid());
  batch_sizes.clear();
  batch_payload.clear();
  batch_function = nullptr;
}

bool PoolCore::outbox_add_single(const std::string& function, std::uint64_t task_id, const EncodedCalls& items) {
  if (batch_function != &function || batch_sizes.size() >= tasks_per_message || batch_payload.size() >= batch_max_bytes) {
    seal_batch();
  }
  batch_function = &function;
  const std::size_t before = batch_payload.size();
  append_chunk(batch_payload, items, 0, items.size());
  batch_sizes.emplace_back(task_id, batch_payload.size() - before);
  return published();
}

bool PoolCore::outbox_add(std::vector<wire::Envelope> messages) {
  seal_batch();
  for (auto& m : messages) {
    m.header.sender = static_cast<std::uint64_t>(runtime::self_pid());
    outbox.push_back(std::move(m));
  }
  return published();
}

// Seen by the scheduler's next look; and if it asked for a ring (a worker waits), the caller rings.
bool PoolCore::published() {
  outbox_ready.store(true);  // sequentially consistent, with the exchange: see the members
  return ring_wanted.exchange(false);
}

void PoolCore::ring() const { post(wire::make(wire::Kind::pool_pull, id, 0, Object{})); }

// ---- the coordinator thread's side (services::LocalPoolOwner) ----

namespace {
// Only a frame of a few records is taken here: that is the latency case (a lone task, a few concurrent ones). A big
// frame is a batch, whose parsing would take the coordinator thread from its other work for longer than the hop to
// the result thread (which parses it meanwhile) costs.
constexpr std::size_t local_delivery_max_records = 4;
}  // namespace

void PoolCore::pull_submissions(bool ring, std::vector<wire::Envelope>& out) {
  if (ring) ring_wanted.store(true);  // before the read of outbox_ready: see PoolCore's members
  if (!outbox_ready.load()) return;
  std::lock_guard outbox_lock(outbox_mutex);
  seal_batch();
  out = std::move(outbox);
  outbox.clear();
  outbox_ready.store(false);
}

bool PoolCore::take_results(std::string_view results) {
  // A msgpack fixarray header (0x90 | n) names a frame of n <= 15 records in its first byte.
  const auto head = results.empty() ? 0u : static_cast<unsigned>(static_cast<unsigned char>(results[0]));
  if ((head & 0xf0u) != 0x90u || (head & 0x0fu) > local_delivery_max_records) return false;
  try {
    handle_results(results, true);
  } catch (const std::exception& e) {
    std::cerr << "mpx: pool " << id << ": dropped a malformed delivery: " << e.what() << "\n";
  }
  return true;
}

void register_local_pool(const std::shared_ptr<PoolCore>& core) {
  core->local_outbox = true;  // before any submission: fixed from here on
  services::register_local_pool_owner(core->id, core);
}

void unregister_local_pool(std::uint64_t id) { services::unregister_local_pool_owner(id); }

}  // namespace mpx::detail
