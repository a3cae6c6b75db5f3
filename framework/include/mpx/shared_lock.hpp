/// \file
/// mpx/shared_lock.hpp — the lock inside a Value's or an Array's shared-memory segment (mpx/shared.hpp).
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <memory>
#include <optional>

#include <mpx/handle.hpp>

namespace mpx {

namespace detail {
class Segment;
template <class T>
class Cells;
}  // namespace detail

/// The lock of a Value or Array: get_lock() returns it. Usable with std::scoped_lock / std::lock_guard /
/// std::unique_lock (lock, unlock, try_lock), and with Python's acquire(block, timeout) / release().
class MPX_API SharedLock {
 public:
  /// Python's acquire(block=True, timeout=None): false if not acquired (non-blocking, or the timeout passed).
  bool acquire(bool block = true, const Timeout& timeout = std::nullopt);
  /// Throws ValueError if this thread does not hold it.
  void release();
  ///@{
  /// Lockable, for std::scoped_lock and friends: lock() is acquire(), unlock() is release(), try_lock() is
  /// acquire(false).
  void lock() { (void)acquire(); }
  void unlock() { release(); }
  [[nodiscard]] bool try_lock() { return acquire(false); }
  ///@}
  /// True if the last acquire through this handle got the lock from a holder that died holding it (Python would have
  /// deadlocked). The lock is consistent again; the data it guards may be half-updated.
  bool previous_owner_died() const noexcept { return previous_owner_died_; }

 private:
  template <class>
  friend class detail::Cells;
  SharedLock() = default;
  explicit SharedLock(std::shared_ptr<detail::Segment> segment) : segment_(std::move(segment)) {}
  std::shared_ptr<detail::Segment> segment_;
  bool previous_owner_died_ = false;
};

}  // namespace mpx
