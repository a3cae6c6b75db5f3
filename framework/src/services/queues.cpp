// The queue service: Queue, SimpleQueue and JoinableQueue state, FIFO per producer, blocked getters and putters with
// deadlines, and the JoinableQueue's unfinished-task accounting.
//
// Throughput comes from lending: a get may receive a batch of items, which the consumer's thread then returns from
// get() one at a time without another round trip. The coordinator keeps every lent item until the consumer reports
// it consumed (each request carries that count), so qsize() still counts them, and a consumer that dies or whose
// thread ends gives the unconsumed ones back at the head of the queue. Only a queue's sole consumer gets batches (at
// most a quarter of what is queued): with several consumers every get takes one item, exactly as in Python, so a
// batch given back can never reorder what another consumer sees.
//
// The lane (PROTOCOL.md, "Queues", the lane): a queue made by a client that asks for one also gets a
// shared-memory ring (shm/ring.hpp), and then its items live there and only there. Processes on this host put and get
// on the ring themselves; this service creates it, recovers its lock when a process dies holding it, and does the ring
// operation for whoever cannot or may not use it (a process on another host, a foreign client, any process while
// tracing is on, so that the trace sees every item). Such requests that must wait are parked here as usual and retried
// when a process that changed the ring pokes (queue_lane_poke): the ring's `ring_poke` flag asks for that while
// anything is parked. This thread never waits on the ring's lock for more than a few milliseconds, and retries on a
// timer when it could not have it (its holder is slow, or dead and about to be recovered by this very thread).
// A JoinableQueue's ring is for puts only (shm::ring_gets_through_coordinator): every get comes here, so this service
// records every taker and can put back what a dead one took and never task_done.
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "runtime/runtime.hpp"
#include "services/services.hpp"
#include "services/waiters.hpp"
#include "shm/ring.hpp"
#include "trace/bus.hpp"
#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"

namespace mpx::services {

namespace {

constexpr std::uint64_t max_batch = 256;

// A ring holds any item the wire could carry (wire::limits().max_message_bytes), so nothing that a coordinator queue
// took is refused on the lane; its pages are allocated only as far as the ring fills (sparse), so the size costs
// address space, not memory. At least 256 MiB, at most what a 32-bit offset reaches.
constexpr std::uint64_t min_ring_bytes = std::uint64_t{256} << 20;
constexpr std::uint64_t max_ring_bytes = 0xffff0000u;
// How long this thread waits for a ring's lock before it parks the request and retries on a timer.
constexpr auto ring_lock_patience = std::chrono::milliseconds(5);
constexpr auto ring_retry = std::chrono::milliseconds(1);

std::uint64_t ring_capacity() {
  // For tests: a small ring, to wrap it and fill it. Read at each creation, in the coordinator's process.
  if (const char* bytes = std::getenv("MPX_QUEUE_RING_BYTES"); bytes != nullptr && *bytes != '\0') {
    const auto wanted = std::strtoull(bytes, nullptr, 10);
    if (wanted >= 64) return std::min<std::uint64_t>(wanted, max_ring_bytes);
  }
  const auto largest = static_cast<std::uint64_t>(wire::limits().max_message_bytes) + shm::record_overhead;
  constexpr std::uint64_t page = 4096;
  return std::clamp((largest + page - 1) / page * page, min_ring_bytes, max_ring_bytes);
}

shm::Deadline ring_lock_deadline() { return std::chrono::steady_clock::now() + ring_lock_patience; }

// Who holds lent items: a process (for death) and the channel of one of its threads (for reports).
struct Borrower {
  std::uint64_t actor = 0;
  std::string routing;
  bool operator<(const Borrower& o) const { return std::tie(actor, routing) < std::tie(o.actor, o.routing); }
};

// A posted put that could not enter the ring yet (full, or its lock busy), kept in arrival order.
struct PendingPut {
  Borrower who;
  std::string item;
};

struct Lane {
  std::unique_ptr<shm::Ring> ring;
  std::string name;
  std::uint64_t token = 0;
  std::deque<PendingPut> pending;
  // queue_lane requests (a client's sync before it puts on the ring again) waiting for their sender's pending puts.
  std::deque<Waiter> syncs;
  bool retry_armed = false;
  // The processes told where the ring is (they may map it): when one dies, the ring's sleepers are restarted
  // (shm::Ring::restart_sleepers), since it may have been woken and killed before it acted on the wake-up.
  std::set<std::uint64_t> mappers;
  bool restart_pending = false;  // a mapper died; not done yet because the lock was busy
  // Items the ring counted as put once already that wait in `pending` to go back in (a give-back that found no room).
  std::uint64_t put_again = 0;
};

struct QueueState {
  std::size_t maxsize = 0;  // 0: unbounded
  bool joinable = false;
  std::deque<std::string> items;
  std::deque<Waiter> getters;
  std::deque<Waiter> putters;  // each holds the item it wants to put
  std::deque<Waiter> joiners;
  std::size_t unfinished = 0;
  std::map<Borrower, std::deque<std::string>> lent;  // delivered to a consumer's thread, not yet returned by get()
  std::set<Borrower> consumers;                      // consumer threads seen, until they release or die
  std::size_t lent_total = 0;
  // JoinableQueue: items got but not yet task_done, per process, oldest first. A dead taker's items go back.
  std::map<std::uint64_t, std::deque<std::string>> taken;
  std::unique_ptr<Lane> lane;  // then the items are in its ring (and its pending puts), never in `items`
  // A JoinableQueue with a lane: its puts land in the ring without passing here, so `unfinished` cannot be counted up.
  // Instead this counts the items taken out of the ring (lent or got) less those given back and the task_done calls,
  // and what the ring and its pending puts hold is added to it (unfinished_tasks). Negative after a task_done that came
  // before its item's get, as Python allows.
  std::int64_t out_of_ring = 0;
  std::uint64_t puts = 0;          // items put through this service (a lane's ring counts its own)
  std::uint64_t gets_shown = 0;    // what the last metrics snapshot said: gets never go down

  // Lent items still count: for the user they have not been got yet.
  std::size_t size() const {
    if (lane) return static_cast<std::size_t>(lane->ring->size()) + lane->pending.size() + lent_total;
    return items.size() + lent_total;
  }
  std::size_t unfinished_tasks() const {
    if (!lane) return unfinished;
    const auto queued = static_cast<std::int64_t>(lane->ring->size() + lane->pending.size());
    return static_cast<std::size_t>(std::max<std::int64_t>(0, queued + out_of_ring));
  }
  void finish_task() {
    if (lane) {
      --out_of_ring;
    } else {
      --unfinished;
    }
  }
  bool has_room() const { return maxsize == 0 || size() < maxsize; }
};

Borrower borrower_of(const Coordinator::Peer& peer, std::uint64_t actor) {
  return Borrower{actor, std::string(static_cast<const char*>(peer.routing.data()), peer.routing.size())};
}

class QueueService final : public Service {
 public:
  explicit QueueService(Host& host) : Service(host) {}

  void install() {
    using K = wire::Kind;
    on(K::queue_create, [this](auto& peer, auto& req) { create(peer, req); });
    on(K::queue_put, [this](auto& peer, auto& req) { put(peer, req, false); trace_depth(req); });
    on(K::queue_put_posted, [this](auto& peer, auto& req) { put(peer, req, true); trace_depth(req); });
    on(K::queue_get, [this](auto& peer, auto& req) { get(peer, req); trace_depth(req); });
    on(K::queue_size, [this](auto& peer, auto& req) { size(peer, req); });
    on(K::queue_release, [this](auto& peer, auto& req) { release(peer, req); trace_depth(req); });
    on(K::queue_task_done, [this](auto& peer, auto& req) { task_done(peer, req); });
    on(K::queue_join, [this](auto& peer, auto& req) { join(peer, req); });
    on(K::queue_lane, [this](auto& peer, auto& req) { lane_info(peer, req); });
    on(K::queue_lane_poke, [this](auto&, auto& req) {
      expect_nil(req);
      QueueState& q = find(req);
      if (q.lane) serve_lane(q, req.header.object);
      trace_depth(req);
    });
    on(K::queue_unget, [this](auto&, auto& req) { unget(req); trace_depth(req); });
    coordinator_.on_death([this](std::uint64_t actor) { died(actor); });
    coordinator_.on_metrics([this](Metrics& snapshot) { collect(snapshot); });
    coordinator_.on_tracing_changed([this](bool enabled) { tracing_changed(enabled); });
  }

 private:
  // Gets are not counted one by one (a lane's are made by its processes, unseen): every item put is in the queue
  // or was got, so gets are puts minus depth.
  void collect(Metrics& snapshot) {
    for (auto& [id, q] : queues_) {
      QueueMetrics m;
      m.id = id;
      m.name = metrics_name("queue", id);
      m.depth = q->size();
      m.puts = q->puts;
      m.waiters = q->getters.size() + q->putters.size() + q->joiners.size();
      if (q->lane) {
        m.puts += q->lane->ring->puts() + q->lane->pending.size() - q->lane->put_again;
        m.waiters += q->lane->ring->sleepers();
      }
      q->gets_shown = std::max(q->gets_shown, m.puts > m.depth ? m.puts - m.depth : 0);
      m.gets = q->gets_shown;
      snapshot.queues.push_back(std::move(m));
    }
  }

  // The queue's depth after a change, sampled into the trace for `mpx-trace stats` (queue depth over time).
  void trace_depth([[maybe_unused]] const wire::Envelope& req) {
#if MPX_TRACING
    if (!trace::on()) return;
    if (auto it = queues_.find(req.header.object); it != queues_.end()) {
      trace::gauge(req.header.object, "depth", static_cast<std::int64_t>(it->second->size()));
    }
#endif
  }

  QueueState& find(const wire::Envelope& req) { return Service::find(queues_, req, "queue"); }

  // One of a queue's waiting lists, or nullptr once the queue is gone (for an expiring deadline).
  std::deque<Waiter>* waiting(std::uint64_t id, std::deque<Waiter> QueueState::*list) {
    auto it = queues_.find(id);
    return it == queues_.end() ? nullptr : &((*it->second).*list);
  }

  // The raw item frame that follows the msgpack arguments.
  static std::string item_of(const wire::Envelope& req) {
    if (req.body.size() != 2) throw ProtocolError("mpx: a queue put carries [arguments][item] frames");
    return std::string(static_cast<const char*>(req.body[1].data()), req.body[1].size());
  }

  void create(Coordinator::Peer& peer, wire::Envelope& req) {
    std::uint64_t maxsize = 0;
    bool joinable = false;
    bool lane_wanted = false;
    std::string trace_name;
    try {
      std::tie(maxsize, joinable, lane_wanted, trace_name) =
          req.body_as<std::tuple<std::uint64_t, bool, bool, std::string>>();
    } catch (const ProtocolError&) {
      try {
        std::tie(maxsize, joinable, lane_wanted) = req.body_as<std::tuple<std::uint64_t, bool, bool>>();
      } catch (const ProtocolError&) {
        std::tie(maxsize, joinable) = req.body_as<std::tuple<std::uint64_t, bool>>();  // without a lane, as before
      }
    }
    auto q = std::make_unique<QueueState>();
    q->maxsize = maxsize;
    q->joinable = joinable;
    const std::uint64_t id = coordinator_.allocate_object_id();
    if (!trace_name.empty()) trace::set_object_name(id, "queue:" + trace_name);
    if (lane_wanted) q->lane = make_lane(id, req.header.sender, maxsize);
    // A JoinableQueue's lane is for puts: putting back a dead taker's unfinished items needs this service's record of
    // every take.
    if (q->lane && joinable) q->lane->ring->set_flag(shm::ring_gets_through_coordinator, true);
    if (q->lane) q->lane->mappers.insert(req.header.sender);
    const QueueState& made = *q;
    queues_.emplace(id, std::move(q));
    if (!lane_wanted) {
      ok(peer, req.header, encode(std::make_tuple(id)));
      return;
    }
    auto [name, token, host] = lane_of(made);
    ok(peer, req.header, encode(std::make_tuple(id, name, token, host)));
  }

  std::unique_ptr<Lane> make_lane(std::uint64_t id, std::uint64_t creator, std::uint64_t maxsize) {
    const std::string& session = runtime::state().session.id;
    if (session.empty()) return nullptr;  // its segments could not be told apart and removed at the end
    auto lane = std::make_unique<Lane>();
    // The session's prefix: unlinked with the session's other segments when it ends, or by the next session if it
    // was killed.
    lane->name = shm::session_prefix(session) + std::to_string(creator) + "-q" + std::to_string(id);
    lane->token = shm::random_u64() | 1;
    try {
      lane->ring = shm::Ring::create(lane->name, lane->token, ring_capacity(), maxsize);
    } catch (const std::exception&) {
      return nullptr;  // no room or no /dev/shm: the queue works without a lane
    }
    if (trace::on()) lane->ring->set_flag(shm::ring_traced, true);
    return lane;
  }

  // What a client needs to map the ring: its name (empty: no lane), token, and this host's key.
  static std::tuple<std::string, std::uint64_t, std::string> lane_of(const QueueState& q) {
    if (!q.lane) return {std::string(), 0, std::string()};
    return {q.lane->name, q.lane->token, shm::host_key()};
  }

  static bool has_pending(const Lane& lane, const Borrower& who) {
    return std::any_of(lane.pending.begin(), lane.pending.end(), [&](const PendingPut& p) {
      return p.who.actor == who.actor && p.who.routing == who.routing;
    });
  }

  // queue_lane: the lane's coordinates, once the sender's posted puts that wait here are in the ring (a client that
  // posted puts here while tracing was on asks before it puts on the ring again, so its items stay in order).
  void lane_info(Coordinator::Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    QueueState& q = find(req);
    if (q.lane) q.lane->mappers.insert(req.header.sender);
    if (q.lane && has_pending(*q.lane, borrower_of(peer, req.header.sender))) {
      q.lane->syncs.push_back(make_waiter(peer, req));
      return;
    }
    ok(peer, req.header, encode(lane_of(q)));
  }

  // A queue_get reply's items frame, built in one allocation and handed over without another copy.
  static void add_items(wire::Envelope& reply, const std::deque<std::string>& items) {
    std::size_t bytes = 0;
    for (const auto& item : items) bytes += wire::record_length_bytes + item.size();
    std::string packed;
    packed.reserve(bytes);
    for (const auto& item : items) wire::append_record(packed, item);
    reply.body.push_back(wire::frame_of(std::move(packed)));
  }

  // A put on a lane's ring for a process that does not use the lane itself.
  void lane_put(QueueState& q, Coordinator::Peer& peer, wire::Envelope& req, std::string item, bool posted,
                std::int64_t wait) {
    Lane& lane = *q.lane;
    const std::uint64_t id = req.header.object;
    if (!lane.ring->fits(item.size())) {
      if (posted) throw ProtocolError("mpx: an item larger than the queue's ring");
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, "mpx: the item is larger than the queue");
      return;
    }
    if (posted) {
      // Behind whatever waits already: one channel's items stay in order.
      lane.pending.push_back(PendingPut{borrower_of(peer, req.header.sender), std::move(item)});
      serve_lane(q, id);
      return;
    }
    bool busy = false;
    if (q.putters.empty() && lane.pending.empty()) {
      const auto status = lane.ring->put(item.data(), item.size(), ring_lock_deadline(), false).status;
      if (status == shm::Ring::Status::done) {
        ok(peer, req.header, encode(Object{}));
        serve_lane(q, id);
        return;
      }
      if (status == shm::Ring::Status::no_space) {
        coordinator_.reply_error(peer, req.header, wire::ErrorCode::internal,
                                 "mpx: /dev/shm has no room for the queue");
        return;
      }
      busy = status == shm::Ring::Status::busy;
    }
    if (wait == 0 && !busy) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::full, "mpx: the queue is full");
      return;
    }
    park_on_lane(q, id, &QueueState::putters, make_waiter(peer, req, std::move(item)), wait, wire::ErrorCode::full,
                 "mpx: the queue stayed full until the timeout");
  }

  // A lane request that must wait, parked as on the coordinator path. One with no wait gets here only when the ring's
  // lock was busy, which is no answer yet: it waits for the retry.
  void park_on_lane(QueueState& q, std::uint64_t id, std::deque<Waiter> QueueState::*list, Waiter waiter,
                    std::int64_t wait, wire::ErrorCode code, const char* message) {
    if (wait == 0) wait = 100;
    park(coordinator_, q.*list, std::move(waiter), wait, [this, id, list] { return waiting(id, list); },
         [this, code, message](Waiter& w) { answer_error(coordinator_, w, code, message); });
    serve_lane(q, id);
  }

  // How many items a get through the coordinator takes from a ring: one, except for the sole consumer through here of
  // an unbounded JoinableQueue (every get of one comes through here, so "sole" is known), of a queue while tracing is
  // on (mpx's own handles then stay on the ring, so "sole" counts only the consumers that come through here), or on
  // another host (which never maps the ring; "sole" as while tracing). It is lent a batch as on the coordinator path:
  // it would otherwise cost a round trip per item, over the network for a node.
  static std::size_t lane_batch(const QueueState& q, const Borrower& who, std::uint64_t max_items) {
    if (q.maxsize != 0) return 1;
    if (!q.lane->ring->has_flag(shm::ring_traced) && !q.lane->ring->has_flag(shm::ring_gets_through_coordinator) &&
        wire::node_of(who.actor) == wire::coordinator_node) {
      return 1;
    }
    if (q.consumers.size() != 1 || !q.consumers.contains(who)) return 1;
    const std::uint64_t quarter = std::max<std::uint64_t>(1, q.lane->ring->size() / 4);
    return static_cast<std::size_t>(std::min({std::max<std::uint64_t>(max_items, 1), max_batch, quarter}));
  }

  // Lent items that were not consumed go back in front of the ring's head. If that cannot be done now (no room there:
  // the ring filled meanwhile, or its head is at the start of a ring that never reached its end; or the lock stayed
  // busy), they go to its tail: nothing is lost, but they come after items put since.
  void give_back_to_ring(QueueState& q, const std::deque<std::string>& items) {
    shm::Ring& ring = *q.lane->ring;
    q.out_of_ring -= static_cast<std::int64_t>(items.size());
    if (ring.put_front(items, ring_lock_deadline()).status == shm::Ring::Status::done) return;
    for (const auto& item : items) q.lane->pending.push_back(PendingPut{Borrower{}, item});
    q.lane->put_again += items.size();
  }

  void lane_get(QueueState& q, Coordinator::Peer& peer, wire::Envelope& req, std::int64_t wait,
                std::uint64_t max_items, const Borrower& who) {
    Lane& lane = *q.lane;
    const std::uint64_t id = req.header.object;
    bool busy = false;
    if (q.getters.empty()) {
      std::deque<std::string> items;
      const auto status = lane.ring->take(items, lane_batch(q, who, max_items), ring_lock_deadline()).status;
      if (status == shm::Ring::Status::done) {
        hand_over(q, peer, req.header, who, std::move(items));
        serve_lane(q, id);  // room for what waits to be put
        return;
      }
      busy = status == shm::Ring::Status::busy;
    }
    if (wait == 0 && !busy) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::empty, "mpx: the queue is empty");
      return;
    }
    Waiter getter = make_waiter(peer, req);
    getter.max_items = max_items;
    park_on_lane(q, id, &QueueState::getters, std::move(getter), wait, wire::ErrorCode::empty,
                 "mpx: the queue stayed empty until the timeout");
  }

  // Answers a get with what was taken from the ring: the first item is got now, the rest are lent to `who`.
  void hand_over(QueueState& q, const Coordinator::Peer& peer, const wire::Header& request, const Borrower& who,
                 std::deque<std::string> items) {
    auto reply = wire::make_reply(request, wire::Kind::ok, encode(Object{}));
    add_items(reply, items);
    q.out_of_ring += static_cast<std::int64_t>(items.size());
    if (q.joinable) q.taken[who.actor].push_back(std::move(items.front()));
    items.pop_front();
    if (!items.empty()) {
      q.lent_total += items.size();
      auto& lent = q.lent[who];
      for (auto& item : items) lent.push_back(std::move(item));
    }
    coordinator_.reply(peer, reply);
  }

  // Moves what is parked here for a lane's ring into it and out of it, oldest first, as far as it goes. Run after
  // every change this service makes, when a process pokes, and on a timer while the lock was busy.
  void serve_lane(QueueState& q, std::uint64_t id) {
    using S = shm::Ring::Status;
    Lane& lane = *q.lane;
    shm::Ring& ring = *lane.ring;
    const auto parked = [&] { return !lane.pending.empty() || !q.putters.empty() || !q.getters.empty(); };
    bool busy = false;  // the lock was not had in time: stop (this thread must not wait long), retry on the timer
    if (lane.restart_pending) {
      lane.restart_pending = !ring.restart_sleepers(ring_lock_deadline());
      busy = lane.restart_pending;
    }
    // Before looking: whoever changes the ring after this look sees the flag and pokes.
    if (parked()) ring.set_flag(shm::ring_poke, true);
    for (bool progress = true; progress && !busy;) {
      progress = false;
      while (!lane.pending.empty()) {
        const std::string& item = lane.pending.front().item;
        const S status = ring.put(item.data(), item.size(), ring_lock_deadline(), false).status;
        if (status != S::done) {
          busy = status != S::full;  // busy, or no room in /dev/shm: try again later
          break;
        }
        lane.pending.pop_front();
        progress = true;
      }
      while (!busy && lane.pending.empty() && !q.putters.empty()) {
        const std::string& item = q.putters.front().payload;
        const S status = ring.put(item.data(), item.size(), ring_lock_deadline(), false).status;
        if (status == S::full || status == S::busy) {
          busy = busy || status == S::busy;
          break;
        }
        Waiter p = std::move(q.putters.front());
        q.putters.pop_front();
        if (status == S::done) {
          answer(coordinator_, p, wire::Kind::ok, encode(Object{}));
          progress = true;
        } else {
          answer_error(coordinator_, p, wire::ErrorCode::internal, "mpx: /dev/shm has no room for the queue");
        }
      }
      while (!busy && !q.getters.empty()) {
        const Borrower who = borrower_of(q.getters.front().peer, q.getters.front().actor());
        std::deque<std::string> items;
        const S status = ring.take(items, lane_batch(q, who, q.getters.front().max_items), ring_lock_deadline()).status;
        if (status != S::done) {
          busy = busy || status == S::busy;
          break;
        }
        Waiter g = std::move(q.getters.front());
        q.getters.pop_front();
        disarm(coordinator_, g);
        hand_over(q, g.peer, g.request, who, std::move(items));
        progress = true;
      }
    }
    for (auto it = lane.syncs.begin(); it != lane.syncs.end();) {
      if (has_pending(lane, borrower_of(it->peer, it->actor()))) {
        ++it;
        continue;
      }
      answer(coordinator_, *it, wire::Kind::ok, encode(lane_of(q)));
      it = lane.syncs.erase(it);
    }
    if (!parked()) ring.set_flag(shm::ring_poke, false);
    if (busy && !lane.retry_armed) {
      lane.retry_armed = true;
      coordinator_.timers().schedule(runtime::TimerWheel::Clock::now() + ring_retry, [this, id] {
        auto it = queues_.find(id);
        if (it == queues_.end() || !it->second->lane) return;
        it->second->lane->retry_armed = false;
        serve_lane(*it->second, id);
      });
    }
  }

  // The borrower says it has returned `consumed` more of its lent items from get(): they leave the queue for good.
  void settle(QueueState& q, const Borrower& who, std::uint64_t consumed) {
    if (consumed == 0) return;
    auto it = q.lent.find(who);
    if (it == q.lent.end() || it->second.size() < consumed) {
      throw ProtocolError("mpx: a consumer reported more items consumed than it was lent");
    }
    for (std::uint64_t i = 0; i < consumed; ++i) {
      if (q.joinable) q.taken[who.actor].push_back(std::move(it->second.front()));
      it->second.pop_front();
    }
    q.lent_total -= consumed;
    if (it->second.empty()) q.lent.erase(it);
  }

  // Moves up to `count` items from the head of the queue into a reply: one frame of [u32 length][bytes]... (see
  // PROTOCOL.md). The first is returned by the get() that asked, so it leaves the queue now; the rest are lent to
  // `who` until it reports them consumed.
  void lend(QueueState& q, const Borrower& who, std::uint64_t count, wire::Envelope& reply) {
    std::string packed;
    std::size_t bytes = 0;
    for (std::uint64_t i = 0; i < count && i < q.items.size(); ++i) bytes += wire::record_length_bytes + q.items[i].size();
    packed.reserve(bytes);
    for (std::uint64_t i = 0; i < count && !q.items.empty(); ++i) {
      std::string& item = q.items.front();
      wire::append_record(packed, item);
      if (i == 0) {
        if (q.joinable) q.taken[who.actor].push_back(std::move(item));
      } else {
        q.lent[who].push_back(std::move(item));
        ++q.lent_total;
      }
      q.items.pop_front();
    }
    reply.body.push_back(wire::frame_of(std::move(packed)));
  }

  // Unconsumed lent items go back to the head of the queue, in order.
  void give_back(QueueState& q, std::map<Borrower, std::deque<std::string>>::iterator it) {
    if (q.lane) {
      give_back_to_ring(q, it->second);
    } else {
      for (auto item = it->second.rbegin(); item != it->second.rend(); ++item) q.items.push_front(std::move(*item));
    }
    q.lent_total -= it->second.size();
    q.lent.erase(it);
  }

  // A new item: counted unfinished (JoinableQueue), stored, and handed to a blocked getter if one waits.
  void deliver(QueueState& q, std::string item) {
    ++q.puts;
    if (q.joinable) ++q.unfinished;
    q.items.push_back(std::move(item));
    serve_getters(q);
  }

  // Hands stored items to blocked getters, oldest getter first, one item each.
  void serve_getters(QueueState& q) {
    while (!q.getters.empty() && !q.items.empty()) {
      Waiter g = std::move(q.getters.front());
      q.getters.pop_front();
      disarm(coordinator_, g);
      auto reply = wire::make_reply(g.request, wire::Kind::ok, encode(Object{}));
      lend(q, borrower_of(g.peer, g.actor()), 1, reply);
      coordinator_.reply(g.peer, reply);
    }
  }

  void put(Coordinator::Peer& peer, wire::Envelope& req, bool posted) {
    QueueState& q = find(req);
    std::string item = item_of(req);
    std::int64_t wait = -1;
    if (!posted) std::tie(wait) = req.body_as<std::tuple<std::int64_t>>();
    if (posted && q.maxsize != 0) throw ProtocolError("mpx: a posted put needs an unbounded queue");
    if (q.lane) {
      lane_put(q, peer, req, std::move(item), posted, wait);
      return;
    }
    if (q.has_room() || !q.getters.empty()) {
      deliver(q, std::move(item));
      if (!posted) ok(peer, req.header, encode(Object{}));
      return;
    }
    park_or_refuse(coordinator_, q.putters, make_waiter(peer, req, std::move(item)), wait,
                   [this, id = req.header.object] { return waiting(id, &QueueState::putters); }, wire::ErrorCode::full,
                   "mpx: the queue is full", "mpx: the queue stayed full until the timeout");
  }

  // After room appeared: let blocked putters in, oldest first.
  void admit_putters(QueueState& q) {
    while (!q.putters.empty() && (q.has_room() || !q.getters.empty())) {
      Waiter p = std::move(q.putters.front());
      q.putters.pop_front();
      std::string item = std::move(p.payload);
      answer(coordinator_, p, wire::Kind::ok, encode(Object{}));
      deliver(q, std::move(item));
    }
  }

  void get(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [wait, max_items, consumed] = req.body_as<std::tuple<std::int64_t, std::uint64_t, std::uint64_t>>();
    const Borrower who = borrower_of(peer, req.header.sender);
    settle(q, who, consumed);
    if (q.lane) {
      q.consumers.insert(who);
      lane_get(q, peer, req, wait, max_items, who);
      return;
    }
    admit_putters(q);  // consumed items made room
    q.consumers.insert(who);
    if (!q.items.empty()) {
      const std::uint64_t fair_share = q.consumers.size() > 1 ? 1 : std::max<std::uint64_t>(1, q.items.size() / 4);
      const std::uint64_t count = std::min({std::max<std::uint64_t>(max_items, 1), max_batch, fair_share});
      auto reply = wire::make_reply(req.header, wire::Kind::ok, encode(Object{}));
      lend(q, who, count, reply);
      coordinator_.reply(peer, reply);
      admit_putters(q);
      return;
    }
    park_or_refuse(coordinator_, q.getters, make_waiter(peer, req), wait,
                   [this, id = req.header.object] { return waiting(id, &QueueState::getters); }, wire::ErrorCode::empty,
                   "mpx: the queue is empty", "mpx: the queue stayed empty until the timeout");
  }

  void size(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [consumed] = req.body_as<std::tuple<std::uint64_t>>();
    settle(q, borrower_of(peer, req.header.sender), consumed);
    admit_putters(q);
    ok(peer, req.header, encode(std::make_tuple(static_cast<std::uint64_t>(q.size()),
                                                static_cast<std::uint64_t>(q.maxsize))));
  }

  // A consumer thread is done with the queue: settle what it consumed and take back the rest. Posted; no reply.
  void release(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [consumed] = req.body_as<std::tuple<std::uint64_t>>();
    const Borrower who = borrower_of(peer, req.header.sender);
    settle(q, who, consumed);
    if (auto it = q.lent.find(who); it != q.lent.end()) give_back(q, it);
    q.consumers.erase(who);
    if (q.lane) {
      serve_lane(q, req.header.object);
    } else {
      serve_getters(q);
    }
  }

  // The item a get returned did not decode as the getter's type: it goes back to the head of the queue, where any
  // getter can have it (on a JoinableQueue it is no longer the getter's to task_done; it stays unfinished).
  void unget(wire::Envelope& req) {
    QueueState& q = find(req);
    std::string item = item_of(req);
    if (q.joinable) {
      if (auto it = q.taken.find(req.header.sender); it != q.taken.end()) {
        it->second.pop_back();
        if (it->second.empty()) q.taken.erase(it);
      }
    }
    if (q.lane) {
      give_back_to_ring(q, {std::move(item)});
      serve_lane(q, req.header.object);
    } else {
      q.items.push_front(std::move(item));
      serve_getters(q);
    }
  }

  void task_done(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [consumed] = req.body_as<std::tuple<std::uint64_t>>();
    if (!q.joinable) throw ProtocolError("mpx: task_done on a queue that is not joinable");
    settle(q, borrower_of(peer, req.header.sender), consumed);
    if (q.unfinished_tasks() == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, "mpx: task_done() called too many times");
      return;
    }
    q.finish_task();
    if (auto it = q.taken.find(req.header.sender); it != q.taken.end()) {
      it->second.pop_front();
      if (it->second.empty()) q.taken.erase(it);
    }
    ok(peer, req.header, encode(Object{}));
    if (q.unfinished_tasks() == 0) {
      for (auto& j : q.joiners) answer(coordinator_, j, wire::Kind::ok, encode(Object{}));
      q.joiners.clear();
    }
  }

  void join(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    if (!q.joinable) throw ProtocolError("mpx: join on a queue that is not joinable");
    if (q.unfinished_tasks() == 0) {
      ok(peer, req.header, encode(Object{}));
      return;
    }
    park_or_refuse(coordinator_, q.joiners, make_waiter(peer, req), wait,
                   [this, id = req.header.object] { return waiting(id, &QueueState::joiners); },
                   wire::ErrorCode::timeout, "mpx: unfinished tasks remain",
                   "mpx: unfinished tasks remain at the timeout");
  }

  void died(std::uint64_t actor) {
    for (auto& [id, q] : queues_) {
      forget_actor(coordinator_, q->getters, actor);
      forget_actor(coordinator_, q->putters, actor);
      forget_actor(coordinator_, q->joiners, actor);
      std::erase_if(q->consumers, [actor](const Borrower& b) { return b.actor == actor; });
      if (q->lane) {
        // If it died holding the ring's lock, the next holder is told and recounts the ring (shm::Ring::repair), and
        // if it mapped the ring it may have died asleep or just woken: either way its sleepers are restarted (by
        // serve_lane below, which also repairs the ring now). First, so that what it was lent can go back. Its posted
        // puts waiting here stay: they were put.
        Lane& lane = *q->lane;
        const bool held_lock = shm::recover(lane.ring->lock(), static_cast<pid_t>(actor));
        if (lane.mappers.erase(actor) > 0 || held_lock) lane.restart_pending = true;
        forget_actor(coordinator_, lane.syncs, actor);
      }
      // Lent but never returned by get(): as if never got, so back at the head (for every queue, as Python would
      // have left them in the pipe). Then a JoinableQueue's got-but-not-done items go back in front of them.
      for (auto it = q->lent.begin(); it != q->lent.end();) {
        if (it->first.actor == actor) {
          auto victim = it++;
          give_back(*q, victim);
        } else {
          ++it;
        }
      }
      if (auto it = q->taken.find(actor); it != q->taken.end()) {
        // They stay unfinished until someone else is done with them.
        if (q->lane) {
          give_back_to_ring(*q, it->second);
        } else {
          for (auto item = it->second.rbegin(); item != it->second.rend(); ++item) q->items.push_front(std::move(*item));
        }
        q->taken.erase(it);
      }
      if (q->lane) {
        serve_lane(*q, id);
      } else {
        serve_getters(*q);
      }
    }
  }

  std::unordered_map<std::uint64_t, std::unique_ptr<QueueState>> queues_;

 public:
  // While tracing is on, mpx's handles record their ring operations in their trace rings; a client that cannot record
  // leaves the lane and comes through here.
  void tracing_changed(bool on) {
    for (auto& [id, q] : queues_) {
      if (q->lane) q->lane->ring->set_flag(shm::ring_traced, on);
    }
  }
};

}  // namespace

std::unique_ptr<Service> install_queues(Host& host) { return installed<QueueService>(host); }

}  // namespace mpx::services
