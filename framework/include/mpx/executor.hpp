/// \file
/// mpx/executor.hpp — mpx::ProcessPoolExecutor and mpx::Future (Python's concurrent.futures), on the Pool's machinery.
///
/// Semantics follow Python's, with one deliberate difference: a worker that dies is handled the Pool way (its task is
/// retried on a fresh worker, then fails with mpx::WorkerLost), not by breaking the executor for good. Set
/// ExecutorOptions::broken_on_worker_death for Python's BrokenProcessPool behaviour.
///
/// Done callbacks run on the pool's result thread in completion order (or at once, on the calling thread, when added
/// to a future that is already done, as in Python).
#pragma once

#include <concepts>
#include <memory>
#include <mutex>
#include <vector>

#include <mpx/detail/futures_wait.hpp>
#include <mpx/pool.hpp>

namespace mpx {

template <class T>
class Future;

/// ProcessPoolExecutor's settings: Python's max_workers, initializer/initargs, max_tasks_per_child and mp_context, plus
/// mpx's retry policy for tasks whose worker dies.
struct ExecutorOptions {
  std::optional<int> max_workers;        ///< unset: cpu_count()
  std::optional<BoundCall> initializer;  ///< mpx::bind(init, args...)
  std::size_t max_tasks_per_child = 0;  ///< a worker is replaced after this many tasks; 0: never
  unsigned max_retries = 3;  ///< runs of a task whose worker died, after the first, before it fails as WorkerLost
  std::optional<StartMethod> method;  ///< the workers' start method; unset: get_start_method()
  bool broken_on_worker_death = false;  ///< Python's BrokenProcessPool instead of retries
  Placement placement = Placement::local;  ///< where the workers run (PoolOptions::placement)
  std::vector<std::uint32_t> nodes = {};  ///< with Placement::pinned: the nodes they start on
};

/// What every Future has, whatever its result type. wait() and as_completed() take a std::vector of any one future
/// type, so futures of different result types go together as std::vector<FutureBase>{a, b}; as<T>() gives a typed
/// Future back.
class FutureBase {
 public:
  /// An empty future, to assign to later; until then its other members raise ValueError.
  FutureBase() = default;
  /// Internal: made by submit().
  FutureBase(std::shared_ptr<detail::ResultCore> core, std::weak_ptr<detail::PoolCore> pool)
      : core_(std::move(core)), pool_(std::move(pool)) {}

  /// The task's error (null if it succeeded); TimeoutError if not done in time; CancelledError if cancelled.
  std::exception_ptr exception(const Timeout& timeout = std::nullopt) const {
    if (!detail::result_wait(checked(), timeout)) throw TimeoutError("mpx: the future was not done within the timeout");
    if (detail::result_cancelled(checked())) std::rethrow_exception(detail::result_error(checked()));
    return detail::result_error(checked());
  }
  /// Cancels the call if no worker has taken it yet; false if it is running or done.
  bool cancel() {
    if (cancelled()) return true;
    auto pool = pool_.lock();
    return pool && detail::pool_cancel(*pool, checked());
  }
  bool cancelled() const { return detail::result_cancelled(checked()); }  ///< Whether cancel() succeeded.
  /// Whether it finished: a result, an error, or cancelled.
  bool done() const { return detail::result_ready(checked()); }
  /// Whether a worker is running the call now.
  bool running() const {
    auto pool = pool_.lock();
    return pool && !done() && detail::pool_task_state(*pool, checked()) == 1;
  }
  /// The same future with its result read as T (a result that does not decode as T raises SerializationError).
  template <class T>
  Future<T> as() const {
    return Future<T>(core_, pool_);
  }

  const std::shared_ptr<detail::ResultCore>& core() const noexcept { return core_; }  ///< Internal: the shared result.
  /// Whether both are copies of one future.
  bool operator==(const FutureBase& other) const noexcept { return core_ == other.core_; }

 protected:
  /// The result; ValueError if this future is empty (default-constructed, never assigned).
  detail::ResultCore& checked() const { return detail::result_core(core_, "Future"); }
  std::shared_ptr<detail::ResultCore> core_;  ///< the result every copy shares
  std::weak_ptr<detail::PoolCore> pool_;  ///< the pool that runs the task (for cancel() and running())
};

/// Python's concurrent.futures.Future: the pending result of ProcessPoolExecutor::submit. Copies share the result.
template <class T>
class Future : public FutureBase {
 public:
  /// An empty future, to assign to later; until then its other members raise ValueError.
  Future() = default;
  /// Internal: made by submit().
  explicit Future(std::shared_ptr<detail::ResultCore> core, std::weak_ptr<detail::PoolCore> pool)
      : FutureBase(std::move(core), std::move(pool)) {}

  /// The value; TimeoutError if not done in time; CancelledError if cancelled; the task's error otherwise.
  T result(const Timeout& timeout = std::nullopt) const {
    detail::result_check(checked(), timeout);
    return detail::decode_result<T>(checked());
  }
  /// fn(future) once done: on the result thread, or at once here if it is done already.
  template <class Fn>
  void add_done_callback(Fn fn) {
    detail::result_add_done_callback(checked(), [fn = std::move(fn), self = *this] { fn(self); });
  }
};

/// A Future of any result type, or a FutureBase.
template <class F>
concept AnyFuture = std::derived_from<F, FutureBase>;

/// When wait() returns (Python's return_when): at the first completed future, at the first that raised (or when all
/// are done), or when all are done.
enum class ReturnWhen { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };
/// Python's concurrent.futures.FIRST_COMPLETED.
inline constexpr ReturnWhen FIRST_COMPLETED = ReturnWhen::FIRST_COMPLETED;
/// Python's concurrent.futures.FIRST_EXCEPTION.
inline constexpr ReturnWhen FIRST_EXCEPTION = ReturnWhen::FIRST_EXCEPTION;
inline constexpr ReturnWhen ALL_COMPLETED = ReturnWhen::ALL_COMPLETED;  ///< Python's concurrent.futures.ALL_COMPLETED.

/// as_completed(futures, timeout): the futures in the order they finish. Iterating raises TimeoutError when the
/// timeout (counted from this call) passes with futures unfinished.
template <AnyFuture F>
class AsCompleted {
 public:
  /// Watches `futures` (each distinct future once); the timeout counts from here.
  AsCompleted(std::vector<F> futures, const Timeout& timeout)
      : futures_(detail::distinct(std::move(futures))), completions_(detail::watch(futures_)) {
    if (timeout) deadline_ = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout);
  }

  /// The next finished future, or nullopt when all have been returned.
  [[nodiscard]] std::optional<F> next() {
    if (returned_ == futures_.size()) return std::nullopt;
    auto& c = *completions_;
    if (!c.wait(detail::time_left(deadline_), [&] { return !c.order.empty(); })) {
      throw TimeoutError("mpx: " + std::to_string(futures_.size() - returned_) + " (of " +
                         std::to_string(futures_.size()) + ") futures unfinished");
    }
    std::lock_guard lock(c.mutex);
    const std::size_t i = c.order.front();
    c.order.pop_front();
    ++returned_;
    return futures_[i];
  }

  using iterator = detail::PullIterator<AsCompleted, F>;  ///< An input iterator over next()'s futures.
  /// Range-for support: `for (auto& f : mpx::as_completed(futures))`; each step may raise TimeoutError.
  iterator begin() { return iterator(this); }
  iterator end() { return {}; }  ///< The end of the range: every future was returned.

 private:
  std::vector<F> futures_;
  std::shared_ptr<detail::Completions> completions_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::size_t returned_ = 0;
};

/// Python's concurrent.futures.as_completed(fs, timeout): iterate the result to get the futures as they finish.
template <AnyFuture F>
AsCompleted<F> as_completed(std::vector<F> futures, const Timeout& timeout = std::nullopt) {
  return AsCompleted<F>(std::move(futures), timeout);
}

/// What wait() returns (Python's DoneAndNotDoneFutures named tuple).
template <AnyFuture F>
struct DoneAndNotDone {
  std::vector<F> done;  ///< the futures that finished (result, error or cancelled)
  std::vector<F> not_done;  ///< the others
};

/// Python's concurrent.futures.wait: returns when the condition holds or the timeout passes (no exception).
template <AnyFuture F>
DoneAndNotDone<F> wait(const std::vector<F>& given, const Timeout& timeout = std::nullopt,
                       ReturnWhen return_when = ALL_COMPLETED) {
  const auto futures = detail::distinct(given);
  auto completions = detail::watch(futures);
  auto& c = *completions;
  c.wait(timeout, [&] {
    if (c.order.size() == futures.size()) return true;
    if (return_when == FIRST_COMPLETED) return !c.order.empty();
    if (return_when == FIRST_EXCEPTION) {
      for (auto i : c.order) {
        if (!futures[i].cancelled() && detail::result_error(*futures[i].core())) return true;
      }
    }
    return false;
  });
  DoneAndNotDone<F> out;
  for (const auto& f : futures) (f.done() ? out.done : out.not_done).push_back(f);
  return out;
}

/// Python's concurrent.futures.ProcessPoolExecutor, on mpx::Pool: submit() returns a Future, map() the results in
/// order. A task's exception comes back as mpx::RemoteError; a worker that dies has its task run again (max_retries),
/// unless broken_on_worker_death asks for Python's BrokenProcessPool. Submitting after shutdown() raises mpx::Error.
class MPX_API ProcessPoolExecutor {
 public:
  /// Starts max_workers workers (unset: cpu_count()).
  explicit ProcessPoolExecutor(std::optional<int> max_workers = std::nullopt)
      : ProcessPoolExecutor(options_for(max_workers)) {}
  /// Python's ProcessPoolExecutor(max_workers, initializer=..., initargs=(...), max_tasks_per_child=...): each worker
  /// runs initializer(initargs...) once before its first task.
  template <class I, class... A>
  ProcessPoolExecutor(std::optional<int> max_workers, I&& initializer, std::tuple<A...> initargs = {},
                      std::size_t max_tasks_per_child = 0)
      : ProcessPoolExecutor(options_for(max_workers, std::apply([&](auto&&... a) { return mpx::bind(initializer, a...); },
                                                                initargs),
                                        max_tasks_per_child)) {}
  explicit ProcessPoolExecutor(ExecutorOptions options);  ///< An executor with every setting given.
  /// As leaving Python's `with ProcessPoolExecutor() as e:` block: shutdown(wait=true).
  ~ProcessPoolExecutor();
  ProcessPoolExecutor(const ProcessPoolExecutor&) = delete;
  ProcessPoolExecutor& operator=(const ProcessPoolExecutor&) = delete;

  /// Python's submit(fn, *args): schedules f(args...) and returns its Future. f is a plain function or a captureless
  /// lambda; the arguments are encoded here, so a serialization error is raised at the caller.
  template <class F, class... A>
    requires std::is_invocable_v<decltype(+std::declval<F>()), A...>
  Future<detail::call_result_t<F, A...>> submit(F&& f, A&&... args) {
    check_open();
    auto r = pool_.apply_async(std::forward<F>(f), std::forward<A>(args)...);
    track(r.core());
    return Future<detail::call_result_t<F, A...>>(r.core(), pool_.core());
  }

  /// Python's map(fn, *iterables, timeout=None, chunksize=1): map(f, xs, ys..., [timeout], [chunksize], [progress])
  /// calls f(x, y, ...) over the ranges zipped to the shortest. Every call is submitted now; the returned range yields
  /// the results in input order as each is ready, raises a failed call's error when its turn comes, and raises
  /// TimeoutError once `timeout` (counted from this call) passes first, cancelling then the calls no worker has taken
  /// yet (as Python's map cancels its futures): they never run. progress(done, total) runs on the iterating thread as
  /// results come in.
  template <class F, class... Args>
    requires(sizeof...(Args) >= 1 && std::ranges::input_range<std::tuple_element_t<0, std::tuple<Args...>>>)
  auto map(F&& f, Args&&... args) {
    const auto start = std::chrono::steady_clock::now();
    check_open();
    constexpr std::size_t ranges = detail::leading_ranges<Args...>();
    auto all = std::forward_as_tuple(std::forward<Args>(args)...);
    detail::MapOptions options = detail::map_options<ranges>(all);
    typename IMapIterator<int>::Deadline deadline;
    if (options.timeout) deadline = start + std::chrono::duration_cast<std::chrono::nanoseconds>(*options.timeout);
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      using R = detail::zip_result_t<F, std::tuple_element_t<I, std::tuple<Args...>>...>;
      const std::size_t total = detail::zip_size(std::get<I>(all)...);
      auto produce = detail::zip_producer(f, options.chunksize, std::get<I>(std::move(all))...);
      auto results = detail::pool_stream<R>(*pool_.core(), f, std::move(produce), options.chunksize, true,
                                            std::numeric_limits<std::size_t>::max(), std::move(options.progress),
                                            total, deadline);
      results.fill();
      return results;
    }(std::make_index_sequence<ranges>{});
  }

  /// No new submissions. cancel_futures cancels the ones no worker has taken yet; wait blocks until the rest are done
  /// and the workers have exited.
  void shutdown(bool wait = true, bool cancel_futures = false);

  Pool& pool() noexcept { return pool_; }  ///< The Pool that runs the tasks.

 private:
  static ExecutorOptions options_for(std::optional<int> max_workers, std::optional<BoundCall> initializer = std::nullopt,
                                     std::size_t max_tasks_per_child = 0) {
    ExecutorOptions o;
    o.max_workers = max_workers;
    o.initializer = std::move(initializer);
    o.max_tasks_per_child = max_tasks_per_child;
    return o;
  }
  void check_open();
  void track(const std::shared_ptr<detail::ResultCore>& core);

  Pool pool_;
  std::mutex mutex_;
  bool shutdown_ = false;
  std::vector<std::weak_ptr<detail::ResultCore>> submitted_;  ///< for shutdown(cancel_futures)
};

}  // namespace mpx
