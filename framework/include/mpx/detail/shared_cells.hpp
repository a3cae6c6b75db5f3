// mpx/detail/shared_cells.hpp — the storage that Value, Array, RawValue and RawArray share: `count` cells of a
// trivially copyable T in one segment, read and written atomically, under the segment's lock, or through the
// coordinator. Internal: the public classes are in mpx/shared.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include <mpx/detail/shared_segment.hpp>
#include <mpx/errors.hpp>
#include <mpx/shared_lock.hpp>

namespace mpx::detail {

// The storage common to Value, Array, RawValue and RawArray: `count` cells of T in one segment.
template <class T>
class Cells {
  static_assert(std::is_trivially_copyable_v<T>,
                "mpx::Value<T>, Array<T>, RawValue<T>, RawArray<T>: T must be trivially copyable (arithmetic types, "
                "enums, and arrays or structs of them). It lives in shared memory that other processes map, so it "
                "cannot own heap memory (std::string, std::vector) or have virtual functions");
  static_assert(!std::is_const_v<T> && !std::is_volatile_v<T>, "mpx::Value<T>/Array<T>: T must not be const or volatile");

 public:
  static constexpr bool atomic_cells =
      (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8) && std::atomic_ref<T>::is_always_lock_free;
  static constexpr bool integral = std::is_integral_v<T> && !std::is_same_v<T, bool>;

  // What travels to another process: handle.hpp's msgpack adaptors encode it (the handle is Adoptable).
  const SegmentRef& ref() const noexcept { return segment_->ref(); }
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

}  // namespace mpx::detail
