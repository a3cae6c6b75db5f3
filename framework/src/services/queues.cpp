// The queue service: Queue, SimpleQueue and JoinableQueue state, FIFO per producer, blocked getters and putters with
// deadlines, and the JoinableQueue's unfinished-task accounting.
//
// Throughput comes from lending: a get may receive a batch of items, which the consumer's thread then returns from
// get() one at a time without another round trip. The coordinator keeps every lent item until the consumer reports
// it consumed (each request carries that count), so qsize() still counts them, and a consumer that dies or whose
// thread ends gives the unconsumed ones back at the head of the queue. Only a queue's sole consumer gets batches (at
// most a quarter of what is queued): with several consumers every get takes one item, exactly as in Python, so a
// batch given back can never reorder what another consumer sees.
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "services/services.hpp"
#include "services/waiters.hpp"
#include "trace/bus.hpp"

namespace mpx::services {

namespace {

constexpr std::uint64_t max_batch = 256;

// Who holds lent items: a process (for death) and the channel of one of its threads (for reports).
struct Borrower {
  std::uint64_t actor = 0;
  std::string routing;
  bool operator<(const Borrower& o) const { return std::tie(actor, routing) < std::tie(o.actor, o.routing); }
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

  // Lent items still count: for the user they have not been got yet.
  std::size_t size() const { return items.size() + lent_total; }
  bool has_room() const { return maxsize == 0 || size() < maxsize; }
};

Borrower borrower_of(const Coordinator::Peer& peer, std::uint64_t actor) {
  return Borrower{actor, std::string(static_cast<const char*>(peer.routing.data()), peer.routing.size())};
}

class QueueService {
 public:
  explicit QueueService(Coordinator& c) : coordinator_(c) {}

  void install() {
    using K = wire::Kind;
    coordinator_.handle(K::queue_create, [this](auto& peer, auto& req) { create(peer, req); });
    coordinator_.handle(K::queue_put, [this](auto& peer, auto& req) { put(peer, req, false); trace_depth(req); });
    coordinator_.handle(K::queue_put_posted, [this](auto& peer, auto& req) { put(peer, req, true); trace_depth(req); });
    coordinator_.handle(K::queue_get, [this](auto& peer, auto& req) { get(peer, req); trace_depth(req); });
    coordinator_.handle(K::queue_size, [this](auto& peer, auto& req) { size(peer, req); });
    coordinator_.handle(K::queue_release, [this](auto& peer, auto& req) { release(peer, req); trace_depth(req); });
    coordinator_.handle(K::queue_task_done, [this](auto& peer, auto& req) { task_done(peer, req); });
    coordinator_.handle(K::queue_join, [this](auto& peer, auto& req) { join(peer, req); });
    coordinator_.on_death([this](pid_t pid) { died(static_cast<std::uint64_t>(pid)); });
  }

 private:
  // The queue's depth after a change, sampled into the trace for `mpx-trace stats` (queue depth over time).
  void trace_depth([[maybe_unused]] const wire::Envelope& req) {
#if MPX_TRACING
    if (!trace::on()) return;
    if (auto it = queues_.find(req.header.object); it != queues_.end()) {
      trace::gauge(req.header.object, "depth", static_cast<std::int64_t>(it->second->size()));
    }
#endif
  }

  QueueState& find(const wire::Envelope& req) {
    auto it = queues_.find(req.header.object);
    if (it == queues_.end()) throw ProtocolError("mpx: no queue with id " + std::to_string(req.header.object));
    return *it->second;
  }

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

  void ok(Coordinator::Peer& peer, const wire::Header& h, std::string body) {
    auto r = wire::make_reply(h, wire::Kind::ok, std::move(body));
    coordinator_.reply(peer, r);
  }

  void create(Coordinator::Peer& peer, wire::Envelope& req) {
    auto [maxsize, joinable] = req.body_as<std::tuple<std::uint64_t, bool>>();
    auto q = std::make_unique<QueueState>();
    q->maxsize = maxsize;
    q->joinable = joinable;
    const std::uint64_t id = coordinator_.allocate_object_id();
    queues_.emplace(id, std::move(q));
    ok(peer, req.header, encode(std::make_tuple(id)));
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
    for (std::uint64_t i = 0; i < count && !q.items.empty(); ++i) {
      std::string& item = q.items.front();
      const auto size = static_cast<std::uint32_t>(item.size());
      packed.append(reinterpret_cast<const char*>(&size), sizeof size);
      packed.append(item);
      if (i == 0) {
        if (q.joinable) q.taken[who.actor].push_back(std::move(item));
      } else {
        q.lent[who].push_back(std::move(item));
        ++q.lent_total;
      }
      q.items.pop_front();
    }
    reply.body.emplace_back(packed.data(), packed.size());
  }

  // Unconsumed lent items go back to the head of the queue, in order.
  void give_back(QueueState& q, std::map<Borrower, std::deque<std::string>>::iterator it) {
    for (auto item = it->second.rbegin(); item != it->second.rend(); ++item) q.items.push_front(std::move(*item));
    q.lent_total -= it->second.size();
    q.lent.erase(it);
  }

  // A new item: counted unfinished (JoinableQueue), stored, and handed to a blocked getter if one waits.
  void deliver(QueueState& q, std::string item) {
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
    if (q.has_room() || !q.getters.empty()) {
      deliver(q, std::move(item));
      if (!posted) ok(peer, req.header, encode(Object{}));
      return;
    }
    if (wait == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::full, "mpx: the queue is full");
      return;
    }
    park(coordinator_, q.putters, make_waiter(peer, req, std::move(item)), wait,
         [this, id = req.header.object] { return waiting(id, &QueueState::putters); },
         [this](Waiter& w) {
           answer_error(coordinator_, w, wire::ErrorCode::full, "mpx: the queue stayed full until the timeout");
         });
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
    if (wait == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::empty, "mpx: the queue is empty");
      return;
    }
    park(coordinator_, q.getters, make_waiter(peer, req), wait,
         [this, id = req.header.object] { return waiting(id, &QueueState::getters); },
         [this](Waiter& w) {
           answer_error(coordinator_, w, wire::ErrorCode::empty, "mpx: the queue stayed empty until the timeout");
         });
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
    serve_getters(q);
  }

  void task_done(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [consumed] = req.body_as<std::tuple<std::uint64_t>>();
    if (!q.joinable) throw ProtocolError("mpx: task_done on a queue that is not joinable");
    settle(q, borrower_of(peer, req.header.sender), consumed);
    if (q.unfinished == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, "mpx: task_done() called too many times");
      return;
    }
    --q.unfinished;
    if (auto it = q.taken.find(req.header.sender); it != q.taken.end()) {
      it->second.pop_front();
      if (it->second.empty()) q.taken.erase(it);
    }
    ok(peer, req.header, encode(Object{}));
    if (q.unfinished == 0) {
      for (auto& j : q.joiners) answer(coordinator_, j, wire::Kind::ok, encode(Object{}));
      q.joiners.clear();
    }
  }

  void join(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    if (!q.joinable) throw ProtocolError("mpx: join on a queue that is not joinable");
    if (q.unfinished == 0) {
      ok(peer, req.header, encode(Object{}));
      return;
    }
    if (wait == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::timeout, "mpx: unfinished tasks remain");
      return;
    }
    park(coordinator_, q.joiners, make_waiter(peer, req), wait,
         [this, id = req.header.object] { return waiting(id, &QueueState::joiners); },
         [this](Waiter& w) {
           answer_error(coordinator_, w, wire::ErrorCode::timeout, "mpx: unfinished tasks remain at the timeout");
         });
  }

  void died(std::uint64_t actor) {
    for (auto& [id, q] : queues_) {
      forget_actor(coordinator_, q->getters, actor);
      forget_actor(coordinator_, q->putters, actor);
      forget_actor(coordinator_, q->joiners, actor);
      std::erase_if(q->consumers, [actor](const Borrower& b) { return b.actor == actor; });
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
        for (auto item = it->second.rbegin(); item != it->second.rend(); ++item) q->items.push_front(std::move(*item));
        q->taken.erase(it);
      }
      serve_getters(*q);
    }
  }

  Coordinator& coordinator_;
  std::unordered_map<std::uint64_t, std::unique_ptr<QueueState>> queues_;
};

}  // namespace

void install_queues(Coordinator& coordinator) {
  // Lives as long as the coordinator's handlers, which is the rest of the process.
  auto* service = new QueueService(coordinator);
  service->install();
}

}  // namespace mpx::services
