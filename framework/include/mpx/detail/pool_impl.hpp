// mpx/detail/pool_impl.hpp — what mpx/pool.hpp's templates are made of: the type-erased calls into the compiled
// pool (src/api/pool/), the encoding of a task's calls and the decoding of its results, and the bodies of Pool's
// submitting members. Included by mpx/pool.hpp after PoolOptions and Progress, which it uses; not a header of its own.
#pragma once

#include <mpx/detail/export.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>

namespace mpx {

namespace detail {

struct ResultCore;
struct StreamCore;
struct PoolCore;

// ---- results (compiled in src/api/pool/) ----
// A default-constructed Future or AsyncResult that was never assigned has no core: its members raise ValueError
// naming `type` instead of dereferencing null.
[[noreturn]] MPX_API void throw_empty_result(const char* type);
inline ResultCore& result_core(const std::shared_ptr<ResultCore>& core, const char* type) {
  if (!core) throw_empty_result(type);
  return *core;
}
MPX_API bool result_wait(ResultCore& core, const Timeout& timeout);  // false if the timeout passed first
MPX_API bool result_ready(const ResultCore& core);
// Python: ValueError if not ready.
MPX_API bool result_successful(const ResultCore& core);
// Waits (TimeoutError when the timeout passes) and rethrows the task's error.
MPX_API void result_check(ResultCore& core, const Timeout& timeout);
MPX_API const std::vector<std::string>& result_values(const ResultCore& core);  // per chunk
MPX_API std::size_t result_size(const ResultCore& core);                        // items in all
MPX_API bool result_single(const ResultCore& core);
MPX_API std::exception_ptr result_error(const ResultCore& core);
MPX_API bool result_cancelled(const ResultCore& core);
// Runs `callback` once the result is done (on the result thread), or at once on this thread if it already is.
MPX_API void result_add_done_callback(ResultCore& core, std::function<void()> callback);

using DoneCallback = std::function<void(ResultCore&)>;

// A growable byte buffer for msgpack's packer. write() is inline, so the packer's fixed-size writes (a tag and a
// few bytes) become plain stores instead of a library call each; growth is realloc, which moves large buffers
// without copying them.
class PackBuffer {
 public:
  PackBuffer() = default;
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  PackBuffer(PackBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  PackBuffer& operator=(PackBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }
  ~PackBuffer() { std::free(data_); }

  void write(const char* data, std::size_t size) {
    if (capacity_ - size_ < size) grow(size);
    std::memcpy(data_ + size_, data, size);
    size_ += size;
  }
  void reserve(std::size_t capacity) {
    if (capacity > capacity_) grow(capacity - size_);
  }
  void resize_down(std::size_t size) noexcept { size_ = std::min(size, size_); }
  std::size_t size() const noexcept { return size_; }
  std::string_view view() const noexcept { return {data_, size_}; }

 private:
  void grow(std::size_t more) {
    const std::size_t wanted = std::max(size_ + more, capacity_ * 2 + 64);
    void* grown = std::realloc(data_, wanted);
    if (!grown) throw std::bad_alloc();
    data_ = static_cast<char*>(grown);
    capacity_ = wanted;
  }
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

// The encoded argument tuples of a submission's calls, back to back in one buffer: a map of a million items costs
// a few buffer growths, not a million allocations. A chunk's payload is an array header and a slice of it.
class EncodedCalls {
 public:
  // Encodes one call's arguments as the function's parameter tuple; a serialization error is raised here, at the
  // caller, and leaves the calls added before it as they were.
  template <class R, class... P, class... A>
  void add(R (*)(P...), A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "mpx::Pool: wrong number of arguments for the task function");
    static_assert((std::is_constructible_v<std::decay_t<P>, A&&> && ...),
                  "mpx::Pool: an argument cannot be converted to the task function's parameter type");
    const std::size_t before = bytes_.size();
    try {
      msgpack::packer<PackBuffer>(bytes_).pack(std::tuple<std::decay_t<P>...>(std::forward<A>(args)...));
    } catch (const std::exception& e) {
      bytes_.resize_down(before);
      throw SerializationError(std::string("mpx: cannot encode a task's arguments: ") + e.what());
    }
    ends_.push_back(bytes_.size());
    // The first call tells what the rest will likely take: reserve for all of them at once.
    if (ends_.size() == 1 && expected_ > 1) bytes_.reserve(bytes_.size() * expected_ + bytes_.size() / 4 + 64);
  }
  void reserve(std::size_t calls) {
    ends_.reserve(calls);
    expected_ = calls;
  }
  std::size_t size() const noexcept { return ends_.size(); }
  bool empty() const noexcept { return ends_.empty(); }
  // The encoded calls first .. first + count - 1, back to back.
  std::string_view slice(std::size_t first, std::size_t count) const noexcept {
    if (count == 0) return {};
    const std::size_t begin = first == 0 ? 0 : ends_[first - 1];
    return bytes_.view().substr(begin, ends_[first + count - 1] - begin);
  }

 private:
  PackBuffer bytes_;
  std::vector<std::size_t> ends_;  // where each call's encoding ends in bytes_
  std::size_t expected_ = 0;
};

struct Submission {
  ErasedFunction function = nullptr;
  Trampoline trampoline = nullptr;
  EncodedCalls items;
  std::size_t chunksize = 1;
  bool single = false;             // apply: one value, not a list
  DoneCallback on_done;            // on the result thread
  Progress progress;
};

MPX_API std::shared_ptr<PoolCore> pool_start(PoolOptions options);
// Joins the pool `ref` names as one more submitter (pool_attach).
MPX_API std::shared_ptr<PoolCore> pool_attach(const ObjectRef& ref);
MPX_API ObjectRef pool_ref(const PoolCore& pool);
MPX_API bool pool_attached(const PoolCore& pool);
MPX_API std::shared_ptr<ResultCore> pool_submit(PoolCore& pool, Submission submission);
// Cancels a task that no worker has taken yet; false if it runs or ran already.
MPX_API bool pool_cancel(PoolCore& pool, ResultCore& result);
// 0 pending, 1 running, 2 finished.
MPX_API int pool_task_state(PoolCore& pool, ResultCore& result);
MPX_API std::size_t pool_processes(const PoolCore& pool);
MPX_API std::size_t pool_default_chunksize(const PoolCore& pool, std::size_t items);
MPX_API void pool_close(PoolCore& pool);
MPX_API void pool_terminate(PoolCore& pool);
MPX_API void pool_join(PoolCore& pool);
MPX_API void pool_require_running(const PoolCore& pool);
MPX_API std::vector<pid_t> pool_pids(const PoolCore& pool);
// The scheduler's counters for this pool (pool_stats): for tests and diagnostics.
struct PoolStats {
  std::uint64_t queued = 0, held = 0, workers = 0, requeued = 0, lost = 0;
};
MPX_API PoolStats pool_stats(PoolCore& pool);
MPX_API std::uint64_t pool_id(const PoolCore& pool);  // the scheduler's object id
// Marks the calling thread as waiting on the pool, so that Ctrl-C interrupts it instead of killing the program.
struct MPX_API WaitingCaller {
  WaitingCaller();
  ~WaitingCaller();
  WaitingCaller(const WaitingCaller&) = delete;
  WaitingCaller& operator=(const WaitingCaller&) = delete;
};

// ---- streams (imap, imap_unordered) ----
MPX_API std::shared_ptr<StreamCore> stream_open(PoolCore& pool, ErasedFunction function, Trampoline trampoline, bool ordered);
MPX_API void stream_feed(StreamCore& stream, const EncodedCalls& items);
MPX_API std::size_t stream_outstanding(const StreamCore& stream);  // fed but not yet returned by next
// The next chunk's results (a msgpack array); rethrows a task's error; TimeoutError when the timeout passes.
MPX_API std::string stream_next(StreamCore& stream, const Timeout& timeout);
MPX_API void stream_cancel(StreamCore& stream);  // cancels the tasks no worker has taken yet (Executor::map's timeout)

// Calls a progress callback; one that throws is reported on stderr and does not stop the results.
MPX_API void report_progress(const Progress& progress, std::size_t done, std::size_t total) noexcept;
// What is left until `deadline` (never negative); nullopt without one.
MPX_API Timeout time_left(const std::optional<std::chrono::steady_clock::time_point>& deadline);

// Which call of its chunk the worker's thread is running: names the failing call when one raises.
MPX_API std::uint64_t& chunk_offset() noexcept;

// A task's trampoline runs a whole chunk: `args` is a msgpack array of argument arrays, `result` becomes the msgpack
// array of the results (nil for void), so a chunk costs one decode and one encode, not one per call.
template <class R, class... P>
void chunk_trampoline(ErasedFunction function, std::string_view args, std::string& result) {
  auto typed = reinterpret_cast<R (*)(P...)>(function);
  const std::uint32_t count = array_length(args);
  PackBuffer out;
  out.reserve(16 + 8 * std::size_t{count});
  msgpack::packer<PackBuffer> pk(out);
  pk.pack_array(count);
  auto& offset = chunk_offset();
  // One call decoded at a time: a chunk of any size stays in cache.
  for_each_element(args, [&](std::uint32_t i, const msgpack::object& call) {
    offset = i;
    if (call.type != msgpack::type::ARRAY || call.via.array.size != sizeof...(P)) {
      throw SerializationError("mpx: a call's arguments do not match the function's " +
                               std::to_string(sizeof...(P)) + " parameters");
    }
    // as<> rather than convert(): handles such as mpx::Value have no default constructor.
    auto params = [&call] {
      try {
        return call.as<std::tuple<std::decay_t<P>...>>();
      } catch (const std::exception& e) {
        throw SerializationError(std::string("mpx: cannot decode a call's arguments: ") + e.what());
      }
    }();
    if constexpr (std::is_void_v<R>) {
      std::apply(typed, std::move(params));
      pk.pack_nil();
    } else {
      R value = std::apply(typed, std::move(params));
      try {
        pk.pack(value);
      } catch (const std::exception& e) {
        throw SerializationError(std::string("mpx: cannot encode the result: ") + e.what());
      }
    }
  });
  result.assign(out.view());
}

template <class R, class... P>
Trampoline chunk_trampoline_for(R (*)(P...)) {
  static_assert(std::is_void_v<R> || Serializable<R>, "mpx::Pool: the task's return type is not serializable");
  static_assert((Serializable<std::decay_t<P>> && ...), "mpx::Pool: a parameter type of the task is not serializable");
  return &chunk_trampoline<R, P...>;
}

// A function's erased pointer and chunk trampoline, from a plain function or a captureless lambda.
template <class F>
std::pair<ErasedFunction, Trampoline> erase(F&& function) {
  static_assert(PlainFunctionLike<std::remove_cvref_t<F>>,
                "mpx::Pool: a task must be a plain function or a captureless lambda (its identity is its address)");
  auto typed = +function;
  return {reinterpret_cast<ErasedFunction>(typed), chunk_trampoline_for(static_cast<decltype(typed)>(nullptr))};
}

// Adds one call's arguments to `calls` (a serialization error is raised here).
template <class F, class... A>
void encode_task_args(EncodedCalls& calls, F&& function, A&&... args) {
  static_assert(PlainFunctionLike<std::remove_cvref_t<F>>,
                "mpx::Pool: a task must be a plain function or a captureless lambda (its identity is its address)");
  calls.add(+function, std::forward<A>(args)...);
}

template <class F, class Tuple>
void encode_tuple(EncodedCalls& calls, F&& function, Tuple&& args) {
  std::apply([&](auto&&... a) { encode_task_args(calls, function, std::forward<decltype(a)>(a)...); },
             std::forward<Tuple>(args));
}

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

template <class T>
T decode_result(const ResultCore& core) {
  const auto& chunks = result_values(core);  // each chunk's results, a msgpack array
  if (result_single(core)) {
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      return std::get<0>(decode<std::tuple<T>>(chunks.at(0)));
    }
  } else {
    if constexpr (is_vector<T>::value) {
      T out;
      out.reserve(result_size(core));
      for (const auto& chunk : chunks) decode_append(chunk, out);
      if (out.size() != result_size(core)) throw SerializationError("mpx: a map returned the wrong number of results");
      return out;
    } else {
      throw SerializationError("mpx: a map result read as a single value");
    }
  }
}

// void results travel as nil; in a list they read as mpx::Object.
template <class R>
using list_value_t = std::conditional_t<std::is_void_v<R>, Object, R>;

template <class F, class... A>
using call_result_t = std::invoke_result_t<decltype(+std::declval<F>()), A...>;

template <class F, class Range>
using map_result_t = list_value_t<call_result_t<F, std::ranges::range_reference_t<Range>>>;

template <class F, class Range>
using starmap_result_t = list_value_t<decltype(std::apply(+std::declval<F>(),
                                                          std::declval<std::ranges::range_value_t<Range>>()))>;

template <class T, class Callback, class ErrorCallback>
DoneCallback make_done(Callback callback, ErrorCallback error_callback) {
  if constexpr (std::is_same_v<Callback, std::nullptr_t> && std::is_same_v<ErrorCallback, std::nullptr_t>) {
    return {};
  } else {
    return [callback = std::move(callback), error_callback = std::move(error_callback)](ResultCore& core) {
      if (auto error = result_error(core)) {
        if constexpr (!std::is_same_v<ErrorCallback, std::nullptr_t>) {
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            error_callback(e);
          }
        }
      } else if constexpr (!std::is_same_v<Callback, std::nullptr_t>) {
        if constexpr (std::is_void_v<T>) {
          callback();
        } else {
          callback(decode_result<T>(core));
        }
      }
    };
  }
}

}  // namespace detail

}  // namespace mpx

// Here: it builds on EncodedCalls and the result types above, and the helpers below build on it.
#include <mpx/detail/map_args.hpp>

namespace mpx {

template <class T>
class AsyncResult;
template <class R>
class IMapIterator;

namespace detail {

// An IMapIterator's state, shared by its copies: pulls input as results are consumed, with at most `window` items in
// flight.
template <class R>
struct ImapState {
  std::shared_ptr<StreamCore> stream;
  std::function<bool(EncodedCalls& chunk)> produce;
  std::size_t window;
  Progress progress;
  std::size_t total;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  bool exhausted = false;
  std::size_t done = 0;  // results taken in
  std::vector<R> buffer = {};  // the current chunk's results
  std::size_t position = 0;
  std::exception_ptr input_error = nullptr;  // raised once, after the results of the items before it

  std::optional<R> next(const Timeout& timeout) {
    if (position < buffer.size()) return std::move(buffer[position++]);
    fill();
    if (exhausted && stream_outstanding(*stream) == 0) {
      if (input_error) std::rethrow_exception(std::exchange(input_error, nullptr));
      return std::nullopt;
    }
    buffer.clear();
    std::string values;
    try {
      values = stream_next(*stream, timeout ? timeout : time_left(deadline));
    } catch (const TimeoutError&) {
      // Executor::map's own timeout (not one given to this next()): the calls not started yet never will be.
      if (!timeout && deadline) stream_cancel(*stream);
      throw;
    }
    mpx::decode_append(values, buffer);
    position = 0;
    if (buffer.empty()) throw SerializationError("mpx: an imap chunk returned no results");
    done += buffer.size();
    if (progress) report_progress(progress, done, total);
    return std::move(buffer[position++]);
  }

  // Submits input until the window is full or the input ends.
  void fill() {
    while (!exhausted && stream_outstanding(*stream) < window) {
      EncodedCalls chunk;
      bool more = false;
      try {
        more = produce(chunk);
      } catch (...) {
        input_error = std::current_exception();
      }
      if (!chunk.empty()) stream_feed(*stream, chunk);
      if (!more || input_error) exhausted = true;
    }
  }
};

// ---- the bodies of Pool's submitting members ----

template <class R, class F>
AsyncResult<R> pool_apply(PoolCore& pool, F& f, EncodedCalls call, DoneCallback on_done) {
  auto [function, trampoline] = erase(f);
  Submission s;
  s.function = function;
  s.trampoline = trampoline;
  s.items = std::move(call);
  s.single = true;
  s.on_done = std::move(on_done);
  return AsyncResult<R>(pool_submit(pool, std::move(s)));
}

template <class T, class F>
AsyncResult<T> pool_map(PoolCore& pool, F& f, EncodedCalls items, std::optional<std::size_t> chunksize,
                        DoneCallback on_done, Progress progress) {
  if (chunksize && *chunksize == 0) throw ValueError("mpx: chunksize must be at least 1");
  auto [function, trampoline] = erase(f);
  Submission s;
  s.function = function;
  s.trampoline = trampoline;
  s.chunksize = chunksize.value_or(pool_default_chunksize(pool, items.size()));
  s.items = std::move(items);
  s.on_done = std::move(on_done);
  s.progress = std::move(progress);
  return AsyncResult<T>(pool_submit(pool, std::move(s)));
}

template <class R, class F>
IMapIterator<R> pool_stream(PoolCore& pool, F& f, typename IMapIterator<R>::Producer produce, std::size_t chunksize,
                            bool ordered, std::size_t window, Progress progress, std::size_t total,
                            typename IMapIterator<R>::Deadline deadline) {
  if (chunksize == 0) throw ValueError("mpx: chunksize must be at least 1");
  pool_require_running(pool);
  auto [function, trampoline] = erase(f);
  auto stream = stream_open(pool, function, trampoline, ordered);
  return IMapIterator<R>(std::move(stream), std::move(produce), window, std::move(progress), total, deadline);
}

template <class R, class F, class Range>
IMapIterator<R> pool_imap(PoolCore& pool, F& f, Range&& items, std::size_t chunksize, bool ordered,
                          Progress progress) {
  std::size_t total = 0;
  if constexpr (std::ranges::sized_range<Range>) total = static_cast<std::size_t>(std::ranges::size(items));
  const std::size_t window = std::max<std::size_t>(chunksize * pool_processes(pool) * 4, 64);
  return pool_stream<R>(pool, f, zip_producer(f, chunksize, std::forward<Range>(items)), chunksize, ordered, window,
                        std::move(progress), total, std::nullopt);
}

inline PoolOptions pool_options(std::optional<int> processes, BoundCall initializer, std::size_t maxtasksperchild) {
  PoolOptions options;
  options.processes = processes;
  options.initializer = std::move(initializer);
  options.maxtasksperchild = maxtasksperchild;
  return options;
}

}  // namespace detail

}  // namespace mpx
