// mpx/detail/map_args.hpp — the input side of imap and Executor::map: ranges zipped to the shortest, read lazily,
// and Executor::map's trailing (timeout, chunksize, progress) arguments.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mpx::detail {

// How many of A... are input ranges, counted from the front.
template <class... A>
constexpr std::size_t leading_ranges() {
  constexpr bool is_range[] = {std::ranges::input_range<A>..., false};
  std::size_t n = 0;
  while (is_range[n]) ++n;
  return n;
}

// A producer for IMapIterator: encodes calls f(x, y, ...) over the ranges in step, `chunksize` at a time, and ends
// with the shortest range (Python's map(f, xs, ys)). The ranges live in the producer: a view or an rvalue container
// is moved in, an lvalue container copied.
template <class F, class... Ranges>
std::function<bool(EncodedCalls&)> zip_producer(F& f, std::size_t chunksize, Ranges&&... ranges) {
  using Inputs = std::tuple<std::remove_cvref_t<Ranges>...>;
  using Positions = std::tuple<std::ranges::iterator_t<std::remove_cvref_t<Ranges>>...>;
  auto inputs = std::make_shared<Inputs>(std::forward<Ranges>(ranges)...);
  auto positions =
      std::make_shared<Positions>(std::apply([](auto&... r) { return Positions(std::ranges::begin(r)...); }, *inputs));
  return [inputs, positions, chunksize, fn = +f](EncodedCalls& chunk) {
    auto step = [&]<std::size_t... I>(std::index_sequence<I...>) {
      if (((std::get<I>(*positions) == std::ranges::end(std::get<I>(*inputs))) || ...)) return false;
      encode_task_args(chunk, fn, *std::get<I>(*positions)...);
      (++std::get<I>(*positions), ...);
      return true;
    };
    while (chunk.size() < chunksize && step(std::index_sequence_for<Ranges...>{})) {
    }
    return !chunk.empty();
  };
}

// The zipped input's length when every range knows its size; 0 (unknown) otherwise.
template <class... Ranges>
std::size_t zip_size(const Ranges&... ranges) {
  if constexpr ((std::ranges::sized_range<const Ranges> && ...)) {
    return std::min({static_cast<std::size_t>(std::ranges::size(ranges))...});
  } else {
    ((void)ranges, ...);
    return 0;
  }
}

// map(f, ranges..., [timeout], [chunksize], [progress]): what follows the ranges, by position.
struct MapOptions {
  Timeout timeout;
  std::size_t chunksize = 1;
  Progress progress;
};

template <std::size_t N, class Tuple>
MapOptions map_options(Tuple& all) {
  constexpr std::size_t size = std::tuple_size_v<Tuple>;
  static_assert(N >= 1, "mpx: map needs at least one input range");
  static_assert(size <= N + 3, "mpx: map(f, ranges..., timeout, chunksize, progress): too many arguments after the ranges");
  MapOptions options;
  if constexpr (size > N) options.timeout = std::get<N>(all);
  if constexpr (size > N + 1) options.chunksize = static_cast<std::size_t>(std::get<N + 1>(all));
  if constexpr (size > N + 2) options.progress = std::get<N + 2>(all);
  return options;
}

template <class F, class... Ranges>
using zip_result_t = list_value_t<call_result_t<F, std::ranges::range_reference_t<Ranges>...>>;

}  // namespace mpx::detail
