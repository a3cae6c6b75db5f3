// mpx/detail/snapshot_iterator.hpp — iteration over a copy: what a range-for over a manager proxy walks.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <vector>

namespace mpx::detail {

// A forward iterator over a vector it shares with its copies: `for (auto x : proxy)` walks the one copy the proxy's
// begin() fetched when the loop began.
template <class T>
class SnapshotIterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using reference = const T&;
  using pointer = const T*;

  SnapshotIterator() = default;
  SnapshotIterator(std::shared_ptr<const std::vector<T>> items, std::size_t position)
      : items_(std::move(items)), position_(position) {}
  reference operator*() const { return (*items_)[position_]; }
  pointer operator->() const { return &(*items_)[position_]; }
  SnapshotIterator& operator++() {
    ++position_;
    return *this;
  }
  SnapshotIterator operator++(int) {
    SnapshotIterator before = *this;
    ++position_;
    return before;
  }
  // A default-constructed iterator is the end: begin() takes the copy, end() needs none.
  friend bool operator==(const SnapshotIterator& a, const SnapshotIterator& b) {
    if (a.at_end() || b.at_end()) return a.at_end() == b.at_end();
    return a.items_ == b.items_ && a.position_ == b.position_;
  }

 private:
  bool at_end() const noexcept { return !items_ || position_ >= items_->size(); }
  std::shared_ptr<const std::vector<T>> items_;
  std::size_t position_ = 0;
};

}  // namespace mpx::detail
