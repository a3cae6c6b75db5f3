// A pool worker: the process an owner starts (start_worker) and what it runs (pool_worker_main). It takes batches of
// tasks from the coordinator's scheduler, runs them through their chunk trampolines, and brings the results back
// with its next take, one results frame per submitter (PROTOCOL.md, "Pool").
#include <algorithm>
#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/call.hpp"
#include "api/pool/pool_core.hpp"
#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "wire/actor_id.hpp"
#include "wire/pool_frames.hpp"

namespace mpx::detail {

namespace {

// How many tasks a worker asks for at once; the scheduler gives it at most its fair share of what is queued. On a node
// each take is a network round trip, so it asks for the most a take gives (nodes/pool_tcp went from 1.45x of a local
// pool to 1.02-1.09x); on the coordinator's host that made executor/submit and pool/64workers slower
// (framework/docs/benchmarks.md, "Many hosts").
constexpr std::uint64_t local_prefetch = 256;
// A worker running a long batch sends the results it has after this long, so callers see them as they finish.
constexpr auto flush_interval = std::chrono::milliseconds(2);

struct WorkerSpec {
  std::uint64_t pool = 0;
  std::optional<FunctionId> initializer;
  std::string initargs;
  std::uint64_t maxtasks = 0;
  MSGPACK_DEFINE(pool, initializer, initargs, maxtasks);
};

// One results frame in the making: an array of [task_id, status, pid, payload] records.
struct ResultsFrame {
  std::vector<std::uint64_t> ids;
  msgpack::sbuffer records;
  void add_ok(std::uint64_t id, std::int64_t pid, const std::string& results) {
    msgpack::packer<msgpack::sbuffer> pk(records);
    wire::pack_pool_record_head(pk, id, wire::PoolStatus::ok, pid);
    pk.pack_bin(static_cast<std::uint32_t>(results.size()));
    pk.pack_bin_body(results.data(), static_cast<std::uint32_t>(results.size()));
    ids.push_back(id);
  }
  void add_error(std::uint64_t id, std::int64_t pid, wire::PoolStatus status, const std::string& type,
                 const std::string& message, std::uint64_t offset) {
    msgpack::packer<msgpack::sbuffer> pk(records);
    wire::pack_pool_record_head(pk, id, status, pid);
    pk.pack(std::make_tuple(type, message, offset));
    ids.push_back(id);
  }
  // The frame: the array header, then the records as they are.
  std::string take() {
    msgpack::sbuffer head(8);
    msgpack::packer<msgpack::sbuffer> pk(head);
    pk.pack_array(static_cast<std::uint32_t>(ids.size()));
    std::string out(head.data(), head.size());
    out.append(records.data(), records.size());
    ids.clear();
    records.clear();
    return out;
  }
};

// A task's function as the worker resolved it; `error` says why one could not be (another build, garbage).
struct Resolved {
  ErasedFunction function = nullptr;
  Trampoline trampoline = nullptr;
  std::string error;
};

// A worker's finished tasks, one results frame per submitter: the scheduler forwards each frame as it is.
class Outbox {
 public:
  ResultsFrame& frame_for(std::uint64_t task_id) {
    const std::uint64_t k = wire::pool_submitter_of(task_id);
    if (last_ < frames_.size() && frames_[last_].first == k) return frames_[last_].second;
    for (last_ = 0; last_ < frames_.size(); ++last_) {
      if (frames_[last_].first == k) return frames_[last_].second;
    }
    frames_.emplace_back(k, ResultsFrame{});
    return frames_.back().second;
  }
  bool empty() const {
    return std::all_of(frames_.begin(), frames_.end(), [](const auto& f) { return f.second.ids.empty(); });
  }
  std::size_t filled() const {
    return static_cast<std::size_t>(
        std::count_if(frames_.begin(), frames_.end(), [](const auto& f) { return !f.second.ids.empty(); }));
  }
  // A pool_take (with `ask`) or pool_results: [ask?, [[submitter, [task ids]]...]] + those frames, at most
  // pool_max_report_frames of them (the rest stay for the next report).
  wire::Envelope report(wire::Kind kind, std::uint64_t pool, std::optional<std::uint64_t> ask) {
    const std::size_t n = std::min(filled(), wire::pool_max_report_frames);
    msgpack::sbuffer buffer(64 + 10 * n);  // msgpack's default 8 KiB buffer would cost a large malloc per message
    msgpack::packer<msgpack::sbuffer> pk(buffer);
    pk.pack_array(ask ? 2 : 1);
    if (ask) pk.pack(*ask);
    pk.pack_array(static_cast<std::uint32_t>(n));
    std::vector<std::string> frames;
    frames.reserve(n);
    for (auto& [k, frame] : frames_) {
      if (frame.ids.empty() || frames.size() == n) continue;
      pk.pack_array(2);
      pk.pack(k);
      pk.pack(frame.ids);
      frames.push_back(frame.take());
    }
    // A worker outlives many submitters (actors come and go): forget the idle ones, keeping a few warm buffers.
    if (frames_.size() > 4) {
      std::erase_if(frames_, [](const auto& f) { return f.second.ids.empty(); });
      last_ = 0;
    }
    wire::Envelope e;
    e.header.kind = kind;
    e.header.object = pool;
    e.body.emplace_back(buffer.data(), buffer.size());
    for (auto& f : frames) e.body.emplace_back(f.data(), f.size());
    return e;
  }

 private:
  std::vector<std::pair<std::uint64_t, ResultsFrame>> frames_;  // few: usually the owner's alone
  std::size_t last_ = 0;
};

// Runs one task (a chunk of calls) through its chunk trampoline and records the outcome.
void run_task(std::uint64_t id, const Resolved& call, std::string_view payload, std::int64_t pid, ResultsFrame& out) {
  std::string results;
  auto& offset = chunk_offset();
  offset = 0;
  try {
    if (!call.trampoline) throw ProtocolError(call.error);
    call.trampoline(call.function, payload, results);
  } catch (const SerializationError& e) {
    out.add_error(id, pid, wire::PoolStatus::unserializable, "mpx::SerializationError", e.what(), offset);
    return;
  } catch (const std::exception& e) {
    out.add_error(id, pid, wire::PoolStatus::error, current_exception_type(), e.what(), offset);
    return;
  } catch (...) {
    out.add_error(id, pid, wire::PoolStatus::error, current_exception_type(), "(not a std::exception)", offset);
    return;
  }
  out.add_ok(id, pid, results);
}

// The worker process: take batches, run them, bring the results back with the next take.
void pool_worker_main(WorkerSpec spec) {
  // Ctrl-C in a terminal reaches the whole process group: the owner handles it, and stops the workers itself.
  ::signal(SIGINT, SIG_IGN);
  if (spec.initializer) {
    try {
      auto [function, trampoline] = resolve(*spec.initializer);
      std::string ignored;
      trampoline(function, spec.initargs, ignored);
    } catch (const std::exception& e) {
      throw runtime::ChildFailure{initializer_failed_exit, current_exception_type(), e.what()};
    } catch (...) {
      throw runtime::ChildFailure{initializer_failed_exit, current_exception_type(), "(not a std::exception)"};
    }
  }
  // Takes and results go through the coordinator's side door when it has one (the coordinator is on this host), as all
  // of this thread's traffic does: both legs of a task's round trip then skip ZeroMQ's I/O threads. On a node they go
  // straight to the coordinator: through the agent's relay every take would pay a hop more.
  runtime::Channel::leave_node_relay();
  auto& channel = runtime::Channel::current();
  const std::uint64_t prefetch =
      runtime::state().session.node == wire::coordinator_node ? local_prefetch : wire::pool_max_take;
  const auto post = [&](wire::Envelope e) { channel.post(std::move(e)); };
  const auto pid = static_cast<std::int64_t>(runtime::self_pid());
  std::unordered_map<std::string, Resolved> functions;  // by encoded FunctionId
  Outbox results;
  std::uint64_t done = 0;
  for (;;) {
    std::uint64_t ask = prefetch;
    if (spec.maxtasks) ask = std::min(ask, spec.maxtasks - done);
    while (results.filled() > wire::pool_max_report_frames) {
      post(results.report(wire::Kind::pool_results, spec.pool, std::nullopt));
    }
    auto take = results.report(wire::Kind::pool_take, spec.pool, ask);
    auto reply = channel.request(std::move(take), std::nullopt);
    if (reply.header.kind == wire::Kind::error) {
      auto [code, message] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
      if (static_cast<wire::ErrorCode>(code) == wire::ErrorCode::closed) return;
      raise_error(reply);
    }
    if (reply.body.size() != 2) throw ProtocolError("mpx: pool_take reply without its payload frame");
    auto [fns, tasks] = reply.body_as<std::tuple<std::vector<std::string>,
                                                 std::vector<std::tuple<std::uint64_t, std::uint32_t, std::uint64_t>>>>();
    std::vector<const Resolved*> slots;
    for (auto& key : fns) {
      auto it = functions.find(key);
      if (it == functions.end()) {
        Resolved r;
        try {
          std::tie(r.function, r.trampoline) = resolve(decode<FunctionId>(key));
        } catch (const Error& e) {
          // Another build, or garbage: its tasks fail with this error, which reaches their caller, instead of
          // killing the worker.
          r.error = e.what();
        }
        it = functions.emplace(std::move(key), std::move(r)).first;
      }
      slots.push_back(&it->second);
    }
    const std::string_view payload = view(reply.body[1]);
    std::size_t offset = 0;
    auto last_flush = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const auto& [id, slot, size] = tasks[i];
      if (slot >= slots.size() || size > payload.size() - offset) throw ProtocolError("mpx: malformed pool_take reply");
      run_task(id, *slots[slot], payload.substr(offset, size), pid, results.frame_for(id));
      offset += size;
      ++done;
      if (i + 1 < tasks.size()) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_flush >= flush_interval) {
          while (!results.empty()) post(results.report(wire::Kind::pool_results, spec.pool, std::nullopt));
          last_flush = now;
        }
      }
    }
    if (spec.maxtasks && done >= spec.maxtasks) {
      while (!results.empty()) post(results.report(wire::Kind::pool_results, spec.pool, std::nullopt));
      // Posted results are durable once post() returns (in the side door's socket, or acknowledged), so they are
      // handled before the coordinator handles this worker's exit.
      return;
    }
  }
}

}  // namespace

void PoolCore::start_worker() {
  WorkerSpec spec;
  spec.pool = id;
  if (options.initializer) {
    spec.initializer = options.initializer->id();
    spec.initargs = options.initializer->args;
  }
  spec.maxtasks = options.maxtasksperchild;
  ProcessOptions po;
  po.name = "PoolWorker-" + std::to_string(++worker_counter);
  po.daemon = true;
  po.method = options.method;
  // A worker of a spread or pinned pool starts on the next node of the plan; one whose node is lost is skipped, and
  // the plan forgets it, so a replacement lands on a node that is still alive.
  for (;;) {
    if (!placement.empty()) po.node = placement[next_placement++ % placement.size()];
    Process worker(po, &pool_worker_main, spec);
    try {
      worker.start();
    } catch (const NodeLost&) {
      std::erase(placement, *po.node);
      if (placement.empty()) throw;
      continue;
    }
    workers.push_back(std::move(worker));
    break;
  }
  changed.notify_all();
}

}  // namespace mpx::detail
