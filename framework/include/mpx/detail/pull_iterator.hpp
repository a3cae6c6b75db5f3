// mpx/detail/pull_iterator.hpp — the input iterator behind imap's, Executor::map's and as_completed's ranges.
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>

namespace mpx::detail {

// An input iterator over anything with `std::optional<T> next()`: each step pulls one value; nullopt ends it. A
// default-constructed one is the end, so begin() and end() have one type: the ranges are common ranges, and
// std::vector(r.begin(), r.end()) works as Python's list(r).
template <class Owner, class T>
class PullIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using reference = const T&;
  using pointer = const T*;

  PullIterator() = default;
  explicit PullIterator(Owner* owner) : owner_(owner) { ++*this; }
  reference operator*() const { return *current_; }
  pointer operator->() const { return &*current_; }
  PullIterator& operator++() {
    current_ = owner_->next();
    return *this;
  }
  // A copy that still holds the value it pulled last: `*it++` reads it, as an input iterator must allow.
  PullIterator operator++(int) {
    PullIterator before = *this;
    ++*this;
    return before;
  }
  // Two ends are equal; an iterator that still holds a value is equal only to one of the same range.
  friend bool operator==(const PullIterator& a, const PullIterator& b) {
    if (a.current_.has_value() != b.current_.has_value()) return false;
    return !a.current_.has_value() || a.owner_ == b.owner_;
  }
  bool operator==(std::default_sentinel_t) const { return !current_.has_value(); }

 private:
  Owner* owner_ = nullptr;
  std::optional<T> current_;
};

}  // namespace mpx::detail
