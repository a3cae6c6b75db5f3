/// \file
/// mpx/pool.hpp — mpx::Pool (Python's multiprocessing.Pool) and mpx::AsyncResult.
///
/// Workers are long-lived processes started with the pool's start method. Tasks are plain functions or captureless
/// lambdas (function identity, no registration), grouped into chunks; the coordinator's pool scheduler hands batches
/// of chunks to workers and streams the results back to this process's result thread.
///
/// Callbacks (apply_async/map_async callback and error_callback, the map progress callback) all run on the pool's one
/// result thread, in the order the results arrive (completion order, not submission order). A callback that blocks
/// delays the ones after it; one that throws is reported on stderr and does not stop the pool.
///
/// What Python does not do: a worker killed mid-task does not hang the caller. Its tasks are retried on a fresh
/// worker up to max_retries times, then fail with mpx::WorkerLost. Ctrl-C while a thread waits on a pool stops the
/// workers and raises mpx::Interrupted in the waiting threads. An initializer that raises breaks the pool
/// (mpx::BrokenProcessPool) instead of having its workers restarted for ever.
///
/// A pool can be shared: its ref() travels as an argument or a queue item (or comes from a topology's objects), and
/// Pool::attach(ref) gives the receiving process an *attached* Pool that submits to the same workers and receives its
/// own results. Python has no
/// shared pool; an attached handle's close() and terminate() (and its destructor) detach it only: its queued tasks
/// are dropped, and the pool goes on for its owner and the other handles. If the owner ends, the attached handle's
/// waiting calls fail at once with mpx::BrokenProcessPool; if it terminates the pool, with mpx::CancelledError (and
/// tasks an attached handle submits after the owner's close() are cancelled).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <algorithm>
#include <iterator>
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

#include <mpx/detail/pull_iterator.hpp>
#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>
#include <mpx/process.hpp>

namespace mpx {

/// Called on the result thread after each chunk of a map completes: (items done, items in all).
using Progress = std::function<void(std::size_t done, std::size_t total)>;

/// Pool's settings: Python's processes, initializer/initargs and maxtasksperchild, a start method, and mpx's retry
/// policy for tasks whose worker dies.
struct PoolOptions {
  std::optional<int> processes;          ///< unset: cpu_count()
  std::optional<BoundCall> initializer;  ///< mpx::bind(init, args...): runs once in every worker before its first task
  std::size_t maxtasksperchild = 0;      ///< 0: workers live as long as the pool
  unsigned max_retries = 3;              ///< reruns of a task whose worker died; 0: fail at the first death
  std::optional<StartMethod> method;     ///< unset: get_start_method()
  /// Executor semantics: the first worker death fails every pending task with BrokenProcessPool and breaks the pool.
  bool broken_on_worker_death = false;
};

namespace detail {

struct ResultCore;
struct StreamCore;
struct PoolCore;

// ---- results (compiled in src/api/pool.cpp) ----
// A default-constructed Future or AsyncResult that was never assigned has no core: its members raise ValueError
// naming `type` instead of dereferencing null.
[[noreturn]] void throw_empty_result(const char* type);
inline ResultCore& result_core(const std::shared_ptr<ResultCore>& core, const char* type) {
  if (!core) throw_empty_result(type);
  return *core;
}
bool result_wait(ResultCore& core, const Timeout& timeout);  // false if the timeout passed first
bool result_ready(const ResultCore& core);
// Python: ValueError if not ready.
bool result_successful(const ResultCore& core);
// Waits (TimeoutError when the timeout passes) and rethrows the task's error.
void result_check(ResultCore& core, const Timeout& timeout);
const std::vector<std::string>& result_values(const ResultCore& core);  // per chunk
std::size_t result_size(const ResultCore& core);                        // items in all
bool result_single(const ResultCore& core);
std::exception_ptr result_error(const ResultCore& core);
bool result_cancelled(const ResultCore& core);
// Runs `callback` once the result is done (on the result thread), or at once on this thread if it already is.
void result_add_done_callback(ResultCore& core, std::function<void()> callback);

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

std::shared_ptr<PoolCore> pool_start(PoolOptions options);
// Joins the pool `ref` names as one more submitter (pool_attach).
std::shared_ptr<PoolCore> pool_attach(const ObjectRef& ref);
ObjectRef pool_ref(const PoolCore& pool);
bool pool_attached(const PoolCore& pool);
std::shared_ptr<ResultCore> pool_submit(PoolCore& pool, Submission submission);
// Cancels a task that no worker has taken yet; false if it runs or ran already.
bool pool_cancel(PoolCore& pool, ResultCore& result);
// 0 pending, 1 running, 2 finished.
int pool_task_state(PoolCore& pool, ResultCore& result);
std::size_t pool_processes(const PoolCore& pool);
std::size_t pool_default_chunksize(const PoolCore& pool, std::size_t items);
void pool_close(PoolCore& pool);
void pool_terminate(PoolCore& pool);
void pool_join(PoolCore& pool);
void pool_require_running(const PoolCore& pool);
std::vector<pid_t> pool_pids(const PoolCore& pool);
// The scheduler's counters for this pool (pool_stats): for tests and diagnostics.
struct PoolStats {
  std::uint64_t queued = 0, held = 0, workers = 0, requeued = 0, lost = 0;
};
PoolStats pool_stats(PoolCore& pool);
std::uint64_t pool_id(const PoolCore& pool);  // the scheduler's object id
// Marks the calling thread as waiting on the pool, so that Ctrl-C interrupts it instead of killing the program.
struct WaitingCaller {
  WaitingCaller();
  ~WaitingCaller();
  WaitingCaller(const WaitingCaller&) = delete;
  WaitingCaller& operator=(const WaitingCaller&) = delete;
};

// ---- streams (imap, imap_unordered) ----
std::shared_ptr<StreamCore> stream_open(PoolCore& pool, ErasedFunction function, Trampoline trampoline, bool ordered);
void stream_feed(StreamCore& stream, const EncodedCalls& items);
std::size_t stream_outstanding(const StreamCore& stream);  // fed but not yet returned by next
// The next chunk's results (a msgpack array); rethrows a task's error; TimeoutError when the timeout passes.
std::string stream_next(StreamCore& stream, const Timeout& timeout);
void stream_cancel(StreamCore& stream);  // cancels the tasks no worker has taken yet (Executor::map's timeout)

// Calls a progress callback; one that throws is reported on stderr and does not stop the results.
void report_progress(const Progress& progress, std::size_t done, std::size_t total) noexcept;
// What is left until `deadline` (never negative); nullopt without one.
Timeout time_left(const std::optional<std::chrono::steady_clock::time_point>& deadline);

// Which call of its chunk the worker's thread is running: names the failing call when one raises.
std::uint64_t& chunk_offset() noexcept;

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

}  ///< namespace mpx

/// Here, not at the top: it builds on EncodedCalls and the result types above.
#include <mpx/detail/map_args.hpp>

namespace mpx {

/// Python's AsyncResult: the eventual result of apply_async or map_async.
template <class T>
class AsyncResult {
 public:
  /// An empty result, to assign to later; until then its other members raise ValueError.
  AsyncResult() = default;
  /// Internal: made by the Pool.
  explicit AsyncResult(std::shared_ptr<detail::ResultCore> core) : core_(std::move(core)) {}

  /// The result once ready; TimeoutError if the timeout passes first. A task's exception is raised here as
  /// mpx::RemoteError (type, message, worker pid, task index); a lost worker as mpx::WorkerLost.
  T get(const Timeout& timeout = std::nullopt) const {
    detail::result_check(checked(), timeout);
    return detail::decode_result<T>(checked());
  }
  /// Waits until ready or the timeout passes; returns ready().
  bool wait(const Timeout& timeout = std::nullopt) const { return detail::result_wait(checked(), timeout); }
  /// Whether the call has completed (a result or an error).
  bool ready() const { return detail::result_ready(checked()); }
  /// Whether it completed without an error; ValueError if it is not ready yet.
  bool successful() const { return detail::result_successful(checked()); }

  const std::shared_ptr<detail::ResultCore>& core() const noexcept { return core_; }  ///< Internal: the shared result.

 private:
  detail::ResultCore& checked() const { return detail::result_core(core_, "AsyncResult"); }
  std::shared_ptr<detail::ResultCore> core_;
};

/// The lazy iterator of imap and imap_unordered (and Executor::map's results): pulls input as results are consumed,
/// with at most a bounded number of items in flight, so an unbounded generator works. Also a common range:
/// for (auto y : pool.imap(f, xs)), or std::vector(it.begin(), it.end()).
template <class R>
class IMapIterator {
 public:
  /// Encodes the next chunk into `chunk`: false at the end of the input. If the input throws, what it gave before
  /// stays in `chunk` and the exception goes on.
  using Producer = std::function<bool(detail::EncodedCalls& chunk)>;
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;  ///< When next() raises TimeoutError, if ever.

  /// `progress` runs on the iterating thread as each chunk's results come in, with the input's size as the total
  /// (0 when the input has no size). `deadline` bounds every next() that is given no timeout of its own.
  IMapIterator(std::shared_ptr<detail::StreamCore> stream, Producer produce, std::size_t window,
               Progress progress = {}, std::size_t total = 0, Deadline deadline = std::nullopt)
      : state_(std::make_shared<State>(State{std::move(stream), std::move(produce), window, std::move(progress),
                                             total, deadline})) {}

  /// The next result, or nullopt at the end. TimeoutError if none arrives in time (Python's next(timeout)). An input
  /// that throws at item k ends the stream as Python's does: the results of items 0..k-1 first, then its exception
  /// once, then the end.
  std::optional<R> next(const Timeout& timeout = std::nullopt) {
    auto& s = *state_;
    if (s.position < s.buffer.size()) return std::move(s.buffer[s.position++]);
    fill();
    if (s.exhausted && detail::stream_outstanding(*s.stream) == 0) {
      if (s.input_error) std::rethrow_exception(std::exchange(s.input_error, nullptr));
      return std::nullopt;
    }
    s.buffer.clear();
    std::string values;
    try {
      values = detail::stream_next(*s.stream, timeout ? timeout : detail::time_left(s.deadline));
    } catch (const TimeoutError&) {
      // Executor::map's own timeout (not one given to this next()): the calls not started yet never will be.
      if (!timeout && s.deadline) detail::stream_cancel(*s.stream);
      throw;
    }
    mpx::decode_append(values, s.buffer);
    s.position = 0;
    if (s.buffer.empty()) throw SerializationError("mpx: an imap chunk returned no results");
    s.done += s.buffer.size();
    if (s.progress) detail::report_progress(s.progress, s.done, s.total);
    return std::move(s.buffer[s.position++]);
  }

  // Submits input until the window is full or the input ends.
  /// Internal: submits every task of the input now (Executor::map submits all calls at once, as Python does).
  void fill() {
    auto& s = *state_;
    while (!s.exhausted && detail::stream_outstanding(*s.stream) < s.window) {
      detail::EncodedCalls chunk;
      bool more = false;
      try {
        more = s.produce(chunk);
      } catch (...) {
        s.input_error = std::current_exception();
      }
      if (!chunk.empty()) detail::stream_feed(*s.stream, chunk);
      if (!more || s.input_error) s.exhausted = true;
    }
  }

  using iterator = detail::PullIterator<IMapIterator, R>;  ///< An input iterator over next()'s results.
  /// Range-for support: `for (auto y : pool.imap(f, xs))`; each step may raise the task's error.
  iterator begin() { return iterator(this); }
  iterator end() { return {}; }  ///< The end of the results.

 private:
  struct State {
    std::shared_ptr<detail::StreamCore> stream;
    Producer produce;
    std::size_t window;
    Progress progress;
    std::size_t total;
    Deadline deadline;
    bool exhausted = false;
    std::size_t done = 0;  ///< results taken in
    std::vector<R> buffer = {};  ///< the current chunk's results
    std::size_t position = 0;
    std::exception_ptr input_error = nullptr;  ///< raised once, after the results of the items before it
  };
  std::shared_ptr<State> state_;
};

/// Python's multiprocessing.Pool: a fixed set of worker processes that run tasks (plain functions or captureless
/// lambdas, with msgpack arguments). A task's exception comes back as mpx::RemoteError; a worker that dies is replaced
/// and its task run again up to max_retries times, then fails as mpx::WorkerLost. Ctrl-C during a call raises
/// mpx::Interrupted. A task given to a closed or terminated pool raises mpx::ValueError. Move-only.
class Pool {
 public:
  /// Pool(processes): processes defaults to cpu_count().
  explicit Pool(std::optional<int> processes = std::nullopt);
  /// Pool(processes, initializer, initargs, maxtasksperchild), as Python's positional form.
  template <class I, class... A>
  Pool(std::optional<int> processes, I&& initializer, std::tuple<A...> initargs = {}, std::size_t maxtasksperchild = 0)
      : Pool(make_options(processes, std::apply([&](auto&&... a) { return mpx::bind(initializer, a...); }, initargs),
                          maxtasksperchild)) {}
  explicit Pool(PoolOptions options);  ///< A pool with every setting given.
  /// An attached handle on the pool `ref` names (another process's, a topology's): same workers, own results.
  Pool(adopt_t, const ObjectRef& ref) : core_(detail::pool_attach(ref)) {}
  static Pool attach(const ObjectRef& ref) { return Pool(adopt, ref); }  ///< The same as Pool(adopt, ref).
  /// A pool still running is terminated, as Python's `with Pool() as p:` does on exit; an attached handle detaches.
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  Pool(Pool&&) noexcept = default;  ///< Moves the pool; the moved-from object must not be used.
  Pool& operator=(Pool&&) noexcept = default;  ///< Moves the pool; the moved-from object must not be used.

  // ---- apply ----
  /// Python's apply(f, args): runs f(args...) in a worker and waits for its result (the task's error is raised here).
  template <class F, class... A>
    requires std::is_invocable_v<decltype(+std::declval<F>()), A...>
  auto apply(F&& f, A&&... args) {
    detail::WaitingCaller waiting;  // from before the submit: see map()
    return apply_async(std::forward<F>(f), std::forward<A>(args)...).get();
  }

  /// Python's apply_async(f, args): schedules f(args...) and returns its AsyncResult at once. The arguments are encoded
  /// here, so a serialization error is raised at the caller.
  template <class F, class... A>
    requires std::is_invocable_v<decltype(+std::declval<F>()), A...>
  AsyncResult<detail::call_result_t<F, A...>> apply_async(F&& f, A&&... args) {
    detail::EncodedCalls call;
    detail::encode_task_args(call, f, std::forward<A>(args)...);
    return apply_with<detail::call_result_t<F, A...>>(f, std::move(call), {});
  }

  /// apply_async(f, std::tuple{args...}, callback, error_callback): callback(result) and error_callback(const
  /// std::exception&) run on the result thread. Pass nullptr for either to leave it out.
  template <class F, class... A, class Callback, class ErrorCallback = std::nullptr_t>
  AsyncResult<detail::call_result_t<F, A...>> apply_async(F&& f, std::tuple<A...> args, Callback callback,
                                                          ErrorCallback error_callback = nullptr) {
    using R = detail::call_result_t<F, A...>;
    detail::EncodedCalls call;
    detail::encode_tuple(call, f, std::move(args));
    return apply_with<R>(f, std::move(call), detail::make_done<R>(std::move(callback), std::move(error_callback)));
  }

  // ---- map ----
  /// Blocks until every result is in, in input order. chunksize unset: ceil(n / (4 x processes)), as Python.
  template <class F, std::ranges::input_range Range>
  std::vector<detail::map_result_t<F, Range>> map(F&& f, Range&& items, std::optional<std::size_t> chunksize = {},
                                                  Progress progress = {}) {
    // Waiting from before the submit: a Ctrl-C that comes once a worker runs a task, before get() begins to wait,
    // still interrupts the map instead of killing the program.
    detail::WaitingCaller waiting;
    return map_async(std::forward<F>(f), std::forward<Range>(items), chunksize, nullptr, nullptr,
                     std::move(progress))
        .get();
  }

  template <class F, std::ranges::input_range Range, class Callback = std::nullptr_t,
            class ErrorCallback = std::nullptr_t>
  /// Python's map_async: map() without waiting. callback(results) and error_callback(const std::exception&) run on the
  /// result thread; `progress` is called after each chunk. chunksize 0 raises mpx::ValueError.
  AsyncResult<std::vector<detail::map_result_t<F, Range>>> map_async(F&& f, Range&& items,
                                                                      std::optional<std::size_t> chunksize = {},
                                                                      Callback callback = nullptr,
                                                                      ErrorCallback error_callback = nullptr,
                                                                      Progress progress = {}) {
    detail::EncodedCalls encoded;
    if constexpr (std::ranges::sized_range<Range>) encoded.reserve(std::ranges::size(items));
    for (auto&& x : items) detail::encode_task_args(encoded, f, x);
    using T = std::vector<detail::map_result_t<F, Range>>;
    return map_with<T>(f, std::move(encoded), chunksize,
                       detail::make_done<T>(std::move(callback), std::move(error_callback)), std::move(progress));
  }

  /// starmap: each item is a tuple of arguments.
  template <class F, std::ranges::input_range Range>
  std::vector<detail::starmap_result_t<F, Range>> starmap(F&& f, Range&& items,
                                                          std::optional<std::size_t> chunksize = {},
                                                          Progress progress = {}) {
    detail::WaitingCaller waiting;  // from before the submit: see map()
    return starmap_async(std::forward<F>(f), std::forward<Range>(items), chunksize, nullptr, nullptr,
                         std::move(progress))
        .get();
  }

  template <class F, std::ranges::input_range Range, class Callback = std::nullptr_t,
            class ErrorCallback = std::nullptr_t>
  /// Python's starmap_async: starmap() without waiting, with optional callbacks as map_async's.
  AsyncResult<std::vector<detail::starmap_result_t<F, Range>>> starmap_async(
      F&& f, Range&& items, std::optional<std::size_t> chunksize = {}, Callback callback = nullptr,
      ErrorCallback error_callback = nullptr, Progress progress = {}) {
    detail::EncodedCalls encoded;
    for (auto&& x : items) detail::encode_tuple(encoded, f, x);
    using T = std::vector<detail::starmap_result_t<F, Range>>;
    return map_with<T>(f, std::move(encoded), chunksize,
                       detail::make_done<T>(std::move(callback), std::move(error_callback)), std::move(progress));
  }

  // ---- imap ----
  /// Results in input order, streamed as they finish; the input is read lazily (any input range, even unbounded).
  /// progress(done, total) runs on the iterating thread as results come in (total 0 for an input without a size).
  template <class F, std::ranges::input_range Range>
  IMapIterator<detail::map_result_t<F, Range>> imap(F&& f, Range&& items, std::size_t chunksize = 1,
                                                    Progress progress = {}) {
    return imap_with<detail::map_result_t<F, Range>>(f, std::forward<Range>(items), chunksize, true,
                                                     std::move(progress));
  }
  /// Results in completion order.
  template <class F, std::ranges::input_range Range>
  IMapIterator<detail::map_result_t<F, Range>> imap_unordered(F&& f, Range&& items, std::size_t chunksize = 1,
                                                              Progress progress = {}) {
    return imap_with<detail::map_result_t<F, Range>>(f, std::forward<Range>(items), chunksize, false,
                                                     std::move(progress));
  }

  /// No more tasks; the workers exit once the queued ones are done. Attached: this handle takes no more tasks.
  void close();
  /// Stops the workers now; unfinished tasks fail with CancelledError. Attached: detaches (its unfinished tasks fail
  /// with CancelledError, its queued ones are dropped); the pool goes on for the others.
  void terminate();
  /// Waits for the workers to exit; call close() or terminate() first (ValueError otherwise). Attached: waits until
  /// this handle's tasks are done.
  void join();

  std::size_t processes() const;  ///< The number of workers.
  /// The current workers' pids (none for an attached handle: the owner runs them).
  std::vector<pid_t> pids() const;
  /// What to send to another process of the session (as an mpx::ObjectRef argument or queue item), which attaches
  /// with Pool::attach(ref). (A Pool is move-only, so it does not travel itself.)
  ObjectRef ref() const { return detail::pool_ref(*core_); }
  /// Whether this handle attached to another's pool (Pool::attach).
  bool attached() const { return detail::pool_attached(*core_); }

  /// Internal: the shared pool state.
  const std::shared_ptr<detail::PoolCore>& core() const noexcept { return core_; }

 private:
  template <class R, class F>
  AsyncResult<R> apply_with(F& f, detail::EncodedCalls call, detail::DoneCallback on_done) {
    auto [function, trampoline] = detail::erase(f);
    detail::Submission s;
    s.function = function;
    s.trampoline = trampoline;
    s.items = std::move(call);
    s.single = true;
    s.on_done = std::move(on_done);
    return AsyncResult<R>(detail::pool_submit(*core_, std::move(s)));
  }

  template <class T, class F>
  AsyncResult<T> map_with(F& f, detail::EncodedCalls items, std::optional<std::size_t> chunksize,
                          detail::DoneCallback on_done, Progress progress) {
    if (chunksize && *chunksize == 0) throw ValueError("mpx: chunksize must be at least 1");
    auto [function, trampoline] = detail::erase(f);
    detail::Submission s;
    s.function = function;
    s.trampoline = trampoline;
    s.chunksize = chunksize.value_or(detail::pool_default_chunksize(*core_, items.size()));
    s.items = std::move(items);
    s.on_done = std::move(on_done);
    s.progress = std::move(progress);
    return AsyncResult<T>(detail::pool_submit(*core_, std::move(s)));
  }

  template <class R, class F, class Range>
  IMapIterator<R> imap_with(F& f, Range&& items, std::size_t chunksize, bool ordered, Progress progress) {
    std::size_t total = 0;
    if constexpr (std::ranges::sized_range<Range>) total = static_cast<std::size_t>(std::ranges::size(items));
    const std::size_t window = std::max<std::size_t>(chunksize * processes() * 4, 64);
    return stream_with<R>(f, detail::zip_producer(f, chunksize, std::forward<Range>(items)), chunksize, ordered,
                          window, std::move(progress), total, std::nullopt);
  }

  template <class R, class F>
  IMapIterator<R> stream_with(F& f, typename IMapIterator<R>::Producer produce, std::size_t chunksize, bool ordered,
                              std::size_t window, Progress progress, std::size_t total,
                              typename IMapIterator<R>::Deadline deadline) {
    if (chunksize == 0) throw ValueError("mpx: chunksize must be at least 1");
    detail::pool_require_running(*core_);
    auto [function, trampoline] = detail::erase(f);
    auto stream = detail::stream_open(*core_, function, trampoline, ordered);
    return IMapIterator<R>(std::move(stream), std::move(produce), window, std::move(progress), total, deadline);
  }
  friend class ProcessPoolExecutor;

  static PoolOptions make_options(std::optional<int> processes, BoundCall initializer, std::size_t maxtasksperchild) {
    PoolOptions options;
    options.processes = processes;
    options.initializer = std::move(initializer);
    options.maxtasksperchild = maxtasksperchild;
    return options;
  }

  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace mpx
