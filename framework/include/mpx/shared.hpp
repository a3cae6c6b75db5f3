/// \file
/// mpx/shared.hpp — Python's shared ctypes objects and shared memory: Value, Array, RawValue, RawArray and
/// SharedMemory, in named POSIX shared memory segments that every process of the session maps.
///
///   mpx::Value<double> num(0.0);             // Value('d', 0.0)
///   mpx::Array<int> arr({0, 1, 2, 3});       // Array('i', range(4)); mpx::Array<int>(10) is ten zeros
///   mpx::Process p(f, num, arr);             // handles travel as arguments, under fork, spawn and forkserver
///
/// T is any trivially copyable type (int, double, char, enums, fixed-size structs): it lives in memory that other
/// processes map, so it cannot own heap memory. value()/set() (also load()/store()) read and write one value whole: a
/// T of 1, 2, 4 or 8 bytes is one atomic access, a larger T takes the lock (RawValue: no lock, as in Python).
///
/// NOT ATOMIC, as in Python:   v.set(v.value() + 1);      // another process can write between the read and the write
/// The two right ways:
///   v.fetch_add(1);                                      // integral T: one atomic instruction, no lock
///   { std::scoped_lock guard(v.get_lock()); v.set(v.value() + 1); }   // any T: Python's `with v.get_lock():`
///   v.with_lock([](int& x) { x += 1; });                 // the same, shorter
///
/// The lock is a futex word inside the segment, recursive like Python's RLock (per thread), taken and released with no
/// message at all. It belongs to a process, as mpx::Lock does: if a process dies holding it, Python's next locker
/// deadlocks; mpx's coordinator sees the death and recovers it, so the next locker gets the lock,
/// get_lock().previous_owner_died() is true, and the lock is consistent again. The data may be half-updated by the dead
/// holder: that is what the flag says. A *thread* that exits holding it while its process lives on is not recovered:
/// the lock stays held, as in Python.
///
/// Segments are created by the coordinator and named after the session ("mpx-<root pid>-<random>-..."). They are
/// unlinked when the session ends, and if the root process is SIGKILLed, the next session's start-up removes them. A
/// process that only uses a segment never unlinks it (CPython gh-82300 does). A handle that cannot map its segment
/// (another host, or MPX_SHM_REMOTE=1 in its environment, or as_remote()) works the same through coordinator messages.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include <mpx/detail/shared_cells.hpp>
#include <mpx/errors.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>
#include <mpx/shared_lock.hpp>
#include <mpx/shared_memory.hpp>

namespace mpx {

/// Python's multiprocessing.Value(typecode, value, lock=True). See the top of this header for the API and the
/// non-atomic `v.set(v.value() + 1)` pitfall.
/// From its internal base: is_remote() (whether this handle goes through the coordinator instead of mapping the
/// segment) and segment_name() (the segment's name in /dev/shm).
template <class T>
class Value : public detail::Cells<T> {
  using Base = detail::Cells<T>;

 public:
  /// A new Value holding `init`, in a new segment; lock = false makes it have no lock (get_lock() then raises).
  explicit Value(const T& init = T{}, bool lock = true) : Base(1, lock) { this->init(&init, 1); }
  /// A handle to the existing Value `ref` (what a decoded argument is).
  Value(adopt_t, detail::SegmentRef ref) : Base(adopt, std::move(ref)) {}

  T value() const { return this->get(0); }  ///< Reads the value whole (Python: v.value).
  void set(const T& v) { this->put(0, v); }  ///< Writes the value whole (Python: v.value = x).
  T load() const { return this->get(0); }  ///< The same as value().
  void store(const T& v) { this->put(0, v); }  ///< The same as set().

  /// The lock (Python's get_lock()). Throws ValueError if the Value was made with lock = false.
  SharedLock& get_lock() const { return this->lock_ref(); }
  /// Runs fn(T&) under the lock and returns what it returns: the read-modify-write done right.
  /// (Remote mode: fn works on a copy, written back when it returns normally.)
  template <class F>
  std::invoke_result_t<F, T&> with_lock(F&& fn) {
    using R = std::invoke_result_t<F, T&>;
    std::scoped_lock guard(get_lock());
    if (this->local_) return std::invoke(std::forward<F>(fn), *this->local_);
    T copy = this->get(0);
    if constexpr (std::is_void_v<R>) {
      std::invoke(std::forward<F>(fn), copy);
      this->put(0, copy);
    } else {
      R result = std::invoke(std::forward<F>(fn), copy);
      this->put(0, copy);
      return result;
    }
  }

  /// Integral T: one atomic instruction on the shared memory (std::atomic_ref), no lock needed.
  T fetch_add(T delta) requires Base::integral { return this->fetch_add_at(0, delta); }
  /// Integral T: atomically subtracts `delta`; returns the old value.
  T fetch_sub(T delta) requires Base::integral { return this->fetch_add_at(0, static_cast<T>(T{} - delta)); }
  /// Like std::atomic::compare_exchange_strong: on failure `expected` becomes the current value.
  bool compare_exchange(T& expected, T desired) requires Base::integral {
    return this->compare_exchange_at(0, expected, desired);
  }

  /// The same Value, reached through the coordinator protocol here and wherever this handle is sent (for tests, and
  /// for what a process on another host does by itself).
  Value as_remote() const { return Value(this->segment_->remote_copy()); }

 private:
  explicit Value(std::shared_ptr<detail::Segment> segment) : Base(std::move(segment)) {}
};

/// Python's multiprocessing.RawValue: no lock. value()/set() of a T of 1, 2, 4 or 8 bytes are still whole.
/// Also is_remote() and segment_name(), from its internal base.
template <class T>
class RawValue : public detail::Cells<T> {
  using Base = detail::Cells<T>;

 public:
  /// A new RawValue holding `init`, in a new segment.
  explicit RawValue(const T& init = T{}) : Base(1, false) { this->init(&init, 1); }
  /// A handle to the existing RawValue `ref`.
  RawValue(adopt_t, detail::SegmentRef ref) : Base(adopt, std::move(ref)) {}

  T value() const { return this->get(0); }  ///< Reads the value (Python: v.value); a T over 8 bytes may tear.
  void set(const T& v) { this->put(0, v); }  ///< Writes the value (Python: v.value = x).
  T load() const { return this->get(0); }  ///< The same as value().
  void store(const T& v) { this->put(0, v); }  ///< The same as set().
  /// Integral T: atomically adds `delta`; returns the old value.
  T fetch_add(T delta) requires Base::integral { return this->fetch_add_at(0, delta); }
  /// Integral T: atomically subtracts `delta`; returns the old value.
  T fetch_sub(T delta) requires Base::integral { return this->fetch_add_at(0, static_cast<T>(T{} - delta)); }
  /// Integral T, like std::atomic::compare_exchange_strong: on failure `expected` becomes the current value.
  bool compare_exchange(T& expected, T desired) requires Base::integral {
    return this->compare_exchange_at(0, expected, desired);
  }
  /// The same RawValue, reached through the coordinator (see Value::as_remote).
  RawValue as_remote() const { return RawValue(this->segment_->remote_copy()); }

 private:
  explicit RawValue(std::shared_ptr<detail::Segment> segment) : Base(std::move(segment)) {}
};

template <class T>
class ArrayBase;

/// One element of an Array, as arr[i] returns it: reads and writes go to shared memory (or through the coordinator).
/// `arr[i] += 1` is a read then a write, NOT atomic (as in Python); use arr[i].fetch_add(1) or the lock.
template <class T>
class Element {
 public:
  operator T() const { return owner_->get(index_); }  ///< Reads the element (whole, as Value::value()).
  T value() const { return owner_->get(index_); }  ///< Reads the element.
  /// Writes the element (Python: arr[i] = v).
  Element& operator=(const T& v) {
    owner_->put(index_, v);
    return *this;
  }
  Element(const Element&) = default;  ///< Another reference to the same element.
  /// Copies the other element's value (a[0] = a[1]), as Python's item assignment does.
  Element& operator=(const Element& other) { return *this = static_cast<T>(other); }
  ///@{
  /// Compound assignment: a read, then a write. NOT atomic (as in Python); use fetch_add or the lock.
  template <class U>
  Element& operator+=(const U& u) { return *this = static_cast<T>(value() + u); }
  template <class U>
  Element& operator-=(const U& u) { return *this = static_cast<T>(value() - u); }
  template <class U>
  Element& operator*=(const U& u) { return *this = static_cast<T>(value() * u); }
  template <class U>
  Element& operator/=(const U& u) { return *this = static_cast<T>(value() / u); }
  ///@}
  /// Integral T: atomically adds `delta`; returns the old value.
  T fetch_add(T delta) requires detail::Cells<T>::integral { return owner_->fetch_add_at(index_, delta); }
  /// Integral T: atomically subtracts `delta`; returns the old value.
  T fetch_sub(T delta) requires detail::Cells<T>::integral {
    return owner_->fetch_add_at(index_, static_cast<T>(T{} - delta));
  }
  /// Integral T, like std::atomic::compare_exchange_strong: on failure `expected` becomes the current value.
  bool compare_exchange(T& expected, T desired) requires detail::Cells<T>::integral {
    return owner_->compare_exchange_at(index_, expected, desired);
  }

 private:
  friend class ArrayBase<T>;
  Element(ArrayBase<T>* owner, std::size_t index) : owner_(owner), index_(index) {}
  ArrayBase<T>* owner_;
  std::size_t index_;
};

/// What Array and RawArray share: indexing, size, span, copies.
/// Also is_remote() and segment_name(), from its internal base.
template <class T>
class ArrayBase : public detail::Cells<T> {
  using Base = detail::Cells<T>;

 public:
  std::size_t size() const noexcept { return this->count(); }  ///< The number of elements (Python: len(arr)).
  /// arr[i]: checked (IndexError), read and written through the returned Element.
  Element<T> operator[](std::size_t i) {
    this->check_index(i);
    return Element<T>(this, i);
  }
  /// arr[i] of a const array: the element's value; IndexError outside the array.
  T operator[](std::size_t i) const {
    this->check_index(i);
    return this->get(i);
  }
  /// The mapped memory itself (no lock taken: use get_lock() or with_lock() around it when others write). Throws
  /// ValueError in remote mode, where nothing is mapped.
  std::span<T> span() const {
    if (!this->local_) throw ValueError("mpx: a remote-mode Array has no span; use to_vector() or with_lock()");
    return std::span<T>(this->local_, this->count());
  }
  /// Python's arr[:]: a copy of every element (under the lock, if there is one and T is not one atomic access).
  std::vector<T> to_vector() const { return this->copy_out(); }
  /// Python's arr[start:stop], as one snapshot; IndexError unless 0 <= start <= stop <= size().
  std::vector<T> slice(std::size_t start, std::size_t stop) const {
    this->check_range(start, stop, "slice");
    return this->copy_out(start, stop - start);
  }
  /// Python's arr[start:start + len(values)] = values, as one write under the lock; IndexError if it would run past
  /// the end (the size of an Array never changes).
  void assign_slice(std::size_t start, const std::vector<T>& values) {
    this->check_range(start, start + values.size(), "slice assignment");
    this->copy_in(values, start);
  }

 protected:
  using Base::Base;

 private:
  friend class Element<T>;
};

/// Python's multiprocessing.Array(typecode, size_or_initializer, lock=True). Array<int>(10) is ten zeros;
/// Array<int>({1, 2, 3}) and Array<int>(vector) copy their values. (As with std::vector, Array<int>{10} is the
/// one-element list.)
template <class T>
class Array : public ArrayBase<T> {
 public:
  /// `size` zeros; lock = false makes an Array without a lock (get_lock() then raises ValueError).
  explicit Array(std::size_t size, bool lock = true) : ArrayBase<T>(size, lock) {}
  /// A copy of `values`.
  Array(std::initializer_list<T> values, bool lock = true) : ArrayBase<T>(values.size(), lock) {
    this->init(values.begin(), values.size());
  }
  /// A copy of `values`.
  explicit Array(const std::vector<T>& values, bool lock = true) : ArrayBase<T>(values.size(), lock) {
    this->init(values.data(), values.size());
  }
  /// A handle to the existing Array `ref`.
  Array(adopt_t, detail::SegmentRef ref) : ArrayBase<T>(adopt, std::move(ref)) {}

  /// The lock (Python's get_lock()); ValueError if made with lock = false.
  SharedLock& get_lock() const { return this->lock_ref(); }
  /// Runs fn(std::span<T>) under the lock (remote mode: on a copy, written back after) and returns what it returns.
  template <class F>
  std::invoke_result_t<F, std::span<T>> with_lock(F&& fn) {
    using R = std::invoke_result_t<F, std::span<T>>;
    std::scoped_lock guard(get_lock());
    if (this->local_) return std::invoke(std::forward<F>(fn), std::span<T>(this->local_, this->count()));
    std::vector<T> copy = this->copy_out();
    if constexpr (std::is_void_v<R>) {
      std::invoke(std::forward<F>(fn), std::span<T>(copy));
      this->copy_in(copy);
    } else {
      R result = std::invoke(std::forward<F>(fn), std::span<T>(copy));
      this->copy_in(copy);
      return result;
    }
  }
  /// The same Array, reached through the coordinator protocol here and wherever this handle is sent (see
  /// Value::as_remote).
  Array as_remote() const { return Array(this->segment_->remote_copy()); }

 private:
  explicit Array(std::shared_ptr<detail::Segment> segment) : ArrayBase<T>(std::move(segment)) {}
};

/// Python's multiprocessing.RawArray: no lock.
template <class T>
class RawArray : public ArrayBase<T> {
 public:
  explicit RawArray(std::size_t size) : ArrayBase<T>(size, false) {}  ///< `size` zeros.
  /// A copy of `values`.
  RawArray(std::initializer_list<T> values) : ArrayBase<T>(values.size(), false) {
    this->init(values.begin(), values.size());
  }
  /// A copy of `values`.
  explicit RawArray(const std::vector<T>& values) : ArrayBase<T>(values.size(), false) {
    this->init(values.data(), values.size());
  }
  /// A handle to the existing RawArray `ref`.
  RawArray(adopt_t, detail::SegmentRef ref) : ArrayBase<T>(adopt, std::move(ref)) {}
  /// The same RawArray, reached through the coordinator (see Value::as_remote).
  RawArray as_remote() const { return RawArray(this->segment_->remote_copy()); }

 private:
  explicit RawArray(std::shared_ptr<detail::Segment> segment) : ArrayBase<T>(std::move(segment)) {}
};

}  // namespace mpx
