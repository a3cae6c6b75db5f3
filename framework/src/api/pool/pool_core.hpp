// What mpx::Pool's files share (src/api/pool/): the result states (Sink, ResultCore, StreamCore), the pool's own
// state (PoolCore), and the few functions one role offers another. The roles: client.cpp is the owner's and an
// attached handle's side (submissions, result states, the result thread), worker.cpp the worker process,
// local_delivery.cpp the coordinator-thread shortcut for an owner in the coordinator's process, and interrupt.cpp
// Ctrl-C. The scheduler itself is the coordinator's pool service (services/pool.cpp); PROTOCOL.md ("Pool")
// documents the messages.
#pragma once

#include <mpx/pool.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <cxxabi.h>
#include <dlfcn.h>

#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "services/pool_local.hpp"
#include "wire/envelope.hpp"
#include "wire/pool_frames.hpp"

namespace mpx::detail {

// A process's actor id (wire/actor_id.hpp): its pid on this host, its node and pid on another (api/process.cpp).
std::uint64_t actor_of(const Process& process);

// Tasks per pool_submit message: well under the protocol's array limit.
constexpr std::size_t tasks_per_message = 4096;
// A worker's exit status when its initializer raised (any other failure exits with 1 or a signal).
constexpr int initializer_failed_exit = 3;

inline std::string_view view(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

inline std::string current_exception_type() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  return type ? demangle(type->name()) : std::string("unknown");
}

// ---- what the roles offer each other ----

// Appends a chunk's payload to `out`: a msgpack array header, then its calls' argument arrays as they were encoded.
void append_chunk(std::string& out, const EncodedCalls& calls, std::size_t first, std::size_t count);
// pool_submit: [function (bin), [[task_id, size]...]] + the payloads.
wire::Envelope submit_message(std::uint64_t pool, const std::string& function,
                              const std::vector<std::tuple<std::uint64_t, std::uint64_t>>& sizes,
                              std::string_view payload);

// interrupt.cpp. Ctrl-C while a caller waits on a pool writes to `fd` (an eventfd the pool's result thread polls).
// Returns the slot to give back, -1 if there is none left (the pool is then not interrupted by Ctrl-C).
int watch_interrupts(int fd);
void unwatch_interrupts(int slot);

// local_delivery.cpp. The owner in the coordinator's process offers the coordinator thread its results and its outbox
// (before any submission); unregistering (Pool's destructor, first thing) guarantees the coordinator thread never
// touches it again.
void register_local_pool(const std::shared_ptr<PoolCore>& core);
void unregister_local_pool(std::uint64_t id);

// ---- sinks: where a task's results go ----

struct Pending;

struct Sink {
  virtual ~Sink() = default;
  // Runs on the result thread, or on the thread that terminates the pool (and, for a Sink whose complete_here says so,
  // on the coordinator thread: a stream's deliver runs no user code).
  virtual void deliver(const Pending& task, std::string results) = 0;  // the chunk's msgpack array of results
  virtual void fail(const Pending& task, std::exception_ptr error) = 0;
  // On the coordinator thread (local delivery): completes the task there if that runs no user code, and says so;
  // false leaves it to the result thread. `values` is used when `error` is null.
  virtual bool complete_here(const Pending& task, std::string& values, std::exception_ptr& error) = 0;
  // A task's outcome, whichever it is: its error if it has one, else its values.
  void settle(const Pending& task, std::string values, std::exception_ptr error) {
    if (error) {
      fail(task, std::move(error));
    } else {
      deliver(task, std::move(values));
    }
  }
};

struct Pending {
  std::shared_ptr<Sink> sink;
  std::uint64_t chunk = 0;  // the chunk's number in its map (0 for apply)
  std::uint32_t count = 0;
  std::uint64_t task_index = 0;  // what errors name: the item's index in its map, or the submission's number
};

struct ResultCore : Sink {
  std::mutex mutex;
  std::condition_variable changed;
  bool single = false;
  bool finishing = false;  // the outcome is fixed; callbacks may still be running
  bool cancelled = false;
  std::vector<std::function<void()>> done_callbacks;  // Future::add_done_callback, as_completed, wait
  bool done = false;
  std::vector<std::string> values;  // per chunk: its results as a msgpack array
  std::size_t size = 0;              // items in all
  std::size_t remaining = 0;         // chunks
  std::size_t items_done = 0;
  std::exception_ptr error;
  DoneCallback on_done;
  Progress progress;
  // Its tasks' ids, consecutive: [first_task, first_task + tasks). For cancel and task state (Executor).
  std::uint64_t first_task = 0;
  std::size_t tasks = 0;
  std::weak_ptr<PoolCore> pool;

  // As Python's: the callback runs before the result becomes ready, so wait() and get() return after it ran.
  void finish(std::unique_lock<std::mutex>& lock) {
    finishing = true;
    auto callback = std::move(on_done);
    auto more = std::move(done_callbacks);
    done_callbacks.clear();
    lock.unlock();
    if (callback) {
      try {
        callback(*this);
      } catch (const std::exception& e) {
        std::cerr << "mpx: a Pool callback raised " << current_exception_type() << ": " << e.what() << "\n";
      } catch (...) {
        std::cerr << "mpx: a Pool callback raised an exception\n";
      }
    }
    lock.lock();
    done = true;
    more.insert(more.end(), done_callbacks.begin(), done_callbacks.end());  // added while the callback ran
    done_callbacks.clear();
    lock.unlock();
    changed.notify_all();
    for (auto& c : more) run_callback(c);
  }

  static void run_callback(const std::function<void()>& c) {
    try {
      c();
    } catch (const std::exception& e) {
      std::cerr << "mpx: a done callback raised " << current_exception_type() << ": " << e.what() << "\n";
    } catch (...) {
      std::cerr << "mpx: a done callback raised an exception\n";
    }
  }

  void deliver(const Pending& task, std::string results) override {
    std::unique_lock lock(mutex);
    if (finishing) return;
    values[task.chunk] = std::move(results);
    items_done += task.count;
    if (progress) {
      const auto n = items_done, total = size;
      lock.unlock();
      report_progress(progress, n, total);
      lock.lock();
      if (finishing) return;
    }
    if (--remaining == 0) finish(lock);
  }

  void fail(const Pending&, std::exception_ptr e) override {
    std::unique_lock lock(mutex);
    if (finishing) return;
    error = std::move(e);
    finish(lock);
  }

  // Decided and done under one lock: a done callback added meanwhile either is seen here (the result thread runs
  // it) or finds the result done (and runs at once on its own thread).
  bool complete_here(const Pending& task, std::string& results, std::exception_ptr& e) override {
    std::unique_lock lock(mutex);
    if (finishing) return true;
    if (on_done || progress || !done_callbacks.empty()) return false;
    if (e) {
      error = std::move(e);
    } else {
      values[task.chunk] = std::move(results);
      items_done += task.count;
      if (--remaining != 0) return true;
    }
    finishing = done = true;
    lock.unlock();
    changed.notify_all();
    return true;
  }
};

struct StreamCore : Sink, std::enable_shared_from_this<StreamCore> {
  struct Chunk {
    std::string values;  // msgpack array
    std::exception_ptr error;
    std::uint32_t count = 0;
  };
  std::mutex mutex;
  std::condition_variable changed;
  bool ordered = true;
  std::map<std::uint64_t, Chunk> arrived;  // ordered: by the chunk's first index; unordered: by arrival
  std::uint64_t next_first = 0;             // ordered: the chunk to return from next
  std::uint64_t arrival = 0;
  std::uint64_t fed = 0;        // items submitted
  std::size_t outstanding = 0;  // items submitted and not yet returned (a failed chunk counts as returned whole)
  std::exception_ptr fatal;     // the pool was interrupted or terminated
  ErasedFunction function = nullptr;
  Trampoline trampoline = nullptr;
  std::weak_ptr<PoolCore> pool;

  void deliver(const Pending& task, std::string values) override {
    std::lock_guard lock(mutex);
    arrived[ordered ? task.task_index : arrival++] = Chunk{std::move(values), nullptr, task.count};
    changed.notify_all();
  }
  void fail(const Pending& task, std::exception_ptr error) override {
    std::lock_guard lock(mutex);
    arrived[ordered ? task.task_index : arrival++] = Chunk{{}, std::move(error), task.count};
    changed.notify_all();
  }
  bool complete_here(const Pending& task, std::string& values, std::exception_ptr& error) override {
    settle(task, std::move(values), std::move(error));
    return true;  // no callbacks: a stream's consumer pulls
  }
  void fail_all(std::exception_ptr error) {
    std::lock_guard lock(mutex);
    if (!fatal) fatal = std::move(error);
    changed.notify_all();
  }
};

// ---- the pool ----

struct PoolCore : services::LocalPoolOwner, std::enable_shared_from_this<PoolCore> {
  enum class State { running, closed, terminated };

  PoolOptions options;
  std::size_t processes = 1;
  std::vector<std::uint32_t> placement;  // the node of each worker in turn (PoolOptions::placement); empty: this host
  std::size_t next_placement = 0;
  std::uint64_t id = 0;
  std::string endpoint;

  mutable std::mutex mutex;
  std::condition_variable changed;  // workers came or went; the state changed
  State state = State::running;
  std::exception_ptr broken;        // why the pool stopped (Interrupted, BrokenProcessPool)
  std::unordered_map<std::uint64_t, Pending> pending;
  std::uint64_t next_task_id = 1;
  std::uint64_t next_submission = 0;
  std::vector<Process> workers;
  std::unordered_map<pid_t, std::size_t> tasks_done;  // per worker, for maxtasksperchild
  std::uint64_t worker_counter = 0;
  // Encoded FunctionIds: identify() walks the loaded modules, too slow for every submission.
  std::map<std::pair<ErasedFunction, Trampoline>, std::string> function_ids;
  std::vector<std::weak_ptr<StreamCore>> streams;
  // An attached handle (Pool(adopt, ref)): a submitter of a pool whose owner is another process or handle. It has
  // no workers; its close() and terminate() detach it and leave the pool running for the others.
  bool attached = false;
  std::uint64_t submitter = 0;
  std::string workers_build_id;  // the build the pool's workers run: a function of another build cannot run there
  std::size_t completing = 0;    // results taken out of `pending` and being handed to their sink right now

  // Results the coordinator thread took for this pool (local delivery) that have callbacks to run on the result
  // thread, in arrival order.
  struct Deferred {
    Pending task;
    std::string values;
    std::exception_ptr error;
  };
  std::mutex deferred_mutex;
  std::deque<Deferred> deferred;

  // The outbox of an owner in the coordinator's process (PROTOCOL.md, "Pool", the outbox): its submissions wait here,
  // in order, for the coordinator thread to pull them (pull_local_submissions), so a burst of apply_async costs no
  // message per task. Single tasks of one function gather in the open batch; anything else is a finished message.
  // Guarded by its own mutex, which the coordinator thread's pull takes only when outbox_ready says there is
  // something, and the owner only to append. The two flags make "nobody looks at a non-empty outbox" impossible
  // without a lock: the scheduler sets ring_wanted before it reads outbox_ready, the owner sets outbox_ready before
  // it reads (and clears) ring_wanted, so at least one of them sees the other's write.
  bool local_outbox = false;  // the owner, with the coordinator in this process: fixed at start
  std::mutex outbox_mutex;
  std::vector<wire::Envelope> outbox;
  const std::string* batch_function = nullptr;
  std::vector<std::tuple<std::uint64_t, std::uint64_t>> batch_sizes;
  std::string batch_payload;
  std::atomic<bool> outbox_ready{false};
  std::atomic<bool> ring_wanted{true};

  int wake_fd = -1;       // the owner thread asks the result thread to look at the state
  int interrupt_fd = -1;  // written by the SIGINT handler
  int interrupt_slot = -1;
  bool stop = false;
  std::thread result_thread;

  ~PoolCore() {
    unwatch_interrupts(interrupt_slot);
    if (wake_fd >= 0) ::close(wake_fd);
    if (interrupt_fd >= 0) ::close(interrupt_fd);
  }

  // How this handle stops the pool: an attached handle detaches (its queued tasks are dropped, and the owner's
  // workers go on serving the others); the owner terminates it.
  wire::Envelope leave_message() const {
    return attached ? wire::make(wire::Kind::pool_detach, id, 0, std::make_tuple(submitter))
                    : wire::make(wire::Kind::pool_terminate, id, 0, Object{});
  }

  void wake() {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }

  const std::string& function_id(ErasedFunction function, Trampoline trampoline) {
    const auto key = std::make_pair(function, trampoline);
    auto it = function_ids.find(key);
    if (it != function_ids.end()) return it->second;
    FunctionId fid = identify(function, trampoline);
    if (attached) check_runnable(fid, function);
    return function_ids.emplace(key, encode(fid)).first->second;
  }

  // The workers run the owner's program. A function of this program, when this program is another build (an exec
  // actor of a topology whose pool runs the supervising program), can never be resolved there: refuse it here, by
  // name, rather than let every task of it fail in a worker. (A function in a shared library is left to the worker,
  // which has it if it loads the same library.)
  void check_runnable(const FunctionId& fid, ErasedFunction function) const {
    if (workers_build_id.empty() || fid.build_id == workers_build_id || fid.build_id != main_build_id()) return;
    throw ProtocolError("mpx: cannot run " + function_name(function) + " in this Pool: it is defined in this program (" +
                        runtime::state().executable + ", build-id " + fid.build_id +
                        "), but the pool's workers run another program (build-id " + workers_build_id +
                        "). A topology pool runs the program that runs the topology: submit functions of that "
                        "program (its task actors can), or of a shared library both programs load");
  }

  static std::string function_name(ErasedFunction function) {
    Dl_info info{};
    // Only an exact match names it: the nearest exported symbol of an executable is usually some other one.
    if (::dladdr(reinterpret_cast<const void*>(function), &info) != 0 && info.dli_sname &&
        info.dli_saddr == reinterpret_cast<void*>(function)) {
      return "'" + demangle(info.dli_sname) + "'";
    }
    char offset[32] = "?";
    if (info.dli_fbase) {
      std::snprintf(offset, sizeof offset, "0x%zx",
                    static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(function) -
                                             reinterpret_cast<std::uintptr_t>(info.dli_fbase)));
    }
    return std::string("the function at offset ") + offset + " of " + (info.dli_fname ? info.dli_fname : "this program");
  }

  void start_worker();  // caller holds mutex
  // The outbox, all under `outbox_mutex`. Each returns whether the caller must ring (post pool_pull) once it has unlocked.
  bool outbox_add_single(const std::string& function, std::uint64_t task_id, const EncodedCalls& items);
  bool outbox_add(std::vector<wire::Envelope> messages);
  void seal_batch();
  bool published();
  void ring() const;
  // Posts them, or (a local owner) adds them to the outbox: either way after everything submitted before.
  void send_submissions(std::vector<wire::Envelope> messages);
  void run(runtime::Channel& results);
  bool run_once(runtime::Channel& results);
  void handle_delivery(const wire::Envelope& e);
  // A results frame. `here`: on the coordinator thread (local delivery), which completes what has no callbacks and
  // leaves the rest to the result thread (`deferred`).
  void handle_results(std::string_view frame, bool here);
  void run_deferred();
  // services::LocalPoolOwner, on the coordinator thread (local_delivery.cpp).
  bool take_results(std::string_view results) override;
  void pull_submissions(bool ring, std::vector<wire::Envelope>& out) override;
  void worker_ended(runtime::Channel& results, Process worker);
  void stop_everything(std::exception_ptr why, bool kill_workers);
};

}  // namespace mpx::detail
