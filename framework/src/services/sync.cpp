// The sync service: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier as state machines in the
// coordinator. Owners are processes (the sender's pid). When a process dies, what it held is released and the next
// acquirer is told; what it was waiting for is forgotten; a Barrier it was waiting at breaks.
//
// Every handler finds its object and decodes its whole body before it changes anything, so a malformed request is
// answered with an error and leaves no trace.
#include <algorithm>
#include <cerrno>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>

#include <signal.h>

#include <mpx/function.hpp>

#include "services/services.hpp"
#include "services/waiters.hpp"

namespace mpx::services {

namespace {

// A Lock waiter. A Condition's wait re-acquires its lock through the same queue, carrying the recursion count it
// gave up and whether it was notified, both restored and reported when it gets the lock back.
struct LockWaiter : Waiter {
  bool reacquire = false;
  std::uint64_t count = 1;
  bool notified = false;
};

struct LockState {
  bool recursive = false;
  std::uint64_t owner = 0;  // pid; meaningful while count > 0
  std::uint64_t count = 0;  // recursion depth (0 or 1 for a Lock)
  bool owner_died = false;  // the last holder died holding it; told to the next acquirer
  std::deque<LockWaiter> waiters;
  std::uint64_t acquisitions = 0;  // for metrics
  std::uint64_t waits = 0;
};

struct SemaphoreState {
  std::uint64_t value = 0;
  std::uint64_t initial = 0;
  bool bounded = false;
  std::map<std::uint64_t, std::uint64_t> held;  // pid -> acquires minus releases, floored at 0
  bool owner_died = false;
  std::deque<Waiter> waiters;
  std::uint64_t acquisitions = 0;  // for metrics
  std::uint64_t waits = 0;
};

struct EventState {
  bool flag = false;
  std::deque<Waiter> waiters;
  std::uint64_t sets = 0;  // for metrics
  std::uint64_t waits = 0;
};

// A Condition waiter holds the recursion count it released, to get it back with the lock.
struct CondWaiter : Waiter {
  std::uint64_t count = 1;
};

struct ConditionState {
  std::uint64_t lock = 0;  // id of its Lock or RLock
  std::deque<CondWaiter> waiters;
  std::uint64_t waits = 0;  // for metrics
  std::uint64_t notified = 0;
};

// A Barrier party that arrived while the previous generation's action was running; it joins the next generation
// once the action is done (Python: it waits while the barrier drains, without a deadline).
struct QueuedParty : Waiter {
  std::int64_t wait_ms = -1;
};

struct BarrierState {
  std::uint64_t parties = 1;
  std::optional<FunctionId> action;
  Object action_args;  // bin: the msgpack array of the action's parameters, as a Process target's
  std::int64_t timeout_ms = -1;  // the default for wait()
  bool broken = false;
  std::deque<Waiter> arrivals;  // this generation, in arrival order: position = index
  std::uint64_t generation = 0;
  std::uint64_t runner = 0;  // pid running the action, 0 when none is running
  std::deque<QueuedParty> queued;
  std::uint64_t passes = 0;  // for metrics
  std::uint64_t breaks = 0;
};

// Like waiters.hpp's take(), but keeps the waiter's derived type.
// One of an object's waiting lists, or nullptr once the object is gone (for an expiring deadline).
template <class Map, class State, class List>
List* waiting_list(Map& map, std::uint64_t id, List State::*list) {
  auto it = map.find(id);
  return it == map.end() ? nullptr : &((*it->second).*list);
}

class SyncService final : public Service {
 public:
  explicit SyncService(Host& host) : Service(host) {}

  void install() {
    using K = wire::Kind;
    on(K::lock_create, &SyncService::lock_create);
    on(K::lock_acquire, &SyncService::lock_acquire);
    on(K::lock_release, &SyncService::lock_release);
    on(K::lock_release_posted, &SyncService::lock_release_posted);
    on(K::lock_state, &SyncService::lock_state);
    on(K::sem_create, &SyncService::sem_create);
    on(K::sem_acquire, &SyncService::sem_acquire);
    on(K::sem_release, &SyncService::sem_release);
    on(K::sem_release_posted, &SyncService::sem_release_posted);
    on(K::sem_get_value, &SyncService::sem_get_value);
    on(K::event_create, &SyncService::event_create);
    on(K::event_set, &SyncService::event_set);
    on(K::event_clear, &SyncService::event_clear);
    on(K::event_is_set, &SyncService::event_is_set);
    on(K::event_wait, &SyncService::event_wait);
    on(K::cond_create, &SyncService::cond_create);
    on(K::cond_lock, &SyncService::cond_lock);
    on(K::cond_wait, &SyncService::cond_wait);
    on(K::cond_notify, &SyncService::cond_notify);
    on(K::barrier_create, &SyncService::barrier_create);
    on(K::barrier_wait, &SyncService::barrier_wait);
    on(K::barrier_action_done, &SyncService::barrier_action_done);
    on(K::barrier_abort, &SyncService::barrier_abort);
    on(K::barrier_reset, &SyncService::barrier_reset);
    on(K::barrier_state, &SyncService::barrier_state);
    on(K::sync_waiting, &SyncService::sync_waiting);
    coordinator_.on_death([this](std::uint64_t actor) { died(actor); });
    coordinator_.on_metrics([this](Metrics& snapshot) { collect(snapshot); });
  }

 private:
  // A request that would make its sender an owner or a waiter may arrive after the sender's death was handled (its
  // bytes were still in flight). Watching it again tells: a process that is gone is refused (it cannot be answered
  // anyway), and one that is still a zombie is reaped on the next turn of the loop, which runs the death hooks again.
  // If it cannot be watched for another reason (out of descriptors), it gets the benefit of the doubt.
  bool alive(std::uint64_t sender) {
    if (coordinator_.watch(sender)) return true;
    if (wire::node_of(sender) != wire::coordinator_node) return false;  // its node is lost, or told of its end
    return ::kill(static_cast<pid_t>(sender), 0) == 0 || errno == EPERM;
  }

  std::uint64_t add_object(auto& map, auto state) {
    const std::uint64_t id = coordinator_.allocate_object_id();
    map.emplace(id, std::move(state));
    return id;
  }

  // ---- Lock and RLock ------------------------------------------------------------------------------------------

  void lock_create(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [recursive] = req.body_as<std::tuple<bool>>();
    auto lock = std::make_unique<LockState>();
    lock->recursive = recursive;
    ok(peer, req.header, encode(std::make_tuple(add_object(locks_, std::move(lock)))));
  }

  // Reads and clears the "previous owner died" news: only the first acquirer after a death is told.
  static bool take_died(bool& flag) { return std::exchange(flag, false); }

  void lock_acquire(Peer& peer, wire::Envelope& req) {
    LockState& lock = find(locks_, req, "lock");
    expect_frames(req, 1);
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    const auto me = req.header.sender;
    if (!alive(me)) return;
    if (lock.count == 0) {
      lock.owner = me;
      lock.count = 1;
      ++lock.acquisitions;
      ok(peer, req.header, encode(std::make_tuple(true, take_died(lock.owner_died))));
      return;
    }
    if (lock.recursive && lock.owner == me) {
      ++lock.count;
      ++lock.acquisitions;
      ok(peer, req.header, encode(std::make_tuple(true, false)));
      return;
    }
    if (wait == 0) {
      ok(peer, req.header, encode(std::make_tuple(false, false)));
      return;
    }
    LockWaiter w;
    static_cast<Waiter&>(w) = make_waiter(peer, req);
    ++lock.waits;
    park(coordinator_, lock.waiters, std::move(w), wait,
         [this, id = req.header.object] { return waiting_list(locks_, id, &LockState::waiters); },
         [this](LockWaiter& expired) {
           answer(coordinator_, expired, wire::Kind::ok, encode(std::make_tuple(false, false)));
         });
  }

  // The lock is free: the first waiter gets it (a Condition waiter with the count it had).
  void hand_over(LockState& lock) {
    lock.owner = 0;
    lock.count = 0;
    while (!lock.waiters.empty()) {
      LockWaiter w = std::move(lock.waiters.front());
      lock.waiters.pop_front();
      if (exited(w)) continue;
      grant(lock, w);
      return;
    }
  }

  // A waiter whose process has exited, though its death is not handled yet: dropped, so that what is being handed
  // out goes to a live process instead of coming back at once as owner-died.
  bool exited(Waiter& w) {
    if (!coordinator_.has_exited(w.actor())) return false;
    disarm(coordinator_, w);
    return true;
  }

  void grant(LockState& lock, LockWaiter& w) {
    lock.owner = w.actor();
    lock.count = w.reacquire ? w.count : 1;
    ++lock.acquisitions;
    const bool died = take_died(lock.owner_died);
    const bool first = w.reacquire ? w.notified : true;
    answer(coordinator_, w, wire::Kind::ok, encode(std::make_tuple(first, died)));
  }

  // A Condition waiter taking its lock back: now if the lock is free, else behind the lock's waiters.
  void reacquire(LockState& lock, LockWaiter w) {
    if (lock.count == 0) {
      grant(lock, w);
    } else {
      lock.waiters.push_back(std::move(w));
    }
  }

  // The sender must hold the lock; otherwise the answer is the error Python raises for the misuse.
  static std::optional<std::string> not_held_by(const LockState& lock, std::uint64_t sender, std::string_view what) {
    if (lock.count == 0) return "mpx: cannot " + std::string(what) + " un-acquired lock";
    if (lock.owner != sender) {
      return "mpx: cannot " + std::string(what) + " a lock held by process " + std::to_string(lock.owner) +
             " (this is process " + std::to_string(sender) + ")";
    }
    return std::nullopt;
  }

  void release_lock(LockState& lock) {
    if (--lock.count == 0) hand_over(lock);
  }

  void lock_release(Peer& peer, wire::Envelope& req) {
    LockState& lock = find(locks_, req, "lock");
    expect_nil(req);
    if (auto misuse = not_held_by(lock, req.header.sender, "release")) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::not_owner, *misuse);
      return;
    }
    release_lock(lock);
    ok(peer, req.header);
  }

  // Posted by a process that knows it holds the lock, so it cannot fail; if it does anyway (a client bug or a hostile
  // sender), it is counted as malformed and changes nothing.
  void lock_release_posted(Peer&, wire::Envelope& req) {
    LockState& lock = find(locks_, req, "lock");
    expect_nil(req);
    if (auto misuse = not_held_by(lock, req.header.sender, "release")) throw ProtocolError(*misuse);
    release_lock(lock);
  }

  void lock_state(Peer& peer, wire::Envelope& req) {
    LockState& lock = find(locks_, req, "lock");
    expect_nil(req);
    const std::uint64_t owner = lock.count ? lock.owner : 0;
    ok(peer, req.header, encode(std::make_tuple(owner, lock.count)));
  }

  // ---- Semaphore and BoundedSemaphore --------------------------------------------------------------------------

  void sem_create(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [value, bounded] = req.body_as<std::tuple<std::uint64_t, bool>>();
    auto sem = std::make_unique<SemaphoreState>();
    sem->value = sem->initial = value;
    sem->bounded = bounded;
    ok(peer, req.header, encode(std::make_tuple(add_object(semaphores_, std::move(sem)))));
  }

  void sem_acquire(Peer& peer, wire::Envelope& req) {
    SemaphoreState& sem = find(semaphores_, req, "semaphore");
    expect_frames(req, 1);
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    const auto me = req.header.sender;
    if (!alive(me)) return;
    if (sem.value > 0) {
      --sem.value;
      ++sem.held[me];
      ++sem.acquisitions;
      ok(peer, req.header, encode(std::make_tuple(true, take_died(sem.owner_died))));
      return;
    }
    if (wait == 0) {
      ok(peer, req.header, encode(std::make_tuple(false, false)));
      return;
    }
    ++sem.waits;
    park(coordinator_, sem.waiters, make_waiter(peer, req), wait,
         [this, id = req.header.object] { return waiting_list(semaphores_, id, &SemaphoreState::waiters); },
         [this](Waiter& expired) {
           answer(coordinator_, expired, wire::Kind::ok, encode(std::make_tuple(false, false)));
         });
  }

  // Units became available: waiters take them, oldest first.
  void serve(SemaphoreState& sem) {
    while (sem.value > 0 && !sem.waiters.empty()) {
      Waiter w = std::move(sem.waiters.front());
      sem.waiters.pop_front();
      if (exited(w)) continue;
      --sem.value;
      ++sem.held[w.actor()];
      ++sem.acquisitions;
      answer(coordinator_, w, wire::Kind::ok, encode(std::make_tuple(true, take_died(sem.owner_died))));
    }
  }

  // Returns the misuse message, or nullopt after releasing.
  std::optional<std::string> release_unit(SemaphoreState& sem, std::uint64_t sender) {
    if (sem.bounded && sem.value >= sem.initial) return std::string("mpx: Semaphore released too many times");
    if (auto it = sem.held.find(sender); it != sem.held.end() && --it->second == 0) sem.held.erase(it);
    ++sem.value;
    serve(sem);
    return std::nullopt;
  }

  void sem_release(Peer& peer, wire::Envelope& req) {
    SemaphoreState& sem = find(semaphores_, req, "semaphore");
    expect_nil(req);
    if (auto misuse = release_unit(sem, req.header.sender)) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, *misuse);
      return;
    }
    ok(peer, req.header);
  }

  void sem_release_posted(Peer&, wire::Envelope& req) {
    SemaphoreState& sem = find(semaphores_, req, "semaphore");
    expect_nil(req);
    if (sem.bounded) throw ProtocolError("mpx: a posted release needs an unbounded semaphore");
    (void)release_unit(sem, req.header.sender);
  }

  void sem_get_value(Peer& peer, wire::Envelope& req) {
    SemaphoreState& sem = find(semaphores_, req, "semaphore");
    expect_nil(req);
    ok(peer, req.header, encode(std::make_tuple(sem.value)));
  }

  // ---- Event ---------------------------------------------------------------------------------------------------

  void event_create(Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    ok(peer, req.header, encode(std::make_tuple(add_object(events_, std::make_unique<EventState>()))));
  }

  void event_set(Peer& peer, wire::Envelope& req) {
    EventState& event = find(events_, req, "event");
    expect_nil(req);
    event.flag = true;
    ++event.sets;
    for (auto& w : event.waiters) answer(coordinator_, w, wire::Kind::ok, encode(std::make_tuple(true)));
    event.waiters.clear();
    ok(peer, req.header);
  }

  void event_clear(Peer& peer, wire::Envelope& req) {
    EventState& event = find(events_, req, "event");
    expect_nil(req);
    event.flag = false;
    ok(peer, req.header);
  }

  void event_is_set(Peer& peer, wire::Envelope& req) {
    EventState& event = find(events_, req, "event");
    expect_nil(req);
    ok(peer, req.header, encode(std::make_tuple(event.flag)));
  }

  void event_wait(Peer& peer, wire::Envelope& req) {
    EventState& event = find(events_, req, "event");
    expect_frames(req, 1);
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    if (event.flag || wait == 0) {
      ok(peer, req.header, encode(std::make_tuple(event.flag)));
      return;
    }
    if (!alive(req.header.sender)) return;
    ++event.waits;
    park(coordinator_, event.waiters, make_waiter(peer, req), wait,
         [this, id = req.header.object] { return waiting_list(events_, id, &EventState::waiters); },
         [this](Waiter& expired) { answer(coordinator_, expired, wire::Kind::ok, encode(std::make_tuple(false))); });
  }

  // ---- Condition -----------------------------------------------------------------------------------------------

  void cond_create(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [lock_id] = req.body_as<std::tuple<std::uint64_t>>();
    if (!locks_.count(lock_id)) throw UnknownObject("lock", lock_id);
    auto cond = std::make_unique<ConditionState>();
    cond->lock = lock_id;
    ok(peer, req.header, encode(std::make_tuple(add_object(conditions_, std::move(cond)))));
  }

  void cond_lock(Peer& peer, wire::Envelope& req) {
    ConditionState& cond = find(conditions_, req, "condition");
    expect_nil(req);
    ok(peer, req.header, encode(std::make_tuple(cond.lock, locks_.at(cond.lock)->recursive)));
  }

  // A Condition's lock, if the requester holds it; otherwise the requester is told (Python: RuntimeError) and nullptr.
  LockState* lock_held_for(const ConditionState& cond, Peer& peer, const wire::Envelope& req, std::string_view verb) {
    LockState& lock = *locks_.at(cond.lock);
    if (auto misuse = not_held_by(lock, req.header.sender, verb)) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::not_owner, *misuse);
      return nullptr;
    }
    return &lock;
  }

  // One request for Python's whole wait(): release the lock (all recursion levels), wait for a notify or the
  // deadline, take the lock back, then reply. Doing it here makes "release and start waiting" atomic, so a notify
  // sent right after the release cannot be missed.
  void cond_wait(Peer& peer, wire::Envelope& req) {
    ConditionState& cond = find(conditions_, req, "condition");
    expect_frames(req, 1);
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    LockState* held = lock_held_for(cond, peer, req, "wait on");
    if (!held) return;
    LockState& lock = *held;
    if (!alive(req.header.sender)) return;
    CondWaiter w;
    static_cast<Waiter&>(w) = make_waiter(peer, req);
    w.count = lock.count;
    ++cond.waits;
    hand_over(lock);
    // Python's wait(0) still releases and re-acquires; the timer fires on the next turn of the loop.
    const auto id = req.header.object;
    park(coordinator_, cond.waiters, std::move(w), wait,
         [this, id] { return waiting_list(conditions_, id, &ConditionState::waiters); },
         [this, id](CondWaiter& expired) {
           to_lock(*locks_.at(conditions_.at(id)->lock), std::move(expired), false);
         });
  }

  // A Condition waiter, woken by a notify or by its deadline, goes on to re-acquire the lock.
  void to_lock(LockState& lock, CondWaiter w, bool notified) {
    disarm(coordinator_, w);
    LockWaiter back;
    static_cast<Waiter&>(back) = std::move(static_cast<Waiter&>(w));
    back.reacquire = true;
    back.count = w.count;
    back.notified = notified;
    reacquire(lock, std::move(back));
  }

  void cond_notify(Peer& peer, wire::Envelope& req) {
    ConditionState& cond = find(conditions_, req, "condition");
    expect_frames(req, 1);
    auto [n] = req.body_as<std::tuple<std::int64_t>>();
    LockState* lock = lock_held_for(cond, peer, req, "notify on");
    if (!lock) return;
    for (std::int64_t woken = 0; (n < 0 || woken < n) && !cond.waiters.empty(); ++woken) {
      CondWaiter w = std::move(cond.waiters.front());
      cond.waiters.pop_front();
      ++cond.notified;
      to_lock(*lock, std::move(w), true);
    }
    ok(peer, req.header);
  }

  // ---- Barrier -------------------------------------------------------------------------------------------------

  void barrier_create(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    // The action's arguments may be left out (an action without parameters).
    auto [parties, action, timeout, action_args] =
        req.body_as<std::tuple<std::uint64_t, std::optional<FunctionId>, std::int64_t, Object>>();
    if (parties == 0) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, "mpx: a Barrier needs parties > 0");
      return;
    }
    if (action_args.is_none()) action_args = Object::Bytes{encode(std::tuple<>())};
    if (action_args.type() != Object::Type::bytes) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::malformed,
                               "mpx: barrier_create: the action's arguments must be bin");
      return;
    }
    auto barrier = std::make_unique<BarrierState>();
    barrier->parties = parties;
    barrier->action = std::move(action);
    barrier->action_args = std::move(action_args);
    barrier->timeout_ms = timeout;
    ok(peer, req.header, encode(std::make_tuple(add_object(barriers_, std::move(barrier)))));
  }

  void barrier_wait(Peer& peer, wire::Envelope& req) {
    BarrierState& barrier = find(barriers_, req, "barrier");
    expect_frames(req, 1);
    auto [wait, use_default] = req.body_as<std::tuple<std::int64_t, bool>>();
    if (barrier.broken) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::broken, "mpx: the barrier is broken");
      return;
    }
    if (!alive(req.header.sender)) return;
    if (use_default) wait = barrier.timeout_ms;
    if (barrier.runner != 0) {
      QueuedParty q;
      static_cast<Waiter&>(q) = make_waiter(peer, req);
      q.wait_ms = wait;
      barrier.queued.push_back(std::move(q));
      return;
    }
    arrive(req.header.object, barrier, make_waiter(peer, req), wait);
  }

  void arrive(std::uint64_t id, BarrierState& barrier, Waiter w, std::int64_t wait) {
    const std::uint64_t index = barrier.arrivals.size();
    if (index + 1 == barrier.parties) {
      if (barrier.action) {
        // The last to arrive runs the action; the others stay until it reports (barrier_action_done).
        barrier.runner = w.actor();
        answer(coordinator_, w, wire::Kind::ok,
               encode(std::make_tuple(index, barrier.action, barrier.generation, barrier.action_args)));
      } else {
        answer(coordinator_, w, wire::Kind::ok,
               encode(std::make_tuple(index, std::optional<FunctionId>(), barrier.generation, Object())));
        release_barrier(id, barrier);
      }
      return;
    }
    if (wait == 0) {
      // Python: a wait that times out breaks the barrier, for everyone.
      answer_error(coordinator_, w, wire::ErrorCode::broken, "mpx: the barrier wait timed out");
      break_barrier(barrier, "mpx: another party's barrier wait timed out");
      return;
    }
    park(coordinator_, barrier.arrivals, std::move(w), wait,
         [this, id] { return waiting_list(barriers_, id, &BarrierState::arrivals); },
         [this, id](Waiter& expired) {
           answer_error(coordinator_, expired, wire::ErrorCode::broken, "mpx: the barrier wait timed out");
           break_barrier(*barriers_.at(id), "mpx: another party's barrier wait timed out");
         });
  }

  // Everyone arrived (and the action, if any, succeeded): release them with their indexes, start a new generation,
  // and let in the parties that arrived meanwhile.
  void release_barrier(std::uint64_t id, BarrierState& barrier) {
    std::uint64_t index = 0;
    for (auto& w : barrier.arrivals) {
      answer(coordinator_, w, wire::Kind::ok,
             encode(std::make_tuple(index++, std::optional<FunctionId>(), barrier.generation, Object())));
    }
    barrier.arrivals.clear();
    ++barrier.passes;
    next_generation(id, barrier);
  }

  void next_generation(std::uint64_t id, BarrierState& barrier) {
    ++barrier.generation;
    barrier.runner = 0;
    while (!barrier.queued.empty() && barrier.runner == 0 && !barrier.broken) {
      QueuedParty q = std::move(barrier.queued.front());
      barrier.queued.pop_front();
      const auto wait = q.wait_ms;
      arrive(id, barrier, std::move(static_cast<Waiter&>(q)), wait);
    }
  }

  // Every waiting party (and every one queued behind a running action) gets BrokenBarrierError.
  void break_barrier(BarrierState& barrier, std::string_view why) {
    if (!barrier.broken) ++barrier.breaks;
    barrier.broken = true;
    ++barrier.generation;  // a late barrier_action_done for the broken generation is ignored
    barrier.runner = 0;
    for (auto& w : barrier.arrivals) answer_error(coordinator_, w, wire::ErrorCode::broken, why);
    barrier.arrivals.clear();
    for (auto& q : barrier.queued) answer_error(coordinator_, q, wire::ErrorCode::broken, why);
    barrier.queued.clear();
  }

  void barrier_action_done(Peer& peer, wire::Envelope& req) {
    BarrierState& barrier = find(barriers_, req, "barrier");
    expect_frames(req, 1);
    auto [generation, succeeded] = req.body_as<std::tuple<std::uint64_t, bool>>();
    ok(peer, req.header);
    // Stale (the barrier was reset or broken while the action ran) or not from the runner: nothing to do.
    if (barrier.runner == 0 || barrier.runner != req.header.sender || generation != barrier.generation) return;
    if (succeeded) {
      release_barrier(req.header.object, barrier);
    } else {
      break_barrier(barrier, "mpx: the barrier's action failed");
    }
  }

  void barrier_abort(Peer& peer, wire::Envelope& req) {
    BarrierState& barrier = find(barriers_, req, "barrier");
    expect_nil(req);
    break_barrier(barrier, "mpx: the barrier was aborted");
    ok(peer, req.header);
  }

  void barrier_reset(Peer& peer, wire::Envelope& req) {
    BarrierState& barrier = find(barriers_, req, "barrier");
    expect_nil(req);
    // Python: parties waiting now get BrokenBarrierError; the barrier is empty and unbroken again. Parties queued
    // behind a running action had not arrived yet: they join the fresh generation.
    for (auto& w : barrier.arrivals) answer_error(coordinator_, w, wire::ErrorCode::broken, "mpx: the barrier was reset");
    barrier.arrivals.clear();
    barrier.broken = false;
    ok(peer, req.header);
    next_generation(req.header.object, barrier);
  }

  void barrier_state(Peer& peer, wire::Envelope& req) {
    BarrierState& barrier = find(barriers_, req, "barrier");
    expect_nil(req);
    ok(peer, req.header,
       encode(std::make_tuple(barrier.parties, static_cast<std::uint64_t>(barrier.arrivals.size()), barrier.broken)));
  }

  void sync_waiting(Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    const auto id = req.header.object;
    std::size_t waiting = 0;
    if (auto* lock = waiting_list(locks_, id, &LockState::waiters)) {
      waiting = lock->size();
    } else if (auto* sem = waiting_list(semaphores_, id, &SemaphoreState::waiters)) {
      waiting = sem->size();
    } else if (auto* event = waiting_list(events_, id, &EventState::waiters)) {
      waiting = event->size();
    } else if (auto* cond = waiting_list(conditions_, id, &ConditionState::waiters)) {
      waiting = cond->size();
    } else {
      throw UnknownObject("lock, semaphore, event or condition", id);
    }
    ok(peer, req.header, encode(std::make_tuple(static_cast<std::uint64_t>(waiting))));
  }

  // ---- Metrics -------------------------------------------------------------------------------------------------

  void collect(Metrics& snapshot) const {
    const auto size = [](const auto& list) { return static_cast<std::uint64_t>(list.size()); };
    for (const auto& [id, lock] : locks_) {
      snapshot.locks.push_back(
          LockMetrics{id, metrics_name("lock", id), lock->acquisitions, lock->waits, size(lock->waiters)});
    }
    for (const auto& [id, sem] : semaphores_) {
      snapshot.semaphores.push_back(SemaphoreMetrics{id, metrics_name("semaphore", id), sem->value, sem->acquisitions,
                                                     sem->waits, size(sem->waiters)});
    }
    for (const auto& [id, event] : events_) {
      snapshot.events.push_back(
          EventMetrics{id, metrics_name("event", id), event->flag, event->sets, event->waits, size(event->waiters)});
    }
    for (const auto& [id, cond] : conditions_) {
      snapshot.conditions.push_back(ConditionMetrics{id, metrics_name("condition", id), cond->lock, cond->waits,
                                                     cond->notified, size(cond->waiters)});
    }
    for (const auto& [id, barrier] : barriers_) {
      snapshot.barriers.push_back(BarrierMetrics{id, metrics_name("barrier", id), barrier->parties,
                                                 size(barrier->arrivals), barrier->passes, barrier->breaks,
                                                 barrier->broken});
    }
  }

  // ---- Deaths --------------------------------------------------------------------------------------------------

  void died(std::uint64_t pid) {
    // Waiters first, so nothing released below is handed to the dead process.
    for (auto& [id, lock] : locks_) forget_actor(coordinator_, lock->waiters, pid);
    for (auto& [id, cond] : conditions_) forget_actor(coordinator_, cond->waiters, pid);
    for (auto& [id, lock] : locks_) {
      if (lock->count > 0 && lock->owner == pid) {
        lock->owner_died = true;
        hand_over(*lock);
      }
    }
    for (auto& [id, sem] : semaphores_) {
      forget_actor(coordinator_, sem->waiters, pid);
      auto it = sem->held.find(pid);
      if (it == sem->held.end()) continue;
      // Never past the initial value: units a process "held" beyond it were signals, not resources.
      const std::uint64_t room = sem->initial > sem->value ? sem->initial - sem->value : 0;
      const std::uint64_t back = std::min(it->second, room);
      sem->held.erase(it);
      if (back == 0) continue;
      sem->value += back;
      sem->owner_died = true;
      serve(*sem);
    }
    for (auto& [id, event] : events_) forget_actor(coordinator_, event->waiters, pid);
    for (auto& [id, barrier] : barriers_) {
      forget_actor(coordinator_, barrier->queued, pid);
      bool was_waiting = false;
      for (auto& w : barrier->arrivals) was_waiting = was_waiting || w.actor() == pid;
      if (was_waiting) {
        forget_actor(coordinator_, barrier->arrivals, pid);
        break_barrier(*barrier, "mpx: a party died while waiting at the barrier");
      } else if (barrier->runner == pid) {
        break_barrier(*barrier, "mpx: the party running the barrier's action died");
      }
    }
  }

  std::unordered_map<std::uint64_t, std::unique_ptr<LockState>> locks_;
  std::unordered_map<std::uint64_t, std::unique_ptr<SemaphoreState>> semaphores_;
  std::unordered_map<std::uint64_t, std::unique_ptr<EventState>> events_;
  std::unordered_map<std::uint64_t, std::unique_ptr<ConditionState>> conditions_;
  std::unordered_map<std::uint64_t, std::unique_ptr<BarrierState>> barriers_;
};

}  // namespace

std::unique_ptr<Service> install_sync(Host& host) { return installed<SyncService>(host); }

}  // namespace mpx::services
