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
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
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

/// Where a pool's workers run (many hosts: framework/docs/distributed.md, "Placement").
enum class Placement {
  local,   ///< on this host (the default)
  spread,  ///< over every node alive when the pool starts, this host included
  pinned,  ///< on the nodes listed in `nodes`, in turn
};

/// Pool's settings: Python's processes, initializer/initargs and maxtasksperchild, a start method, and mpx's retry
/// policy for tasks whose worker dies, and where the workers run.
struct PoolOptions {
  std::optional<int> processes;          ///< unset: cpu_count()
  std::optional<BoundCall> initializer;  ///< mpx::bind(init, args...): runs once in every worker before its first task
  std::size_t maxtasksperchild = 0;      ///< 0: workers live as long as the pool
  unsigned max_retries = 3;              ///< reruns of a task whose worker died; 0: fail at the first death
  std::optional<StartMethod> method;     ///< unset: get_start_method()
  /// Executor semantics: the first worker death fails every pending task with BrokenProcessPool and breaks the pool.
  bool broken_on_worker_death = false;
  /// Where the workers run. With `spread` or `pinned` and `processes` unset, each node gets as many workers as it has
  /// cpus; with `processes` set, they are dealt out over the nodes in turn. A worker whose node is lost is replaced on
  /// a node that is still alive.
  Placement placement = Placement::local;
  std::vector<std::uint32_t> nodes = {};  ///< with Placement::pinned: the nodes the workers start on (mpx::nodes())
};

}  // namespace mpx

// Here, not at the top: it builds on PoolOptions and Progress above.
#include <mpx/detail/pool_impl.hpp>

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
      : state_(std::make_shared<detail::ImapState<R>>(detail::ImapState<R>{
            std::move(stream), std::move(produce), window, std::move(progress), total, deadline})) {}

  /// The next result, or nullopt at the end. TimeoutError if none arrives in time (Python's next(timeout)). An input
  /// that throws at item k ends the stream as Python's does: the results of items 0..k-1 first, then its exception
  /// once, then the end.
  [[nodiscard]] std::optional<R> next(const Timeout& timeout = std::nullopt) { return state_->next(timeout); }
  /// Internal: submits every task of the input now (Executor::map submits all calls at once, as Python does).
  void fill() { state_->fill(); }

  using iterator = detail::PullIterator<IMapIterator, R>;  ///< An input iterator over next()'s results.
  /// Range-for support: `for (auto y : pool.imap(f, xs))`; each step may raise the task's error.
  iterator begin() { return iterator(this); }
  iterator end() { return {}; }  ///< The end of the results.

 private:
  std::shared_ptr<detail::ImapState<R>> state_;
};

/// Python's multiprocessing.Pool: a fixed set of worker processes that run tasks (plain functions or captureless
/// lambdas, with msgpack arguments). A task's exception comes back as mpx::RemoteError; a worker that dies is replaced
/// and its task run again up to max_retries times, then fails as mpx::WorkerLost. Ctrl-C during a call raises
/// mpx::Interrupted. A task given to a closed or terminated pool raises mpx::ValueError. Move-only.
class MPX_API Pool {
 public:
  /// Pool(processes): processes defaults to cpu_count().
  explicit Pool(std::optional<int> processes = std::nullopt);
  /// Pool(processes, initializer, initargs, maxtasksperchild), as Python's positional form.
  template <class I, class... A>
  Pool(std::optional<int> processes, I&& initializer, std::tuple<A...> initargs = {}, std::size_t maxtasksperchild = 0)
      : Pool(detail::pool_options(processes, std::apply([&](auto&&... a) { return mpx::bind(initializer, a...); }, initargs),
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
    return detail::pool_apply<detail::call_result_t<F, A...>>(*core_, f, std::move(call), {});
  }

  /// apply_async(f, std::tuple{args...}, callback, error_callback): callback(result) and error_callback(const
  /// std::exception&) run on the result thread. Pass nullptr for either to leave it out.
  template <class F, class... A, class Callback, class ErrorCallback = std::nullptr_t>
  AsyncResult<detail::call_result_t<F, A...>> apply_async(F&& f, std::tuple<A...> args, Callback callback,
                                                          ErrorCallback error_callback = nullptr) {
    using R = detail::call_result_t<F, A...>;
    detail::EncodedCalls call;
    detail::encode_tuple(call, f, std::move(args));
    return detail::pool_apply<R>(*core_, f, std::move(call),
                                  detail::make_done<R>(std::move(callback), std::move(error_callback)));
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
    return detail::pool_map<T>(*core_, f, std::move(encoded), chunksize,
                               detail::make_done<T>(std::move(callback), std::move(error_callback)),
                               std::move(progress));
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
    return detail::pool_map<T>(*core_, f, std::move(encoded), chunksize,
                               detail::make_done<T>(std::move(callback), std::move(error_callback)),
                               std::move(progress));
  }

  // ---- imap ----
  /// Results in input order, streamed as they finish; the input is read lazily (any input range, even unbounded).
  /// progress(done, total) runs on the iterating thread as results come in (total 0 for an input without a size).
  template <class F, std::ranges::input_range Range>
  IMapIterator<detail::map_result_t<F, Range>> imap(F&& f, Range&& items, std::size_t chunksize = 1,
                                                    Progress progress = {}) {
    return detail::pool_imap<detail::map_result_t<F, Range>>(*core_, f, std::forward<Range>(items), chunksize,
                                                             true, std::move(progress));
  }
  /// Results in completion order.
  template <class F, std::ranges::input_range Range>
  IMapIterator<detail::map_result_t<F, Range>> imap_unordered(F&& f, Range&& items, std::size_t chunksize = 1,
                                                              Progress progress = {}) {
    return detail::pool_imap<detail::map_result_t<F, Range>>(*core_, f, std::forward<Range>(items), chunksize,
                                                             false, std::move(progress));
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
  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace mpx
