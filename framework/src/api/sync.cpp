// The client side of the sync primitives: each call is one request to the sync service (services/sync.cpp), except
// a Lock's release (and an unbounded Semaphore's), which is posted when it cannot fail and no other thread of the
// process could overtake it.
#include <mpx/sync.hpp>

#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <unistd.h>

#include "api/call.hpp"

namespace mpx {

namespace {

// How many times this process holds each lock (by id), as the coordinator's replies said. A release is posted, with
// no round trip, only when this says the process holds the lock, because then it cannot fail. It is per process (not
// per handle) because ownership is: any copy of a handle, on any thread, may release what the process holds.
class HeldLocks {
 public:
  void add(std::uint64_t id, std::uint64_t n) {
    if (n == 0) return;
    std::lock_guard guard(mutex_);
    counts()[id] += n;
  }
  // Takes one level if this process holds the lock.
  bool take_one(std::uint64_t id) {
    std::lock_guard guard(mutex_);
    auto& table = counts();
    auto it = table.find(id);
    if (it == table.end()) return false;
    if (--it->second == 0) table.erase(it);
    return true;
  }
  // Takes every level (what a Condition's wait lends to the coordinator) and returns how many there were.
  std::uint64_t count(std::uint64_t id) {
    std::lock_guard guard(mutex_);
    auto& table = counts();
    auto it = table.find(id);
    return it == table.end() ? 0 : it->second;
  }
  std::uint64_t take_all(std::uint64_t id) {
    std::lock_guard guard(mutex_);
    auto& table = counts();
    auto it = table.find(id);
    if (it == table.end()) return 0;
    const auto n = it->second;
    table.erase(it);
    return n;
  }

 private:
  // A forked child inherits the parent's table, but not what it holds.
  std::unordered_map<std::uint64_t, std::uint64_t>& counts() {
    if (pid_ != ::getpid()) {
      counts_.clear();
      pid_ = ::getpid();
    }
    return counts_;
  }
  std::mutex mutex_;
  pid_t pid_ = 0;
  std::unordered_map<std::uint64_t, std::uint64_t> counts_;
};

HeldLocks& held() {
  static auto* table = new HeldLocks;  // never destroyed: a release may run during exit
  return *table;
}

// How many levels of each lock the calling thread took (a Condition over an RLock tells its threads apart with it).
// A release from another thread than the acquirer's is allowed; it just finds nothing here to take.
class ThreadLevels {
 public:
  std::uint64_t& of(std::uint64_t id) {
    if (pid_ != ::getpid()) {  // a forked child's thread holds nothing yet
      levels_.clear();
      pid_ = ::getpid();
    }
    return levels_[id];
  }
  void take_one(std::uint64_t id) {
    auto& n = of(id);
    if (n > 0) --n;
  }

 private:
  pid_t pid_ = 0;
  std::unordered_map<std::uint64_t, std::uint64_t> levels_;
};

ThreadLevels& thread_levels() {
  thread_local ThreadLevels levels;
  return levels;
}

template <Serializable Body>
std::uint64_t create(wire::Kind kind, const Body& body) {
  auto reply = detail::call(wire::make(kind, 0, 0, body), 0);
  auto [id] = reply.template body_as<std::tuple<std::uint64_t>>();
  return id;
}

wire::Envelope request(wire::Kind kind, std::uint64_t id, std::int64_t wait = 0) {
  return detail::call(wire::make(kind, id, 0, Object{}), wait);
}

void post_nil(wire::Kind kind, std::uint64_t id) { detail::post(wire::make(kind, id, 0, Object{})); }

std::size_t waiting_on(std::uint64_t id) {
  auto reply = request(wire::Kind::sync_waiting, id);
  auto [waiting] = reply.body_as<std::tuple<std::uint64_t>>();
  return waiting;
}

}  // namespace

// ---- Lock and RLock --------------------------------------------------------------------------------------------

namespace detail {

LockCore::LockCore(bool recursive)
    : Handle(ObjectRef{create(wire::Kind::lock_create, std::make_tuple(recursive)), coordinator_endpoint()}) {}

bool LockCore::acquire(bool block, const Timeout& timeout) {
  const auto wait = wait_ms(block, timeout);
  auto reply = call(wire::make(wire::Kind::lock_acquire, ref_.id, 0, std::make_tuple(wait)), wait);
  auto [acquired, died] = reply.body_as<std::tuple<bool, bool>>();
  if (acquired) {
    held().add(ref_.id, 1);
    ++thread_levels().of(ref_.id);
  }
  previous_owner_died_ = acquired && died;
  return acquired;
}

void LockCore::release() {
  thread_levels().take_one(ref_.id);
  if (held().take_one(ref_.id)) {
    // Uncontended locking costs one round trip (the acquire), not two, in a process with one mpx thread; with more,
    // another thread's next request could reach the coordinator before a posted release.
    if (posts_are_ordered()) {
      post_nil(wire::Kind::lock_release_posted, ref_.id);
    } else {
      (void)request(wire::Kind::lock_release, ref_.id);
    }
    return;
  }
  // Not held, as far as this process knows: the coordinator says why (ValueError).
  (void)request(wire::Kind::lock_release, ref_.id);
}

bool LockCore::locked() const {
  auto reply = request(wire::Kind::lock_state, ref_.id);
  auto [owner, count] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t>>();
  (void)owner;
  return count > 0;
}

std::size_t LockCore::n_waiting() const { return waiting_on(ref_.id); }

// ---- Semaphore and BoundedSemaphore ----------------------------------------------------------------------------

SemaphoreCore::SemaphoreCore(std::int64_t value, bool bounded) : bounded_(bounded) {
  if (value < 0) throw ValueError("mpx: semaphore initial value must be >= 0");
  ref_ = ObjectRef{create(wire::Kind::sem_create, std::make_tuple(static_cast<std::uint64_t>(value), bounded)),
                   coordinator_endpoint()};
}

bool SemaphoreCore::acquire(bool block, const Timeout& timeout) {
  const auto wait = wait_ms(block, timeout);
  auto reply = call(wire::make(wire::Kind::sem_acquire, ref_.id, 0, std::make_tuple(wait)), wait);
  auto [acquired, died] = reply.body_as<std::tuple<bool, bool>>();
  previous_owner_died_ = acquired && died;
  return acquired;
}

void SemaphoreCore::release() {
  // Releasing an unbounded semaphore cannot fail, so it needs no reply (unless another thread could overtake it).
  if (!bounded_ && posts_are_ordered()) {
    post_nil(wire::Kind::sem_release_posted, ref_.id);
    return;
  }
  (void)request(wire::Kind::sem_release, ref_.id);
}

std::size_t SemaphoreCore::get_value() const {
  auto reply = request(wire::Kind::sem_get_value, ref_.id);
  auto [value] = reply.body_as<std::tuple<std::uint64_t>>();
  return value;
}

std::size_t SemaphoreCore::n_waiting() const { return waiting_on(ref_.id); }

}  // namespace detail

// ---- Event -----------------------------------------------------------------------------------------------------

Event::Event() : Handle(ObjectRef{create(wire::Kind::event_create, Object{}), detail::coordinator_endpoint()}) {}

bool Event::is_set() const {
  auto reply = request(wire::Kind::event_is_set, ref_.id);
  auto [flag] = reply.body_as<std::tuple<bool>>();
  return flag;
}

std::size_t Event::n_waiting() const { return waiting_on(ref_.id); }

void Event::set() { (void)request(wire::Kind::event_set, ref_.id); }

void Event::clear() { (void)request(wire::Kind::event_clear, ref_.id); }

bool Event::wait(const Timeout& timeout) {
  const auto wait = wait_ms(true, timeout);
  auto reply = detail::call(wire::make(wire::Kind::event_wait, ref_.id, 0, std::make_tuple(wait)), wait);
  auto [flag] = reply.body_as<std::tuple<bool>>();
  return flag;
}

// ---- Condition -------------------------------------------------------------------------------------------------

Condition::Condition() : Condition(RLock()) {}

Condition::Condition(const Lock& lock)
    : Handle(ObjectRef{create(wire::Kind::cond_create, std::make_tuple(lock.id())), detail::coordinator_endpoint()}),
      lock_(lock) {}

Condition::Condition(const RLock& lock)
    : Handle(ObjectRef{create(wire::Kind::cond_create, std::make_tuple(lock.id())), detail::coordinator_endpoint()}),
      lock_(lock),
      recursive_(true) {}

detail::LockCore& Condition::lock_core() const {
  if (!lock_) {
    auto reply = request(wire::Kind::cond_lock, ref_.id);
    auto [lock_id, recursive] = reply.body_as<std::tuple<std::uint64_t, bool>>();
    recursive_ = recursive;
    lock_ = detail::LockCore(adopt, ObjectRef{lock_id, ref_.endpoint});
  }
  return *lock_;
}

namespace {

// Whether another thread of this process holds levels of the lock `id` (this process's levels are not all this
// thread's).
bool other_thread_holds(std::uint64_t id) { return held().count(id) > thread_levels().of(id); }

[[noreturn]] void throw_other_thread_holds(std::string_view operation) {
  throw ValueError("mpx: Condition." + std::string(operation) +
                   ": another thread of this process holds the Condition's lock too (locks are owned by processes, "
                   "so a second thread re-enters an RLock instead of waiting for it); give threads that share a "
                   "Condition one over an mpx::Lock, or a Condition per process");
}

}  // namespace

// Over an RLock, a second thread's acquire would be granted at once as a re-entry: two threads inside the
// Condition's lock together, and whichever then waits or releases takes the other's levels with it (a lock guard's
// release failing in its destructor is std::terminate). Over a Lock, the second thread waits its turn, as it should.
void Condition::refuse_other_thread(std::string_view operation) const {
  auto& lock = lock_core();
  if (recursive_ && other_thread_holds(lock.id())) throw_other_thread_holds(operation);
}

bool Condition::wait(const Timeout& timeout) {
  auto& lock = lock_core();
  // A lock is owned by the process, so a second thread re-enters an RLock the first one holds instead of waiting
  // for it. Lending the coordinator every level would lend that thread's too, and its release (in a lock guard's
  // destructor, typically) would then fail: std::terminate. Refuse here, before anything is lent.
  if (other_thread_holds(lock.id())) throw_other_thread_holds("wait");
  const auto wait = wait_ms(true, timeout);
  // While waiting, the coordinator holds this process's recursion levels of the lock and gives them back with it;
  // meanwhile this process must not post releases of a lock it does not hold.
  const std::uint64_t levels = held().take_all(lock.id());
  auto& mine = thread_levels().of(lock.id());
  const std::uint64_t my_levels = std::exchange(mine, 0);
  wire::Envelope reply;
  try {
    // No local deadline: after the wait the lock must be re-acquired, which may take as long as its holder keeps it.
    reply = detail::call(wire::make(wire::Kind::cond_wait, ref_.id, 0, std::make_tuple(wait)), -1);
  } catch (...) {
    held().add(lock.id(), levels);
    thread_levels().of(lock.id()) = my_levels;
    throw;
  }
  held().add(lock.id(), levels);
  thread_levels().of(lock.id()) = my_levels;
  auto [notified, died] = reply.body_as<std::tuple<bool, bool>>();
  lock.previous_owner_died_ = died;
  return notified;
}

void Condition::notify(std::size_t n) {
  (void)detail::call(wire::make(wire::Kind::cond_notify, ref_.id, 0, std::make_tuple(static_cast<std::int64_t>(n))), 0);
}

void Condition::notify_all() {
  (void)detail::call(wire::make(wire::Kind::cond_notify, ref_.id, 0, std::make_tuple(std::int64_t{-1})), 0);
}

// ---- Barrier ---------------------------------------------------------------------------------------------------

Barrier::Barrier(create_t, std::size_t parties, std::optional<BoundCall> action, const Timeout& timeout)
    : parties_(parties) {
  if (parties == 0) throw ValueError("mpx: a Barrier needs parties > 0");
  std::optional<FunctionId> action_id;
  std::string action_args = encode(std::tuple<>());
  if (action) {
    action_id = action->id();
    action_args = std::move(action->args);
  }
  // Python's Barrier(timeout=None) waits forever by default.
  const std::int64_t default_wait = timeout ? wait_ms(true, timeout) : -1;
  ref_ = ObjectRef{create(wire::Kind::barrier_create,
                          std::make_tuple(static_cast<std::uint64_t>(parties), action_id, default_wait,
                                          Object(Object::Bytes{std::move(action_args)}))),
                   detail::coordinator_endpoint()};
}

std::size_t Barrier::wait(const Timeout& timeout) {
  const std::int64_t wait = timeout ? wait_ms(true, timeout) : -1;
  // No local deadline: a party that arrives while the previous generation's action runs waits for it first.
  auto reply = detail::call(wire::make(wire::Kind::barrier_wait, ref_.id, 0, std::make_tuple(wait, !timeout)), -1);
  auto [index, action, generation, action_args] =
      reply.body_as<std::tuple<std::uint64_t, std::optional<FunctionId>, std::uint64_t, Object>>();
  if (!action) return index;
  // The last party runs the action, then tells the coordinator to release the others (or to break the barrier).
  std::exception_ptr failure;
  try {
    auto [function, trampoline] = resolve(*action);
    const BoundCall run{function, trampoline, action_args.as_bytes().data};
    (void)run.invoke();
  } catch (...) {
    failure = std::current_exception();
  }
  (void)detail::call(
      wire::make(wire::Kind::barrier_action_done, ref_.id, 0, std::make_tuple(generation, failure == nullptr)), 0);
  if (failure) std::rethrow_exception(failure);
  return index;
}

void Barrier::reset() { (void)request(wire::Kind::barrier_reset, ref_.id); }

void Barrier::abort() { (void)request(wire::Kind::barrier_abort, ref_.id); }

bool Barrier::broken() const {
  auto reply = request(wire::Kind::barrier_state, ref_.id);
  auto [parties, waiting, broken] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t, bool>>();
  parties_ = parties;
  return broken;
}

std::size_t Barrier::n_waiting() const {
  auto reply = request(wire::Kind::barrier_state, ref_.id);
  auto [parties, waiting, broken] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t, bool>>();
  parties_ = parties;
  return waiting;
}

std::size_t Barrier::parties() const {
  if (parties_ == 0) (void)broken();
  return parties_;
}

}  // namespace mpx
