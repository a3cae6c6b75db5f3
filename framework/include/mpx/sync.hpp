/// \file
/// mpx/sync.hpp — Python's multiprocessing synchronization primitives: Lock, RLock, Semaphore, BoundedSemaphore,
/// Event, Condition and Barrier. Their state lives in the coordinator; each object here is a handle that can be passed
/// to other processes (under fork, forkserver and spawn alike).
///
/// Ownership is per process: a Lock or RLock is held by the process that acquired it, not by a thread. Two threads of
/// one process therefore exclude each other on a Lock (the second one waits), but an RLock held by a process lets any
/// of its threads re-enter. Give each thread its own copy of a handle: copies are cheap and, ownership being per
/// process, interchangeable.
///
/// Unlike Python, a process that dies holding a Lock, an RLock or Semaphore units does not deadlock the others: the
/// coordinator releases what it held, and the next acquirer learns it through previous_owner_died().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include <mpx/function.hpp>
#include <mpx/handle.hpp>

namespace mpx {

class MPX_API Condition;

namespace detail {

// The compiled side of Lock and RLock.
class MPX_API LockCore : public Handle {
 public:
  // Python's acquire(block=True, timeout=None): false if not acquired (non-blocking, or the timeout passed).
  bool acquire(bool block = true, const Timeout& timeout = std::nullopt);
  // Throws ValueError if this process does not hold the lock.
  void release();
  // Whether any process holds it now (Python 3.14's locked()).
  bool locked() const;
  /// How many acquires (of any process or thread) are blocked on it now, as Barrier::n_waiting counts. Not in Python:
  /// it lets a program (or a test) wait until another process's acquire has reached the coordinator.
  std::size_t n_waiting() const;
  // True if the last acquire through this handle got the lock because its previous holder died holding it.
  bool previous_owner_died() const noexcept { return previous_owner_died_; }

  // BasicLockable and Lockable, so std::lock_guard, std::scoped_lock and std::unique_lock work (Python's `with`).
  void lock() { (void)acquire(); }
  void unlock() { release(); }
  [[nodiscard]] bool try_lock() { return acquire(false); }

 protected:
  explicit LockCore(bool recursive);
  LockCore(adopt_t, ObjectRef ref) : Handle(std::move(ref)) {}

 private:
  friend class mpx::Condition;
  bool previous_owner_died_ = false;
};

// The compiled side of Semaphore and BoundedSemaphore.
class MPX_API SemaphoreCore : public Handle {
 public:
  // Takes one unit: false if none came (non-blocking, or the timeout passed).
  bool acquire(bool block = true, const Timeout& timeout = std::nullopt);
  // Gives one unit back. A BoundedSemaphore throws ValueError past its initial value.
  void release();
  std::size_t get_value() const;
  /// How many acquires are blocked on it now (see LockCore::n_waiting).
  std::size_t n_waiting() const;
  // True if the last acquire through this handle got a unit given back by a process that died holding it.
  bool previous_owner_died() const noexcept { return previous_owner_died_; }

  void lock() { (void)acquire(); }
  void unlock() { release(); }
  [[nodiscard]] bool try_lock() { return acquire(false); }

 protected:
  SemaphoreCore(std::int64_t value, bool bounded);
  SemaphoreCore(adopt_t, ObjectRef ref, bool bounded) : Handle(std::move(ref)), bounded_(bounded) {}

 private:
  bool bounded_ = false;
  bool previous_owner_died_ = false;
};

}  // namespace detail

/// Python's multiprocessing.Lock. Acquiring it twice from one process blocks, as in Python. From its internal base:
/// acquire(block = true, timeout = nullopt) (false if not acquired: non-blocking, or the timeout passed), release()
/// (mpx::ValueError if this process does not hold it), locked(), previous_owner_died() (the last acquire got the lock
/// because its holder died holding it), and lock()/unlock()/try_lock(), so std::lock_guard, std::scoped_lock and
/// std::unique_lock work (Python's `with`).
class Lock : public detail::LockCore {
 public:
  Lock() : LockCore(false) {}  ///< Creates an unlocked lock at the coordinator.
  Lock(adopt_t, ObjectRef ref) : LockCore(adopt, std::move(ref)) {}  ///< A handle to the existing lock `ref`.
};

/// Python's multiprocessing.RLock: the owning process may acquire it again; it is free after as many releases.
/// It has Lock's operations (acquire, release, locked, previous_owner_died, lock, unlock, try_lock).
class RLock : public detail::LockCore {
 public:
  RLock() : LockCore(true) {}  ///< Creates an unlocked recursive lock at the coordinator.
  RLock(adopt_t, ObjectRef ref) : LockCore(adopt, std::move(ref)) {}  ///< A handle to the existing lock `ref`.
};

/// Python's multiprocessing.Semaphore. Units held by a process that dies are given back, but never past the initial
/// value, so a Semaphore(0) used as a signal gets nothing back from its consumers.
/// From its internal base: acquire(block = true, timeout = nullopt) (takes one unit; false if none came), release()
/// (gives one back), get_value(), previous_owner_died() (the unit came from a process that died holding it), and
/// lock()/unlock()/try_lock() for std::lock_guard and friends.
class Semaphore : public detail::SemaphoreCore {
 public:
  /// Throws ValueError if value is negative.
  explicit Semaphore(std::int64_t value = 1) : SemaphoreCore(value, false) {}
  /// A handle to the existing semaphore `ref`.
  Semaphore(adopt_t, ObjectRef ref) : SemaphoreCore(adopt, std::move(ref), false) {}
};

/// Python's multiprocessing.BoundedSemaphore: release() past the initial value throws ValueError.
/// It has Semaphore's operations.
class BoundedSemaphore : public detail::SemaphoreCore {
 public:
  /// A semaphore with `value` units, and at most that many; throws ValueError if value is negative.
  explicit BoundedSemaphore(std::int64_t value = 1) : SemaphoreCore(value, true) {}
  /// A handle to the existing semaphore `ref`.
  BoundedSemaphore(adopt_t, ObjectRef ref) : SemaphoreCore(adopt, std::move(ref), true) {}
};

/// Python's multiprocessing.Event.
class MPX_API Event : public Handle {
 public:
  Event();  ///< Creates a cleared event at the coordinator.
  Event(adopt_t, ObjectRef ref) : Handle(std::move(ref)) {}  ///< A handle to the existing event `ref`.
  bool is_set() const;  ///< Whether the flag is set.
  void set();  ///< Sets the flag and wakes every waiter.
  void clear();  ///< Clears the flag.
  /// Returns the flag: false if the timeout passed before it was set.
  bool wait(const Timeout& timeout = std::nullopt);
  /// How many waits are blocked on it now (see LockCore::n_waiting).
  std::size_t n_waiting() const;
};

/// Python's multiprocessing.Condition over a Lock or an RLock (a new RLock by default).
class MPX_API Condition : public Handle {
 public:
  Condition();  ///< A condition over a new RLock.
  explicit Condition(const Lock& lock);  ///< A condition over `lock` (shared with other handles of it).
  explicit Condition(const RLock& lock);  ///< A condition over `lock` (shared with other handles of it).
  Condition(adopt_t, ObjectRef ref) : Handle(std::move(ref)) {}  ///< A handle to the existing condition `ref`.

  /// Acquires the underlying lock: false if not acquired (non-blocking, or the timeout passed). Over an RLock, which
  /// its process owns, ValueError if another thread of this process holds it: this thread would re-enter it.
  bool acquire(bool block = true, const Timeout& timeout = std::nullopt) {
    refuse_other_thread("acquire");
    return lock_core().acquire(block, timeout);
  }
  void release() { lock_core().release(); }  ///< Releases the underlying lock (ValueError if not held).
  ///@{
  /// Lockable, so std::unique_lock works: lock() is acquire(), unlock() is release(), try_lock() is acquire(false).
  void lock() { (void)acquire(); }
  void unlock() { lock_core().unlock(); }
  [[nodiscard]] bool try_lock() { return acquire(false); }
  ///@}
  /// After acquire() or wait(): whether the lock came from a process that died holding it.
  bool previous_owner_died() const { return lock_core().previous_owner_died(); }

  /// Needs the lock (ValueError otherwise). Releases it, waits for a notify or the timeout, and takes it back before
  /// returning, in one coordinator request. Returns false if the timeout passed without a notify.
  bool wait(const Timeout& timeout = std::nullopt);
  /// Python's wait_for: waits until predicate() is true, or the timeout passes; returns the last predicate() value.
  template <class Predicate>
  bool wait_for(Predicate predicate, const Timeout& timeout = std::nullopt);
  /// Wake up to n waiters (all of them). Needs the lock (ValueError otherwise).
  void notify(std::size_t n = 1);
  void notify_all();  ///< Wakes every waiter. Needs the lock (ValueError otherwise).

 private:
  /// The underlying lock. A handle that arrived as an argument knows only the condition's id and asks the coordinator
  /// once for its lock.
  detail::LockCore& lock_core() const;
  /// ValueError naming `operation` if the lock is an RLock that another thread of this process holds.
  void refuse_other_thread(std::string_view operation) const;
  mutable std::optional<detail::LockCore> lock_;
  mutable bool recursive_ = false;  ///< the lock is an RLock (known with lock_)
};

/// Python's multiprocessing.Barrier. `action` (a plain function or captureless lambda, or nullptr) is run by the last
/// process to arrive, before the others are released; if it throws, the barrier breaks and the exception propagates
/// from that process's wait(). The action takes arguments as a Process target does: Barrier(3, action, args...), or
/// Barrier(3, mpx::bind(action, args...), timeout) with a default timeout too; they are encoded once, here. Errors are
/// mpx::BrokenBarrierError: on abort(), on reset() while waiting, on a timeout (which breaks the barrier, as in
/// Python), and when a waiting party dies (which also breaks it: the others could otherwise never be released).
class MPX_API Barrier : public Handle {
 public:
  /// A barrier for `parties` processes, with an optional action taking no arguments and a default wait timeout.
  explicit Barrier(std::size_t parties, void (*action)() = nullptr, Timeout timeout = std::nullopt)
      : Barrier(create_t{}, parties, action ? std::optional<BoundCall>(mpx::bind(action)) : std::nullopt, timeout) {}
  /// A barrier whose action is a bound call (mpx::bind(action, args...)), with a default wait timeout.
  Barrier(std::size_t parties, BoundCall action, Timeout timeout = std::nullopt)
      : Barrier(create_t{}, parties, std::move(action), timeout) {}
  /// A barrier whose action is `action(args...)`; the arguments are encoded once, here. No default timeout.
  template <class F, class... A>
    requires(sizeof...(A) > 0 && detail::PlainFunctionLike<std::remove_cvref_t<F>> && std::is_invocable_v<F&, A&...>)
  Barrier(std::size_t parties, F&& action, A&&... args)
      : Barrier(create_t{}, parties, mpx::bind(action, std::forward<A>(args)...), std::nullopt) {}
  Barrier(adopt_t, ObjectRef ref) : Handle(std::move(ref)) {}  ///< A handle to the existing barrier `ref`.

  /// Returns this party's arrival index, 0 .. parties()-1; the last to arrive gets parties()-1. With no timeout the
  /// barrier's own default (set at construction) applies.
  std::size_t wait(const Timeout& timeout = std::nullopt);
  /// Waiting parties get BrokenBarrierError; the barrier is empty and usable again.
  void reset();
  /// Breaks the barrier: waiting and future parties get BrokenBarrierError until reset().
  void abort();
  bool broken() const;  ///< Whether the barrier is broken (Python: the `broken` property).
  std::size_t n_waiting() const;  ///< How many parties wait now (Python: `n_waiting`).
  std::size_t parties() const;  ///< The number of parties it needs (Python: `parties`).

 private:
  struct create_t {};
  Barrier(create_t, std::size_t parties, std::optional<BoundCall> action, const Timeout& timeout);
  mutable std::size_t parties_ = 0;  ///< cached: fixed at creation
};

template <class Predicate>
bool Condition::wait_for(Predicate predicate, const Timeout& timeout) {
  using clock = std::chrono::steady_clock;
  bool result = static_cast<bool>(predicate());
  std::optional<clock::time_point> end;
  if (timeout) end = clock::now() + std::chrono::duration_cast<clock::duration>(*timeout);
  while (!result) {
    Timeout left;
    if (end) {
      const auto remaining = *end - clock::now();
      if (remaining <= clock::duration::zero()) break;
      left = std::chrono::duration<double>(remaining);
    }
    (void)wait(left);
    result = static_cast<bool>(predicate());
  }
  return result;
}

}  // namespace mpx
