// The pool protocol's frame facts (PROTOCOL.md, "Pool"), shared by the scheduler (services/pool.cpp), the owner's
// client and the worker (api/pool/): the status of a results record, why pool_ended ends a pool, the layout of a task
// id, and the head of a results record.
#pragma once

#include <cstddef>
#include <cstdint>

#include <msgpack.hpp>

namespace mpx::wire {

// A results record is [task_id, status, pid, payload]; the status says what the payload is.
enum class PoolStatus : std::uint8_t { ok = 0, error = 1, lost = 2, cancelled = 3, unserializable = 4 };

// The reason in a pool_ended push: what the attached submitter fails its waiting calls with.
enum class PoolEnded : std::uint8_t { owner_died = 0, terminated = 1 };

// A task id is submitter << pool_submitter_shift | n (n >= 1): its top bits name the submitter its results go to, so
// ids of different submitters never collide and a worker sorts its results by submitter without asking anyone.
constexpr unsigned pool_submitter_shift = 40;
constexpr std::uint64_t pool_submitter_of(std::uint64_t task_id) { return task_id >> pool_submitter_shift; }
constexpr std::uint64_t pool_first_task_id(std::uint64_t submitter) { return (submitter << pool_submitter_shift) + 1; }

// A worker's report (pool_take, pool_results) carries at most this many results frames: under the 64 body frames an
// envelope may have.
constexpr std::size_t pool_max_report_frames = 32;
// The most tasks one pool_take is answered with: a worker asks for fewer on the coordinator's host, where a take's
// round trip is short, and for this many on a node, where bigger batches keep the round trips' share of the time down.
constexpr std::uint64_t pool_max_take = 4096;

// A results record's head: the array of four and its first three fields. The caller packs the payload next.
template <class Buffer>
void pack_pool_record_head(msgpack::packer<Buffer>& pk, std::uint64_t task_id, PoolStatus status, std::int64_t pid) {
  pk.pack_array(4);
  pk.pack(task_id);
  pk.pack(static_cast<std::uint8_t>(status));
  pk.pack(pid);
}

}  // namespace mpx::wire
