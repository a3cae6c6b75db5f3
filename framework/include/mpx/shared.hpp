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

#include <mpx/errors.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>

namespace mpx {

/// A readable C++ type name from a mangled one (declared in process.hpp too).
MPX_API std::string demangle(const char* mangled);

namespace detail {

// What a shared handle sends to another process: enough to map the segment, or to reach it through the coordinator.
struct SegmentRef {
  std::uint64_t id = 0;     // the coordinator's id (0: not recorded, e.g. a SharedMemory attached by name)
  std::string endpoint;     // the coordinator that created it
  std::string name;         // without the leading '/', as Python's SharedMemory.name
  std::uint64_t size = 0;   // data bytes
  std::string host;         // which /dev/shm it lives in
  std::uint64_t token = 0;  // checked against the segment's header (0: a raw SharedMemory segment, no header)
  bool lock = false;
  bool remote = false;      // whoever decodes it uses the coordinator protocol
  std::string type;         // element type of a Value/Array (its typeid name); empty for SharedMemory
  MSGPACK_DEFINE(id, endpoint, name, size, host, token, lock, remote, type);
};

// One segment as this process uses it: mapped (local() is its data), or reached through the coordinator (local() is
// nullptr). Copies of a handle share it; it is unmapped when the last one goes.
class MPX_API Segment {
 public:
  static std::shared_ptr<Segment> create_cells(std::size_t bytes, bool lock, std::string type);
  static std::shared_ptr<Segment> create_raw(const std::optional<std::string>& name, std::size_t size, bool track);
  static std::shared_ptr<Segment> attach_raw(const std::string& name);
  // Maps the segment a decoded handle names, or falls back to the coordinator protocol.
  static std::shared_ptr<Segment> adopt(SegmentRef ref);
  std::shared_ptr<Segment> remote_copy() const;

  std::byte* local() const noexcept { return local_; }
  // The lock in the segment's header, when mapped and locked (else nullptr).
  void* mapped_lock() const noexcept { return lock_; }
  const SegmentRef& ref() const noexcept { return ref_; }
  std::size_t size() const noexcept { return ref_.size; }

  // Copies bytes out of / into the data. Remotely, 1, 2, 4 or 8 bytes at an aligned offset move as one access.
  void read(std::size_t offset, void* out, std::size_t n) const;
  void write(std::size_t offset, const void* in, std::size_t n);
  // Remote atomics on a cell of `width` bytes: returns the old value; `*succeeded` for compare_exchange.
  std::uint64_t remote_fetch_add(std::size_t offset, std::size_t width, std::uint64_t delta);
  std::uint64_t remote_compare_exchange(std::size_t offset, std::size_t width, std::uint64_t expected,
                                        std::uint64_t desired, bool* succeeded);
  // 0: not acquired; 1: acquired; 2: acquired, and its previous holder had died holding it.
  int lock(bool block, const Timeout& timeout);
  void unlock();
  void unlink_name();

  Segment(SegmentRef ref, std::shared_ptr<void> mapping, std::byte* local, void* lock)
      : ref_(std::move(ref)), mapping_(std::move(mapping)), local_(local), lock_(lock) {}

 private:
  SegmentRef ref_;
  std::shared_ptr<void> mapping_;  // keeps the mapping alive
  std::byte* local_ = nullptr;
  void* lock_ = nullptr;  // the lock in the segment's header (shm::Lock), when mapped and locked
};

// Checks a decoded handle's element type against the one it is decoded as.
MPX_API void check_element_type(const SegmentRef& ref, const char* expected);

// Tag base: what the msgpack adaptors below recognise.
struct SharedHandle {};

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
  bool try_lock() { return acquire(false); }
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

namespace detail {

// The storage common to Value, Array, RawValue and RawArray: `count` cells of T in one segment.
template <class T>
class Cells : public SharedHandle {
  static_assert(std::is_trivially_copyable_v<T>,
                "mpx::Value<T>, Array<T>, RawValue<T>, RawArray<T>: T must be trivially copyable (arithmetic types, "
                "enums, and arrays or structs of them). It lives in shared memory that other processes map, so it "
                "cannot own heap memory (std::string, std::vector) or have virtual functions");
  static_assert(!std::is_const_v<T> && !std::is_volatile_v<T>, "mpx::Value<T>/Array<T>: T must not be const or volatile");

 public:
  static constexpr bool atomic_cells =
      (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8) && std::atomic_ref<T>::is_always_lock_free;
  static constexpr bool integral = std::is_integral_v<T> && !std::is_same_v<T, bool>;

  // What travels to another process (the msgpack adaptors use it).
  SegmentRef segment_ref() const { return segment_->ref(); }
  // The segment's name in /dev/shm (without '/').
  const std::string& segment_name() const noexcept { return segment_->ref().name; }
  // Whether this handle goes through the coordinator instead of mapping the segment.
  bool is_remote() const noexcept { return local_ == nullptr; }

 protected:
  Cells(std::size_t count, bool lock)
      : segment_(Segment::create_cells(count * sizeof(T), lock, typeid(T).name())), lock_(segment_) {
    local_ = reinterpret_cast<T*>(segment_->local());
  }
  Cells(adopt_t, SegmentRef ref) : segment_(adopt_checked(std::move(ref))), lock_(segment_) {
    local_ = reinterpret_cast<T*>(segment_->local());
  }
  explicit Cells(std::shared_ptr<Segment> segment) : segment_(std::move(segment)), lock_(segment_) {
    local_ = reinterpret_cast<T*>(segment_->local());
  }

  std::size_t count() const noexcept { return segment_->size() / sizeof(T); }
  bool has_lock() const noexcept { return segment_->ref().lock; }

  void check_index(std::size_t i) const {
    if (i >= count()) {
      throw IndexError("mpx: index " + std::to_string(i) + " out of range for an Array of " + std::to_string(count()));
    }
  }

  SharedLock& lock_ref() const {
    if (!has_lock()) throw ValueError("mpx: this object was created with lock=false; it has no lock");
    return lock_;
  }

  // One cell, read whole (atomically, or under the lock; a Raw object's large T may tear, as in Python).
  T get(std::size_t i) const {
    if constexpr (atomic_cells) {
      if (local_) return std::atomic_ref<T>(local_[i]).load();
      return read_cell(i);
    } else {
      LockScope scope(this);
      return local_ ? copy_of(local_[i]) : read_cell(i);
    }
  }

  void put(std::size_t i, const T& v) {
    if constexpr (atomic_cells) {
      if (local_) return std::atomic_ref<T>(local_[i]).store(v);
      segment_->write(i * sizeof(T), &v, sizeof(T));
    } else {
      LockScope scope(this);
      if (local_) {
        std::memcpy(static_cast<void*>(&local_[i]), &v, sizeof(T));
      } else {
        segment_->write(i * sizeof(T), &v, sizeof(T));
      }
    }
  }

  // The initial contents, written before any other process can have the handle.
  void init(const T* values, std::size_t n) {
    if (n == 0) return;
    if (local_) {
      std::memcpy(static_cast<void*>(local_), values, n * sizeof(T));
    } else {
      segment_->write(0, values, n * sizeof(T));
    }
  }

  T fetch_add_at(std::size_t i, T delta) {
    if (local_) return std::atomic_ref<T>(local_[i]).fetch_add(delta);
    return from_bits(segment_->remote_fetch_add(i * sizeof(T), sizeof(T), to_bits(delta)));
  }

  bool compare_exchange_at(std::size_t i, T& expected, T desired) {
    if (local_) return std::atomic_ref<T>(local_[i]).compare_exchange_strong(expected, desired);
    bool ok = false;
    expected = from_bits(segment_->remote_compare_exchange(i * sizeof(T), sizeof(T), to_bits(expected), to_bits(desired), &ok));
    return ok;
  }

  // Cells first .. first + n - 1 (the caller checked the range).
  std::vector<T> copy_out(std::size_t first = 0, std::optional<std::size_t> n = std::nullopt) const {
    std::vector<T> out(n.value_or(count() - first));
    if (out.empty()) return out;
    LockScope scope(this);  // a snapshot, as Python's arr[:] is
    if (local_ && atomic_cells) {
      for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = std::atomic_ref<T>(local_[first + i]).load(std::memory_order_relaxed);
      }
    } else if (local_) {
      std::memcpy(static_cast<void*>(out.data()), local_ + first, out.size() * sizeof(T));
    } else {
      segment_->read(first * sizeof(T), out.data(), out.size() * sizeof(T));
    }
    return out;
  }

  void copy_in(const std::vector<T>& values, std::size_t first = 0) {
    LockScope scope(this);
    if (local_) {
      std::memcpy(static_cast<void*>(local_ + first), values.data(), values.size() * sizeof(T));
    } else if (!values.empty()) {
      segment_->write(first * sizeof(T), values.data(), values.size() * sizeof(T));
    }
  }

  // Python's slice bounds, without clamping: 0 <= start <= stop <= count(), or IndexError naming them.
  void check_range(std::size_t start, std::size_t stop, const char* what) const {
    if (start > stop || stop > count()) {
      throw IndexError("mpx: " + std::string(what) + " [" + std::to_string(start) + ":" + std::to_string(stop) +
                       "] out of range for an Array of " + std::to_string(count()));
    }
  }

  std::shared_ptr<Segment> segment_;
  mutable SharedLock lock_;
  T* local_ = nullptr;

 private:
  // Holds the lock for a multi-byte access, if the object has one.
  struct LockScope {
    SharedLock* lock = nullptr;
    explicit LockScope(const Cells* cells) {
      if (cells->has_lock()) {
        lock = &cells->lock_;
        lock->lock();
      }
    }
    ~LockScope() {
      if (lock) lock->unlock();
    }
  };

  static T copy_of(const T& v) {
    T out;
    std::memcpy(static_cast<void*>(&out), &v, sizeof(T));
    return out;
  }
  T read_cell(std::size_t i) const {
    T out;
    segment_->read(i * sizeof(T), &out, sizeof(T));
    return out;
  }
  static std::uint64_t to_bits(T v) {
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
  }
  static T from_bits(std::uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
  }
  static std::shared_ptr<Segment> adopt_checked(SegmentRef ref) {
    check_element_type(ref, typeid(T).name());
    return Segment::adopt(std::move(ref));
  }
};

}  // namespace detail

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

/// Python's multiprocessing.shared_memory.SharedMemory(name=None, create=False, size=0, track=True).
///   mpx::SharedMemory block(std::nullopt, true, 1024);   // a new block with a generated name
///   mpx::SharedMemory same(block.name());                // attach to it by name (in this or another process)
/// The bytes are all yours (no header), so Python's SharedMemory(name) can attach to a block made here. A tracked
/// block (the default) is unlinked when the session ends, even if the root process was SIGKILLed; track = false
/// leaves it to you (and to unlink()). Attaching never registers anything, so a process that attaches and exits
/// never unlinks the block under the others' feet (CPython gh-82300).
class MPX_API SharedMemory : public detail::SharedHandle {
 public:
  /// create: a new block of `size` bytes (> 0), named `name` or a generated name; FileExistsError if taken.
  /// !create: attach to the block called `name`; FileNotFoundError if there is none.
  explicit SharedMemory(const std::optional<std::string>& name = std::nullopt, bool create = false,
                        std::size_t size = 0, bool track = true);
  /// A handle to the existing block `ref` (what a decoded argument is).
  SharedMemory(adopt_t, detail::SegmentRef ref);

  /// The mapped bytes. Throws ValueError once closed, or in remote mode (use read() and write() there).
  std::span<std::byte> buf() const;
  /// The block's name (Python: shm.name), without the leading '/'.
  const std::string& name() const noexcept { return ref_.name; }
  std::size_t size() const noexcept { return ref_.size; }  ///< The block's size in bytes (Python: shm.size).
  /// Copies out of / into the block; these work in remote mode too.
  std::vector<std::byte> read(std::size_t offset, std::size_t n) const;
  void write(std::size_t offset, std::span<const std::byte> bytes);  ///< Copies `bytes` into the block at `offset`.
  /// This handle stops using the block (the mapping goes when no copy of the handle uses it).
  void close();
  /// Removes the name (once, from any process); processes that have it mapped keep using it.
  /// FileNotFoundError if the name is already gone.
  void unlink();
  bool is_remote() const;  ///< Whether this handle goes through the coordinator instead of mapping the block.
  SharedMemory as_remote() const;  ///< The same block, reached through the coordinator (for tests, and other hosts).

  detail::SegmentRef segment_ref() const { return ref_; }  ///< Internal: what travels to another process.

 private:
  const detail::Segment& open_segment() const;
  detail::SegmentRef ref_;
  std::shared_ptr<detail::Segment> segment_;
};

/// A shared-memory handle (Value, Array, RawValue, RawArray, SharedMemory) that can be rebuilt from its segment.
template <class T>
concept SharedHandleType =
    std::is_base_of_v<detail::SharedHandle, T> && std::is_constructible_v<T, adopt_t, detail::SegmentRef>;

/// Shared-memory handles travel as arguments: their segment reference is what is encoded.
template <class T>
  requires SharedHandleType<T>
struct is_serializable<T> : std::true_type {};

}  // namespace mpx

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {

template <class T>
struct pack<T, std::enable_if_t<mpx::SharedHandleType<T>>> {
  template <class Stream>
  packer<Stream>& operator()(packer<Stream>& p, const T& handle) const {
    return p.pack(handle.segment_ref());
  }
};

template <class T>
struct as<T, std::enable_if_t<mpx::SharedHandleType<T>>> {
  T operator()(const msgpack::object& o) const { return T(mpx::adopt, o.as<mpx::detail::SegmentRef>()); }
};

template <class T>
struct convert<T, std::enable_if_t<mpx::SharedHandleType<T>>> {
  const msgpack::object& operator()(const msgpack::object& o, T& v) const {
    v = T(mpx::adopt, o.as<mpx::detail::SegmentRef>());
    return o;
  }
};

}  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack
