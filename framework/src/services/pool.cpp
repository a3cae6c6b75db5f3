// The pool scheduler: per-pool task tables inside the coordinator. Submitters post tasks (no round trip); workers
// take batches of them (a take blocks, parked, while nothing is queued) and bring back the previous batch's results
// on the same request; the results travel on, untouched, to the submitting socket as one push (or, to an owner in the
// coordinator's own process, in memory through the LocalPoolOwner it registered (services/pool_local.hpp), which
// spares a lone result two thread hops).
//
// Submitters: the owner (index 0, the socket that created the pool) and any number of attached handles (pool_attach,
// one index each). A task id carries its submitter's index in its top bits, so the tables need no second key, and a
// worker keeps one results frame per submitter: the scheduler forwards each frame as it is, never re-encoding one.
//
// Crash safety: the owner watches its workers' sentinels and reports each exit (pool_worker_exit, with the exit code,
// which only the launcher knows under forkserver). What the dead worker held goes back to the head of the queue with
// one more retry, and is then handed out one task per take ("isolated"), so that an innocent task that shared a
// batch with a killer succeeds on its next, private attempt, while a task that kills every worker it meets fails
// with WorkerLost after max_retries. Results are matched by task id and a task completes once: a late result from a
// worker already reported dead, or a duplicate after a requeue, is forwarded (the owner ignores what it already
// completed) but never completes a task twice here.
#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include <unistd.h>

#include <msgpack.hpp>

#include <mpx/function.hpp>

#include "services/pool_local.hpp"
#include "services/services.hpp"
#include "services/waiters.hpp"
#include "trace/bus.hpp"
#include "wire/pool_frames.hpp"

namespace mpx::services {

namespace {

constexpr std::uint64_t max_submitters = 1u << 20;  // attaches per pool: bounds the table a client can grow

std::uint64_t submitter_of(std::uint64_t task_id) { return wire::pool_submitter_of(task_id); }

// The ids of a results frame's records whose status is not ok: tasks that raised (or whose values could not be
// encoded), which metrics count as failed rather than done. A visitor that keeps nothing else, so a frame costs one
// walk over its bytes (a result's bin is skipped, not copied), and a frame it cannot read counts nothing: the frame
// still goes on untouched, and its submitter is the one that judges it.
class FailedRecords : public msgpack::null_visitor {
 public:
  static std::vector<std::uint64_t> in(std::string_view frame) {
    FailedRecords visitor;
    std::size_t offset = 0;
    if (!msgpack::v2::parse(frame.data(), frame.size(), offset, visitor)) return {};
    return std::move(visitor.failed_);
  }

  bool start_array(std::uint32_t) {
    if (++depth_ == record_depth) field_ = 0;
    return true;
  }
  bool end_array_item() {
    if (depth_ == record_depth) ++field_;
    return true;
  }
  bool end_array() {
    --depth_;
    return true;
  }
  bool visit_positive_integer(std::uint64_t value) {
    if (depth_ != record_depth) return true;
    if (field_ == 0) task_ = value;  // [task_id, status, pid, payload]
    if (field_ == 1 && value != static_cast<std::uint64_t>(wire::PoolStatus::ok)) failed_.push_back(task_);
    return true;
  }

 private:
  static constexpr std::uint32_t record_depth = 2;  // the frame is an array of records, each an array
  std::uint32_t depth_ = 0;
  std::uint32_t field_ = 0;
  std::uint64_t task_ = 0;
  std::vector<std::uint64_t> failed_;
};

// Local delivery is not used while tracing: the trace sees only what crosses the ROUTER, so a traced pool's results keep
// going through it.
bool local_delivery_allowed() {
#if MPX_TRACING
  return !trace::on();
#else
  return true;
#endif
}

struct Task {
  std::uint64_t id = 0;
  std::shared_ptr<const std::string> function;  // the encoded FunctionId, shared by a submission's tasks
  std::string payload;
  std::uint32_t retries = 0;
  std::int64_t last_pid = 0;
};

struct Taker : Waiter {
  std::uint64_t max_tasks = 1;
};

// A result socket: the owner's (index 0) or an attached handle's. A gone one stays as a tombstone, so that its late
// results are recognised and dropped, and its index is never given to anyone else.
struct Submitter {
  Coordinator::Peer peer;
  bool live = true;
};

struct PoolState {
  std::uint64_t id = 0;
  std::vector<Submitter> submitters;  // [0]: the owner
  bool owner_local = false;           // the owner is a thread of the coordinator's own process
  std::string build_id;               // of the program the owner's workers run: attached handles check against it
  std::uint32_t max_retries = 3;
  std::uint32_t processes = 1;  // the owner's worker count: the fair share divides the queue among them all
  std::deque<Task> queue;
  std::unordered_map<std::uint64_t, std::unordered_map<std::uint64_t, Task>> held;  // worker pid -> task id -> task
  std::deque<Taker> takers;
  std::unordered_set<std::uint64_t> dead;  // reported by the owner: a late take from one is never served
  bool closed = false;
  bool terminated = false;
  std::uint64_t requeued = 0;
  std::uint64_t lost = 0;
  std::uint64_t done = 0;             // for metrics: tasks whose result came back, every call returned
  std::uint64_t raised = 0;           // for metrics: tasks whose result came back as an error record
  std::uint64_t worker_restarts = 0;  // worker exits reported while the pool was open
  std::shared_ptr<const std::string> last_function;  // shared by consecutive submissions of one function
};

// A zero-copy view of a frame.
std::string_view view(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

class PoolService final : public Service {
 public:
  explicit PoolService(Host& host) : Service(host) {}

  void install() {
    using K = wire::Kind;
    on(K::pool_create, [this](auto& peer, auto& req) { create(peer, req); });
    on(K::pool_submit, [this](auto&, auto& req) { submit(req); });
    on(K::pool_take, [this](auto& peer, auto& req) { take(peer, req); });
    on(K::pool_results, [this](auto&, auto& req) { results(req); });
    on(K::pool_worker_exit, [this](auto&, auto& req) { worker_exit(req); });
    on(K::pool_close, [this](auto&, auto& req) { close(req); });
    on(K::pool_terminate, [this](auto& peer, auto& req) { terminate(peer, req); });
    on(K::pool_cancel, [this](auto& peer, auto& req) { cancel(peer, req); });
    on(K::pool_task_state, [this](auto& peer, auto& req) { task_state(peer, req); });
    on(K::pool_stats, [this](auto& peer, auto& req) { stats(peer, req); });
    on(K::pool_attach, [this](auto& peer, auto& req) { attach(peer, req); });
    on(K::pool_detach, [this](auto& peer, auto& req) { detach(peer, req); });
    on(K::pool_pull, [this](auto&, auto& req) { pull(req); });
    coordinator_.on_death([this](std::uint64_t actor) { died(actor); });
    coordinator_.on_metrics([this](Metrics& snapshot) {
      for (const auto& [id, pool] : pools_) {
        std::uint64_t running = 0;
        for (const auto& [pid, tasks] : pool->held) running += tasks.size();
        snapshot.pools.push_back(PoolMetrics{id, metrics_name("pool", id), pool->queue.size(), running, pool->done,
                                             pool->raised + pool->lost, pool->requeued, pool->worker_restarts});
      }
    });
  }

 private:
  PoolState& find(const wire::Envelope& req) { return Service::find(pools_, req, "pool"); }

  void create(Coordinator::Peer& peer, wire::Envelope& req) {
    auto [max_retries, processes, build_id] = req.body_as<std::tuple<std::uint32_t, std::uint32_t, std::string>>();
    if (processes == 0) throw ProtocolError("mpx: pool_create with 0 processes");
    auto pool = std::make_unique<PoolState>();
    Submitter& owner = pool->submitters.emplace_back();
    owner.peer = peer.copy();
    owner.peer.actor = req.header.sender;
    pool->owner_local = req.header.sender == static_cast<std::uint64_t>(::getpid());
    pool->build_id = std::move(build_id);
    pool->max_retries = max_retries;
    pool->processes = processes;
    const std::uint64_t id = coordinator_.allocate_object_id();
    pool->id = id;
    pools_.emplace(id, std::move(pool));
    ok(peer, req.header, encode(std::make_tuple(id)));
  }

  // Another process (or socket) becomes a submitter: its tasks' results come back to the socket that sent this.
  void attach(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    expect_nil(req);
    if (pool.terminated || pool.closed) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::closed, "mpx: the pool is closed");
      return;
    }
    if (pool.submitters.size() >= max_submitters) throw ProtocolError("mpx: too many pool_attach for one pool");
    const std::uint64_t index = pool.submitters.size();
    Submitter& s = pool.submitters.emplace_back();
    s.peer = peer.copy();
    s.peer.actor = req.header.sender;
    ok(peer, req.header, encode(std::make_tuple(index, pool.processes, pool.max_retries, pool.build_id)));
  }

  // An attached handle leaves: its queued tasks are dropped, and results of its running ones will be discarded.
  void detach(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    auto [index] = req.body_as<std::tuple<std::uint64_t>>();
    if (index == 0 || index >= pool.submitters.size() || pool.submitters[index].peer.actor != req.header.sender) {
      throw ProtocolError("mpx: pool_detach of submitter " + std::to_string(index) + ", which is not the sender's");
    }
    drop_submitter(pool, index);
    ok(peer, req.header, encode(Object{}));
  }

  using Ended = wire::PoolEnded;

  void end_for_attached(PoolState& pool, Ended reason, const std::string& message) {
    const std::string body = encode(std::make_tuple(static_cast<std::uint8_t>(reason), message));
    for (std::size_t k = 1; k < pool.submitters.size(); ++k) {
      Submitter& s = pool.submitters[k];
      if (!s.live) continue;
      wire::Envelope push;
      push.header.kind = wire::Kind::pool_ended;
      push.header.object = pool.id;
      push.body.emplace_back(body.data(), body.size());
      coordinator_.reply(s.peer, push);
      s.live = false;  // nothing more goes to it
    }
  }

  // Tasks that will never run, answered at once so that their caller does not wait: `cancelled` records.
  void refuse(PoolState& pool, const std::vector<std::tuple<std::uint64_t, std::uint64_t>>& tasks) {
    std::map<std::uint64_t, std::vector<std::uint64_t>> by_submitter;
    for (const auto& t : tasks) by_submitter[submitter_of(std::get<0>(t))].push_back(std::get<0>(t));
    for (const auto& [k, ids] : by_submitter) {
      msgpack::sbuffer frame(16 + 16 * ids.size());
      msgpack::packer<msgpack::sbuffer> pk(frame);
      pk.pack_array(static_cast<std::uint32_t>(ids.size()));
      for (auto id : ids) {
        wire::pack_pool_record_head(pk, id, wire::PoolStatus::cancelled, 0);
        pk.pack_nil();
      }
      deliver(pool, k, std::string_view(frame.data(), frame.size()));
    }
  }

  void drop_submitter(PoolState& pool, std::uint64_t index) {
    Submitter& s = pool.submitters[index];
    if (!s.live) return;
    s.live = false;
    s.peer.routing = zmq::message_t();
    std::erase_if(pool.queue, [index](const Task& t) { return submitter_of(t.id) == index; });
    if (pool.closed && pool.queue.empty()) dismiss_takers(pool);
  }

  void submit(wire::Envelope& req) {
    PoolState& pool = find(req);
    pull_outbox(pool, false);  // what the owner appended before it posted this comes first
    enqueue(pool, req);
    serve(pool);
  }

  // The owner in this process rang: its outbox has submissions, and a worker waits (or did when it asked).
  void pull(wire::Envelope& req) {
    PoolState& pool = find(req);
    expect_nil(req);
    if (req.header.sender != pool.submitters[0].peer.actor || !pool.owner_local) {
      throw ProtocolError("mpx: pool_pull from a process that is not the pool's owner in the coordinator's process");
    }
    pull_outbox(pool, false);
    serve(pool);
  }

  // Moves the local owner's outbox to the queue (PROTOCOL.md, "Pool", the outbox). Each pulled message is exactly
  // what the owner would have posted, so it is traced as if it had crossed the ROUTER. `ring`: see
  // LocalPoolOwner::pull_submissions. True if anything was pulled.
  bool pull_outbox(PoolState& pool, bool ring) {
    if (!pool.owner_local) return false;
    pulled_.clear();
    pull_from_local_owner(pool.id, ring, pulled_);
    for (auto& e : pulled_) {
      MPX_TRACE_RECORD(trace::Direction::in, e, e.header.sender, trace::coordinator_actor);
      enqueue(pool, e);
    }
    return !pulled_.empty();
  }

  // A pool_submit's tasks join the tail of the queue.
  void enqueue(PoolState& pool, wire::Envelope& req) {
    if (req.body.size() != 2) throw ProtocolError("mpx: pool_submit carries [arguments][payload] frames");
    // The function is the bin of an encoded FunctionId: stored as it is, decoded (and checked) by the worker.
    auto [function, tasks] =
        req.body_as<std::tuple<std::string, std::vector<std::tuple<std::uint64_t, std::uint64_t>>>>();
    const std::string_view payload = view(req.body[1]);
    std::uint64_t total = 0;
    for (const auto& t : tasks) {
      total += std::get<1>(t);
      if (total > payload.size()) break;
    }
    if (total != payload.size()) throw ProtocolError("mpx: pool_submit task sizes do not add up to the payload");
    // Each task id must be in the id range of a submitter that is the sender itself: no one submits as another.
    for (const auto& t : tasks) {
      const auto k = submitter_of(std::get<0>(t));
      if (k >= pool.submitters.size() || pool.submitters[k].peer.actor != req.header.sender) {
        throw ProtocolError("mpx: pool_submit of task " + std::to_string(std::get<0>(t)) +
                            ", outside the sender's task ids");
      }
    }
    if (tasks.empty()) return;
    if (pool.terminated) return;  // the owner fails them itself (attached submitters were sent pool_ended)
    if (pool.closed && submitter_of(std::get<0>(tasks.front())) != 0) {
      // An attached handle that has not yet heard of the owner's close(): its tasks are cancelled, not left waiting
      // for workers that are leaving.
      refuse(pool, tasks);
      return;
    }
    if (!pool.submitters[submitter_of(std::get<0>(tasks.front()))].live) return;  // detached meanwhile: nobody waits
    if (!pool.last_function || *pool.last_function != function) {
      pool.last_function = std::make_shared<const std::string>(std::move(function));
    }
    const auto& encoded = pool.last_function;
    std::size_t offset = 0;
    for (const auto& [id, size] : tasks) {
      pool.queue.push_back(Task{id, encoded, std::string(payload.substr(offset, size)), 0, 0});
      offset += size;
    }
  }

  // A worker's report: [[submitter, [task ids]]...], one results frame per entry, in order (body frames 1..n).
  using Groups = std::vector<std::tuple<std::uint64_t, std::vector<std::uint64_t>>>;

  // Checks a report before anything changes: every frame has its entry, every id belongs to its entry's submitter.
  void check_groups(const PoolState& pool, const Groups& groups, const wire::Envelope& req, std::size_t first_frame) {
    if (req.body.size() != first_frame + groups.size()) {
      throw ProtocolError("mpx: a pool report needs one results frame per submitter entry");
    }
    for (const auto& [k, ids] : groups) {
      if (k >= pool.submitters.size()) throw ProtocolError("mpx: a pool report names unknown submitter " + std::to_string(k));
      for (auto id : ids) {
        if (submitter_of(id) != k) throw ProtocolError("mpx: a pool report files task " + std::to_string(id) +
                                                       " under submitter " + std::to_string(k));
      }
    }
  }

  // A worker's finished tasks leave the tables; each results frame goes on to its submitter as it is.
  void complete(PoolState& pool, std::uint64_t worker, const Groups& groups, const wire::Envelope& req,
                std::size_t first_frame) {
    auto mine = pool.held.find(worker);
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const auto& [k, ids] = groups[g];
      const auto& frame = req.body[first_frame + g];
      const auto failed = FailedRecords::in(view(frame));
      for (auto id : ids) {
        // A late duplicate is not in the worker's table: the task was requeued meanwhile.
        const bool completed = (mine != pool.held.end() && mine->second.erase(id)) || forget_task(pool, id);
        if (!completed) continue;
        ++(std::find(failed.begin(), failed.end(), id) == failed.end() ? pool.done : pool.raised);
      }
      if (frame.size() > 0) deliver(pool, k, view(frame));
    }
  }

  // False if the task was not in the tables (completed already).
  bool forget_task(PoolState& pool, std::uint64_t id) {
    for (auto it = pool.queue.begin(); it != pool.queue.end(); ++it) {
      if (it->id == id) {
        pool.queue.erase(it);
        return true;
      }
    }
    for (auto& [pid, tasks] : pool.held) {
      if (tasks.erase(id)) return true;
    }
    return false;
  }

  // A detached or dead submitter's results are dropped: nobody waits for them.
  void deliver(PoolState& pool, std::uint64_t submitter, std::string_view results) {
    const Submitter& s = pool.submitters[submitter];
    if (!s.live) return;
    if (submitter == 0 && pool.owner_local && local_delivery_allowed()) {
      if (deliver_to_local_owner(pool.id, results)) return;
    }
    wire::Envelope push;
    push.header.kind = wire::Kind::pool_delivery;
    push.header.object = pool.id;
    push.body.emplace_back(std::string_view("\xc0", 1));  // nil
    push.body.emplace_back(results.data(), results.size());
    coordinator_.reply(s.peer, push);
  }

  void take(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    auto [max_tasks, groups] = req.body_as<std::tuple<std::uint64_t, Groups>>();
    check_groups(pool, groups, req, 1);
    const std::uint64_t worker = req.header.sender;
    complete(pool, worker, groups, req, 1);
    if (pool.dead.count(worker) || pool.terminated || (pool.closed && pool.queue.empty())) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::closed, "mpx: the pool is closed");
      return;
    }
    pool.held[worker];  // known from now on: it counts in the fair share
    // With nothing queued, this worker waits: the owner's next submission rings.
    pull_outbox(pool, pool.queue.empty());
    Taker taker;
    static_cast<Waiter&>(taker) = make_waiter(peer, req);
    taker.max_tasks = std::clamp<std::uint64_t>(max_tasks, 1, wire::pool_max_take);
    if (!pool.queue.empty()) {
      hand_out(pool, taker);
      return;
    }
    // A take has no deadline: an idle worker waits for work until the pool closes or the worker dies.
    pool.takers.push_back(std::move(taker));
  }

  void results(wire::Envelope& req) {
    PoolState& pool = find(req);
    auto [groups] = req.body_as<std::tuple<Groups>>();
    check_groups(pool, groups, req, 1);
    complete(pool, req.header.sender, groups, req, 1);
    if (pull_outbox(pool, false)) serve(pool);
  }

  // Answers a taker with a batch from the head of the queue: its fair share of what is queued (at most half of it
  // divided among all the pool's workers, so the others always find work), or one isolated task that was held by a
  // worker that died.
  void hand_out(PoolState& pool, Taker& taker) {
    const std::uint64_t workers = pool.processes;
    const std::uint64_t share = std::max<std::uint64_t>(1, (pool.queue.size() + 2 * workers - 1) / (2 * workers));
    const std::uint64_t count = std::min(taker.max_tasks, share);
    auto& held = pool.held[taker.actor()];
    msgpack::sbuffer head(64 + 24 * count);  // msgpack's default 8 KiB buffer would cost a large malloc per batch
    msgpack::packer<msgpack::sbuffer> pk(head);
    std::string payload;
    std::vector<std::shared_ptr<const std::string>> functions;
    std::vector<std::tuple<std::uint64_t, std::uint32_t, std::uint64_t>> tasks;
    for (std::uint64_t i = 0; i < count && !pool.queue.empty(); ++i) {
      Task& t = pool.queue.front();
      if (t.retries > 0 && i > 0) break;  // a retried task runs alone
      std::uint32_t slot = 0;
      while (slot < functions.size() && *functions[slot] != *t.function) ++slot;
      if (slot == functions.size()) functions.push_back(t.function);
      tasks.emplace_back(t.id, slot, t.payload.size());
      payload += t.payload;
      const bool alone = t.retries > 0;
      const auto id = t.id;
      held.emplace(id, std::move(t));
      pool.queue.pop_front();
      if (alone) break;
    }
    pk.pack_array(2);
    pk.pack_array(static_cast<std::uint32_t>(functions.size()));
    for (const auto& f : functions) {
      pk.pack_bin(static_cast<std::uint32_t>(f->size()));
      pk.pack_bin_body(f->data(), static_cast<std::uint32_t>(f->size()));
    }
    pk.pack(tasks);
    answer(coordinator_, taker, wire::Kind::ok, std::string(head.data(), head.size()), std::move(payload), true);
  }

  void serve(PoolState& pool) {
    while (!pool.takers.empty()) {
      // A worker left waiting with nothing queued: the owner's outbox next (which asks for a ring if it is empty).
      if (pool.queue.empty()) pull_outbox(pool, true);
      if (pool.queue.empty()) break;
      Taker t = std::move(pool.takers.front());
      pool.takers.pop_front();
      hand_out(pool, t);
    }
    if (pool.closed && pool.queue.empty()) dismiss_takers(pool);
  }

  void dismiss_takers(PoolState& pool) {
    for (auto& t : pool.takers) answer_error(coordinator_, t, wire::ErrorCode::closed, "mpx: the pool is closed");
    pool.takers.clear();
  }

  void worker_exit(wire::Envelope& req) {
    PoolState& pool = find(req);
    auto [pid, exitcode] = req.body_as<std::tuple<std::int64_t, std::int64_t>>();
    if (pid <= 0) throw ProtocolError("mpx: pool_worker_exit with pid " + std::to_string(pid));
    const auto worker = static_cast<std::uint64_t>(pid);
    pool.dead.insert(worker);
    if (!pool.closed && !pool.terminated) ++pool.worker_restarts;
    forget_actor(coordinator_, pool.takers, worker);
    auto it = pool.held.find(worker);
    if (it == pool.held.end()) return;
    // Back to the head in their original order; a worker that exited cleanly (maxtasksperchild) is not charged.
    std::vector<Task> back;
    for (auto& [id, task] : it->second) back.push_back(std::move(task));
    pool.held.erase(it);
    std::sort(back.begin(), back.end(), [](const Task& a, const Task& b) { return a.id < b.id; });
    std::vector<Task*> failed;
    for (auto& t : back) {
      if (exitcode != 0) {
        ++t.retries;
        t.last_pid = pid;
      }
      if (t.retries > pool.max_retries) failed.push_back(&t);
    }
    for (auto t = back.rbegin(); t != back.rend(); ++t) {
      if (t->retries > pool.max_retries) continue;
      if (!pool.submitters[submitter_of(t->id)].live) continue;  // nobody waits for it any more
      ++pool.requeued;
      pool.queue.push_front(std::move(*t));
    }
    if (!failed.empty()) {
      pool.lost += failed.size();
      // One lost-records frame per submitter, each to its own socket.
      std::map<std::uint64_t, std::vector<const Task*>> by_submitter;
      for (const Task* t : failed) by_submitter[submitter_of(t->id)].push_back(t);
      for (const auto& [k, tasks] : by_submitter) {
        msgpack::sbuffer lost(256);
        msgpack::packer<msgpack::sbuffer> pk(lost);
        pk.pack_array(static_cast<std::uint32_t>(tasks.size()));
        for (const Task* t : tasks) {
          wire::pack_pool_record_head(pk, t->id, wire::PoolStatus::lost, t->last_pid);
          pk.pack(std::make_tuple(exitcode, t->retries));
        }
        deliver(pool, k, std::string_view(lost.data(), lost.size()));
      }
    }
    serve(pool);
  }

  void close(wire::Envelope& req) {
    PoolState& pool = find(req);
    expect_nil(req);
    pull_outbox(pool, false);  // submitted before the close: they run
    pool.closed = true;
    serve(pool);
  }

  void terminate(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    expect_nil(req);
    pool.closed = pool.terminated = true;
    pool.queue.clear();
    dismiss_takers(pool);
    // The owner stops the workers: nothing an attached handle waits for can come any more.
    end_for_attached(pool, Ended::terminated, "mpx: the pool was terminated by its owner");
    ok(peer, req.header, encode(Object{}));
  }

  void cancel(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    auto [id] = req.body_as<std::tuple<std::uint64_t>>();
    pull_outbox(pool, false);  // the task may still be in the owner's outbox
    bool cancelled = false;
    for (auto it = pool.queue.begin(); it != pool.queue.end(); ++it) {
      if (it->id == id) {
        pool.queue.erase(it);
        cancelled = true;
        break;
      }
    }
    if (pool.closed && pool.queue.empty()) dismiss_takers(pool);
    ok(peer, req.header, encode(std::make_tuple(cancelled)));
  }

  void task_state(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    auto [id] = req.body_as<std::tuple<std::uint64_t>>();
    pull_outbox(pool, false);
    std::uint8_t state = 2;
    for (const auto& t : pool.queue) {
      if (t.id == id) state = 0;
    }
    for (const auto& [pid, tasks] : pool.held) {
      if (tasks.count(id)) state = 1;
    }
    ok(peer, req.header, encode(std::make_tuple(state)));
  }

  void stats(Coordinator::Peer& peer, wire::Envelope& req) {
    PoolState& pool = find(req);
    expect_nil(req);
    pull_outbox(pool, false);
    std::uint64_t held = 0;
    for (const auto& [pid, tasks] : pool.held) held += tasks.size();
    ok(peer, req.header,
       encode(std::make_tuple(static_cast<std::uint64_t>(pool.queue.size()), held,
                              static_cast<std::uint64_t>(pool.held.size()), pool.requeued, pool.lost)));
  }

  void died(std::uint64_t actor) {
    for (auto it = pools_.begin(); it != pools_.end();) {
      PoolState& pool = *it->second;
      if (pool.submitters[0].peer.actor == actor) {
        // Nobody is left to run the workers: the pool ends, its waiting workers are told to exit, and every attached
        // handle is told, so that its waiting callers fail at once instead of waiting for results that cannot come.
        dismiss_takers(pool);
        end_for_attached(pool, Ended::owner_died,
                         "mpx: the pool's owner (pid " + std::to_string(actor) + ") ended, and the pool with it");
        it = pools_.erase(it);
        continue;
      }
      // An attached submitter that died: its queued tasks go, its running ones' results will be dropped.
      for (std::size_t k = 1; k < pool.submitters.size(); ++k) {
        if (pool.submitters[k].live && pool.submitters[k].peer.actor == actor) drop_submitter(pool, k);
      }
      // A dead worker's parked take could never be answered. What it held waits for the owner's report, which
      // carries the exit code (under forkserver only the launcher learns it).
      forget_actor(coordinator_, pool.takers, actor);
      ++it;
    }
  }

  std::unordered_map<std::uint64_t, std::unique_ptr<PoolState>> pools_;
  std::vector<wire::Envelope> pulled_;  // reused by pull_outbox
};

}  // namespace

std::unique_ptr<Service> install_pool(Host& host) { return installed<PoolService>(host); }

}  // namespace mpx::services
