// The queue service: Queue, SimpleQueue and JoinableQueue state, FIFO per producer, blocked getters and putters with
// deadlines, and the JoinableQueue's unfinished-task accounting.
#include <deque>
#include <map>
#include <memory>
#include <unordered_map>

#include "services/services.hpp"
#include "services/waiters.hpp"

namespace mpx::services {

namespace {

struct QueueState {
  std::size_t maxsize = 0;  // 0: unbounded
  bool joinable = false;
  std::deque<std::string> items;
  std::deque<Waiter> getters;
  std::deque<Waiter> putters;  // each holds the item it wants to put
  std::deque<Waiter> joiners;
  std::size_t unfinished = 0;
  // JoinableQueue: items taken but not yet task_done, per process, oldest first. A dead taker's items go back.
  std::map<std::uint64_t, std::deque<std::string>> taken;

  bool has_room() const { return maxsize == 0 || items.size() < maxsize; }
};

class QueueService {
 public:
  explicit QueueService(Coordinator& c) : coordinator_(c) {}

  void install() {
    using K = wire::Kind;
    coordinator_.handle(K::queue_create, [this](auto& peer, auto& req) { create(peer, req); });
    coordinator_.handle(K::queue_put, [this](auto& peer, auto& req) { put(peer, req, false); });
    coordinator_.handle(K::queue_put_posted, [this](auto& peer, auto& req) { put(peer, req, true); });
    coordinator_.handle(K::queue_get, [this](auto& peer, auto& req) { get(peer, req); });
    coordinator_.handle(K::queue_size, [this](auto& peer, auto& req) { size(peer, req); });
    coordinator_.handle(K::queue_task_done, [this](auto& peer, auto& req) { task_done(peer, req); });
    coordinator_.handle(K::queue_join, [this](auto& peer, auto& req) { join(peer, req); });
    coordinator_.on_death([this](pid_t pid) { died(static_cast<std::uint64_t>(pid)); });
  }

 private:
  QueueState& find(const wire::Envelope& req) {
    auto it = queues_.find(req.header.object);
    if (it == queues_.end()) throw UnknownObject(req.header.object);
    return *it->second;
  }

  struct UnknownObject : ProtocolError {
    explicit UnknownObject(std::uint64_t id) : ProtocolError("mpx: no queue with id " + std::to_string(id)) {}
  };

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

  // A new item: counted unfinished (JoinableQueue), then stored and handed to a blocked getter if one waits.
  void deliver(QueueState& q, std::string item) {
    if (q.joinable) ++q.unfinished;
    q.items.push_back(std::move(item));
    serve_getters(q);
  }

  // Hands stored items to blocked getters, oldest getter first.
  void serve_getters(QueueState& q) {
    while (!q.getters.empty() && !q.items.empty()) {
      Waiter g = std::move(q.getters.front());
      q.getters.pop_front();
      std::string item = std::move(q.items.front());
      q.items.pop_front();
      if (q.joinable) q.taken[g.actor()].push_back(item);
      answer(coordinator_, g, wire::Kind::ok, encode(Object{}), std::move(item), true);
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
    q.putters.push_back(make_waiter(peer, req, std::move(item)));
    Waiter& w = q.putters.back();
    const auto serial = w.serial;
    const auto id = req.header.object;
    arm(coordinator_, w, wait, [this, id, serial] {
      auto it = queues_.find(id);
      if (it == queues_.end()) return;
      if (auto expired = take(it->second->putters, serial)) {
        expired->timer = 0;
        answer_error(coordinator_, *expired, wire::ErrorCode::full, "mpx: the queue stayed full until the timeout");
      }
    });
  }

  // After an item left the queue: let the first blocked putter in.
  void admit_putter(QueueState& q) {
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
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    if (!q.items.empty()) {
      std::string item = std::move(q.items.front());
      q.items.pop_front();
      if (q.joinable) q.taken[req.header.sender].push_back(item);
      auto r = wire::make_reply(req.header, wire::Kind::ok, encode(Object{}));
      r.body.emplace_back(item.data(), item.size());
      coordinator_.reply(peer, r);
      admit_putter(q);
      return;
    }
    if (wait == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::empty, "mpx: the queue is empty");
      return;
    }
    q.getters.push_back(make_waiter(peer, req));
    Waiter& w = q.getters.back();
    const auto serial = w.serial;
    const auto id = req.header.object;
    arm(coordinator_, w, wait, [this, id, serial] {
      auto it = queues_.find(id);
      if (it == queues_.end()) return;
      if (auto expired = take(it->second->getters, serial)) {
        expired->timer = 0;
        answer_error(coordinator_, *expired, wire::ErrorCode::empty, "mpx: the queue stayed empty until the timeout");
      }
    });
  }

  void size(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    ok(peer, req.header, encode(std::make_tuple(static_cast<std::uint64_t>(q.items.size()),
                                                static_cast<std::uint64_t>(q.maxsize))));
  }

  void task_done(Coordinator::Peer& peer, wire::Envelope& req) {
    QueueState& q = find(req);
    if (!q.joinable) throw ProtocolError("mpx: task_done on a queue that is not joinable");
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
    q.joiners.push_back(make_waiter(peer, req));
    Waiter& w = q.joiners.back();
    const auto serial = w.serial;
    const auto id = req.header.object;
    arm(coordinator_, w, wait, [this, id, serial] {
      auto it = queues_.find(id);
      if (it == queues_.end()) return;
      if (auto expired = take(it->second->joiners, serial)) {
        expired->timer = 0;
        answer_error(coordinator_, *expired, wire::ErrorCode::timeout, "mpx: unfinished tasks remain at the timeout");
      }
    });
  }

  void died(std::uint64_t actor) {
    for (auto& [id, q] : queues_) {
      forget_actor(coordinator_, q->getters, actor);
      forget_actor(coordinator_, q->putters, actor);
      forget_actor(coordinator_, q->joiners, actor);
      auto it = q->taken.find(actor);
      if (it == q->taken.end()) continue;
      // Back at the head, in the order they were taken; they stay unfinished until someone else is done with them.
      for (auto item = it->second.rbegin(); item != it->second.rend(); ++item) q->items.push_front(std::move(*item));
      q->taken.erase(it);
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
