// mpx::Pool: the owner's side (task ids, result states, the result thread that receives the scheduler's pushes,
// watches the workers' sentinels and replaces dead workers), the attached handle's side (the same without workers:
// a submitter of another process's pool), and the worker's loop. The scheduler itself is the coordinator's pool
// service (services/pool.cpp); PROTOCOL.md ("Pool") documents the messages.
//
// Local delivery: when the owner runs in the coordinator's own process (the embedded default), the coordinator thread
// hands it small results frames itself (services::set_pool_local_delivery) instead of pushing them to the result
// socket. A result with no callback completes right there, one notify to its waiting caller, which saves the hop
// through the result thread on a lone task's round trip; one with a callback (callback, error_callback, progress,
// a done callback) is queued for the result thread, so that every callback still runs there, in arrival order.
#include <mpx/pool.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "api/call.hpp"
#include "runtime/channel.hpp"
#include "runtime/coordinator.hpp"
#include "runtime/runtime.hpp"
#include "services/services.hpp"
#include "wire/envelope.hpp"
#include "wire/interrupted.hpp"
#include "wire/transport.hpp"

namespace mpx::detail {

namespace {

// Record statuses in a results frame (PROTOCOL.md, "Pool"); the scheduler uses the same values.
enum class Status : std::uint8_t { ok = 0, error = 1, lost = 2, cancelled = 3, unserializable = 4 };

// How many tasks a worker asks for at once; the scheduler gives it at most its fair share of what is queued.
constexpr std::uint64_t prefetch = 256;
// A worker running a long batch sends the results it has after this long, so callers see them as they finish.
constexpr auto flush_interval = std::chrono::milliseconds(2);
// Tasks per pool_submit message: well under the protocol's array limit.
constexpr std::size_t tasks_per_message = 4096;
// After SIGTERM, how long terminate() waits for a worker before SIGKILL.
constexpr auto terminate_grace = std::chrono::seconds(2);
// A task id's top bits name its submitter (0: the owner; PROTOCOL.md, "Pool"), so ids of different submitters never
// collide, and a worker can sort its results by submitter without asking anyone.
constexpr unsigned submitter_shift = 40;
// Results frames per pool_take or pool_results: under the protocol's 64 body frames.
constexpr std::size_t max_report_frames = 32;

std::string_view view(const zmq::message_t& frame) { return {static_cast<const char*>(frame.data()), frame.size()}; }

std::string current_exception_type() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  return type ? demangle(type->name()) : std::string("unknown");
}

// ---- reading a results frame: every access checks the type, and the unpack itself is bounded ----

const msgpack::object& expect(const msgpack::object& o, msgpack::type::object_type type, const char* what) {
  if (o.type != type) throw ProtocolError(std::string("mpx: malformed pool results: ") + what);
  return o;
}

std::uint64_t as_u64(const msgpack::object& o) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) throw ProtocolError("mpx: malformed pool results: integer");
  return o.via.u64;
}

std::int64_t as_i64(const msgpack::object& o) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) return static_cast<std::int64_t>(o.via.u64);
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  throw ProtocolError("mpx: malformed pool results: integer");
}

std::string as_string(const msgpack::object& o) {
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
  throw ProtocolError("mpx: malformed pool results: string");
}

// ---- SIGINT: a handler that only writes to eventfds, so the result threads do the work ----

constexpr std::size_t max_pools = 256;
std::atomic<int> interrupt_fds[max_pools];  // each an eventfd + 1; 0: a free slot
std::atomic<int> waiting_callers{0};
struct sigaction previous_sigint {};
std::once_flag sigint_installed;

void on_sigint(int signal, siginfo_t* info, void* context) {
  if (waiting_callers.load() > 0) {
    const std::uint64_t one = 1;
    for (auto& fd : interrupt_fds) {
      const int f = fd.load();
      if (f > 0) (void)!::write(f - 1, &one, sizeof one);
    }
    return;
  }
  // Nobody waits on a pool: Ctrl-C means what it meant before the first pool.
  if (previous_sigint.sa_flags & SA_SIGINFO) {
    if (previous_sigint.sa_sigaction) previous_sigint.sa_sigaction(signal, info, context);
  } else if (previous_sigint.sa_handler == SIG_IGN) {
    return;
  } else if (previous_sigint.sa_handler == SIG_DFL) {
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
  } else {
    previous_sigint.sa_handler(signal);
  }
}

void install_sigint_handler() {
  std::call_once(sigint_installed, [] {
    struct sigaction action {};
    action.sa_sigaction = &on_sigint;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &previous_sigint);
  });
}

int register_interrupt_fd(int fd) {
  for (std::size_t i = 0; i < max_pools; ++i) {
    int expected = 0;
    if (interrupt_fds[i].compare_exchange_strong(expected, fd + 1)) return static_cast<int>(i);
  }
  return -1;  // more pools than slots: this one is not interrupted by Ctrl-C (documented limit)
}

}  // namespace

WaitingCaller::WaitingCaller() { waiting_callers.fetch_add(1); }
WaitingCaller::~WaitingCaller() { waiting_callers.fetch_sub(1); }

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

struct PoolCore : std::enable_shared_from_this<PoolCore> {
  enum class State { running, closed, terminated };

  PoolOptions options;
  std::size_t processes = 1;
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
    if (interrupt_slot >= 0) interrupt_fds[static_cast<std::size_t>(interrupt_slot)].store(0);
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
  void run(zmq::socket_t& dealer);
  bool run_once(zmq::socket_t& dealer);
  void handle_delivery(const wire::Envelope& e);
  // A results frame. `here`: on the coordinator thread (local delivery), which completes what has no callbacks and
  // leaves the rest to the result thread (`deferred`).
  void handle_results(std::string_view frame, bool here);
  void run_deferred();
  void worker_ended(zmq::socket_t& dealer, Process worker);
  void stop_everything(std::exception_ptr why, bool kill_workers);
};

namespace {

// A worker's exit status when its initializer raised (any other failure exits with 1 or a signal).
constexpr int initializer_failed_exit = 3;

struct WorkerSpec {
  std::uint64_t pool = 0;
  std::optional<FunctionId> initializer;
  std::string initargs;
  std::uint64_t maxtasks = 0;
  MSGPACK_DEFINE(pool, initializer, initargs, maxtasks);
};

// One results frame in the making: an array of [task_id, status, pid, payload] records.
struct ResultsFrame {
  std::vector<std::uint64_t> ids;
  msgpack::sbuffer records;
  void add_ok(std::uint64_t id, std::int64_t pid, const std::string& results) {
    msgpack::packer<msgpack::sbuffer> pk(records);
    pk.pack_array(4);
    pk.pack(id);
    pk.pack(static_cast<std::uint8_t>(Status::ok));
    pk.pack(pid);
    pk.pack_bin(static_cast<std::uint32_t>(results.size()));
    pk.pack_bin_body(results.data(), static_cast<std::uint32_t>(results.size()));
    ids.push_back(id);
  }
  void add_error(std::uint64_t id, std::int64_t pid, Status status, const std::string& type, const std::string& message,
                 std::uint64_t offset) {
    msgpack::packer<msgpack::sbuffer> pk(records);
    pk.pack_array(4);
    pk.pack(id);
    pk.pack(static_cast<std::uint8_t>(status));
    pk.pack(pid);
    pk.pack(std::make_tuple(type, message, offset));
    ids.push_back(id);
  }
  // The frame: the array header, then the records as they are.
  std::string take() {
    msgpack::sbuffer head(8);
    msgpack::packer<msgpack::sbuffer> pk(head);
    pk.pack_array(static_cast<std::uint32_t>(ids.size()));
    std::string out(head.data(), head.size());
    out.append(records.data(), records.size());
    ids.clear();
    records.clear();
    return out;
  }
};

// A task's function as the worker resolved it; `error` says why one could not be (another build, garbage).
struct Resolved {
  ErasedFunction function = nullptr;
  Trampoline trampoline = nullptr;
  std::string error;
};

// A worker's finished tasks, one results frame per submitter: the scheduler forwards each frame as it is.
class Outbox {
 public:
  ResultsFrame& frame_for(std::uint64_t task_id) {
    const std::uint64_t k = task_id >> submitter_shift;
    if (last_ < frames_.size() && frames_[last_].first == k) return frames_[last_].second;
    for (last_ = 0; last_ < frames_.size(); ++last_) {
      if (frames_[last_].first == k) return frames_[last_].second;
    }
    frames_.emplace_back(k, ResultsFrame{});
    return frames_.back().second;
  }
  bool empty() const {
    return std::all_of(frames_.begin(), frames_.end(), [](const auto& f) { return f.second.ids.empty(); });
  }
  std::size_t filled() const {
    return static_cast<std::size_t>(
        std::count_if(frames_.begin(), frames_.end(), [](const auto& f) { return !f.second.ids.empty(); }));
  }
  // A pool_take (with `ask`) or pool_results: [ask?, [[submitter, [task ids]]...]] + those frames, at most
  // max_report_frames of them (the rest stay for the next report).
  wire::Envelope report(wire::Kind kind, std::uint64_t pool, std::optional<std::uint64_t> ask) {
    const std::size_t n = std::min(filled(), max_report_frames);
    msgpack::sbuffer buffer(64 + 10 * n);  // msgpack's default 8 KiB buffer would cost a large malloc per message
    msgpack::packer<msgpack::sbuffer> pk(buffer);
    pk.pack_array(ask ? 2 : 1);
    if (ask) pk.pack(*ask);
    pk.pack_array(static_cast<std::uint32_t>(n));
    std::vector<std::string> frames;
    frames.reserve(n);
    for (auto& [k, frame] : frames_) {
      if (frame.ids.empty() || frames.size() == n) continue;
      pk.pack_array(2);
      pk.pack(k);
      pk.pack(frame.ids);
      frames.push_back(frame.take());
    }
    // A worker outlives many submitters (actors come and go): forget the idle ones, keeping a few warm buffers.
    if (frames_.size() > 4) {
      std::erase_if(frames_, [](const auto& f) { return f.second.ids.empty(); });
      last_ = 0;
    }
    wire::Envelope e;
    e.header.kind = kind;
    e.header.object = pool;
    e.body.emplace_back(buffer.data(), buffer.size());
    for (auto& f : frames) e.body.emplace_back(f.data(), f.size());
    return e;
  }

 private:
  std::vector<std::pair<std::uint64_t, ResultsFrame>> frames_;  // few: usually the owner's alone
  std::size_t last_ = 0;
};

// Runs one task (a chunk of calls) through its chunk trampoline and records the outcome.
void run_task(std::uint64_t id, const Resolved& call, std::string_view payload, std::int64_t pid, ResultsFrame& out) {
  std::string results;
  auto& offset = chunk_offset();
  offset = 0;
  try {
    if (!call.trampoline) throw ProtocolError(call.error);
    call.trampoline(call.function, payload, results);
  } catch (const SerializationError& e) {
    out.add_error(id, pid, Status::unserializable, "mpx::SerializationError", e.what(), offset);
    return;
  } catch (const std::exception& e) {
    out.add_error(id, pid, Status::error, current_exception_type(), e.what(), offset);
    return;
  } catch (...) {
    out.add_error(id, pid, Status::error, current_exception_type(), "(not a std::exception)", offset);
    return;
  }
  out.add_ok(id, pid, results);
}

// The worker process: take batches, run them, bring the results back with the next take.
void pool_worker_main(WorkerSpec spec) {
  // Ctrl-C in a terminal reaches the whole process group: the owner handles it, and stops the workers itself.
  ::signal(SIGINT, SIG_IGN);
  if (spec.initializer) {
    try {
      auto [function, trampoline] = resolve(*spec.initializer);
      std::string ignored;
      trampoline(function, spec.initargs, ignored);
    } catch (const std::exception& e) {
      throw runtime::ChildFailure{initializer_failed_exit, current_exception_type(), e.what()};
    } catch (...) {
      throw runtime::ChildFailure{initializer_failed_exit, current_exception_type(), "(not a std::exception)"};
    }
  }
  // Takes and results go through the coordinator's side door when it has one (the coordinator is on this host), as all
  // of this thread's traffic does: both legs of a task's round trip then skip ZeroMQ's I/O threads.
  auto& channel = runtime::Channel::current();
  const auto post = [&](wire::Envelope e) { channel.post(std::move(e)); };
  const auto pid = static_cast<std::int64_t>(runtime::self_pid());
  std::unordered_map<std::string, Resolved> functions;  // by encoded FunctionId
  Outbox results;
  std::uint64_t done = 0;
  for (;;) {
    std::uint64_t ask = prefetch;
    if (spec.maxtasks) ask = std::min(ask, spec.maxtasks - done);
    while (results.filled() > max_report_frames) post(results.report(wire::Kind::pool_results, spec.pool, std::nullopt));
    auto take = results.report(wire::Kind::pool_take, spec.pool, ask);
    auto reply = channel.request(std::move(take), std::nullopt);
    if (reply.header.kind == wire::Kind::error) {
      auto [code, message] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
      if (static_cast<wire::ErrorCode>(code) == wire::ErrorCode::closed) return;
      raise_error(reply);
    }
    if (reply.body.size() != 2) throw ProtocolError("mpx: pool_take reply without its payload frame");
    auto [fns, tasks] = reply.body_as<std::tuple<std::vector<std::string>,
                                                 std::vector<std::tuple<std::uint64_t, std::uint32_t, std::uint64_t>>>>();
    std::vector<const Resolved*> slots;
    for (auto& key : fns) {
      auto it = functions.find(key);
      if (it == functions.end()) {
        Resolved r;
        try {
          std::tie(r.function, r.trampoline) = resolve(decode<FunctionId>(key));
        } catch (const Error& e) {
          // Another build, or garbage: its tasks fail with this error, which reaches their caller, instead of
          // killing the worker.
          r.error = e.what();
        }
        it = functions.emplace(std::move(key), std::move(r)).first;
      }
      slots.push_back(&it->second);
    }
    const std::string_view payload = view(reply.body[1]);
    std::size_t offset = 0;
    auto last_flush = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const auto& [id, slot, size] = tasks[i];
      if (slot >= slots.size() || size > payload.size() - offset) throw ProtocolError("mpx: malformed pool_take reply");
      run_task(id, *slots[slot], payload.substr(offset, size), pid, results.frame_for(id));
      offset += size;
      ++done;
      if (i + 1 < tasks.size()) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_flush >= flush_interval) {
          while (!results.empty()) post(results.report(wire::Kind::pool_results, spec.pool, std::nullopt));
          last_flush = now;
        }
      }
    }
    if (spec.maxtasks && done >= spec.maxtasks) {
      while (!results.empty()) post(results.report(wire::Kind::pool_results, spec.pool, std::nullopt));
      // Posted results are durable once post() returns (in the side door's socket, or acknowledged), so they are
      // handled before the coordinator handles this worker's exit.
      return;
    }
  }
}

}  // namespace

void PoolCore::start_worker() {
  WorkerSpec spec;
  spec.pool = id;
  if (options.initializer) {
    spec.initializer = options.initializer->id();
    spec.initargs = options.initializer->args;
  }
  spec.maxtasks = options.maxtasksperchild;
  ProcessOptions po;
  po.name = "PoolWorker-" + std::to_string(++worker_counter);
  po.daemon = true;
  po.method = options.method;
  Process worker(std::move(po), &pool_worker_main, std::move(spec));
  worker.start();
  workers.push_back(std::move(worker));
  changed.notify_all();
}

void PoolCore::stop_everything(std::exception_ptr why, bool kill_workers) {
  run_deferred();  // results that arrived before the end are results, not failures
  std::vector<Pending> failed;
  std::vector<std::shared_ptr<StreamCore>> live_streams;
  std::vector<Process> to_stop;
  {
    std::lock_guard lock(mutex);
    if (state != State::terminated) {
      state = State::terminated;
      if (!broken) broken = why;
    }
    for (auto& [tid, p] : pending) failed.push_back(std::move(p));
    pending.clear();
    for (auto& w : streams) {
      if (auto s = w.lock()) live_streams.push_back(std::move(s));
    }
    streams.clear();
    if (kill_workers) to_stop = workers;
    changed.notify_all();
  }
  {
    std::lock_guard lock(outbox_mutex);  // the tasks in it fail with the rest
    outbox.clear();
    batch_sizes.clear();
    batch_payload.clear();
    batch_function = nullptr;
    outbox_ready.store(false);
  }
  for (auto& w : to_stop) {
    try {
      w.terminate();
    } catch (...) {
    }
  }
  for (auto& p : failed) p.sink->fail(p, why);
  for (auto& s : live_streams) s->fail_all(why);
}

void PoolCore::handle_delivery(const wire::Envelope& e) {
  if (e.body.size() != 2) throw ProtocolError("mpx: pool_delivery without its results frame");
  handle_results(view(e.body[1]), false);
}

// A results frame: pushed by the scheduler (pool_delivery), or handed over by the coordinator thread itself.
void PoolCore::handle_results(std::string_view frame, bool here) {
  bool wake_needed = false;
  auto handle = unpack_bounded(frame.data(), frame.size());
  const auto& records = expect(handle.get(), msgpack::type::ARRAY, "records");
  const std::uint32_t n = records.via.array.size;
  // Every record's shape first, so that a malformed frame changes nothing.
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto& r = expect(records.via.array.ptr[i], msgpack::type::ARRAY, "record");
    if (r.via.array.size != 4) throw ProtocolError("mpx: malformed pool results: record arity");
    (void)as_u64(r.via.array.ptr[0]);
    (void)as_u64(r.via.array.ptr[1]);
    (void)as_i64(r.via.array.ptr[2]);
  }
  // Then the frame's tasks leave `pending` under one lock: the submitting thread takes the same lock for each task.
  std::vector<Pending> tasks(n);
  {
    std::lock_guard lock(mutex);
    for (std::uint32_t i = 0; i < n; ++i) {
      const auto& r = records.via.array.ptr[i];
      auto it = pending.find(r.via.array.ptr[0].via.u64);
      if (it == pending.end()) continue;  // a duplicate after a requeue, or a task already failed or cancelled
      tasks[i] = std::move(it->second);
      pending.erase(it);
      const auto status = static_cast<Status>(r.via.array.ptr[1].via.u64);
      if (status == Status::ok || status == Status::error || status == Status::unserializable) {
        ++tasks_done[static_cast<pid_t>(as_i64(r.via.array.ptr[2]))];
      }
      if (attached) ++completing;
    }
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    Pending& task = tasks[i];
    if (!task.sink) continue;
    const auto& r = records.via.array.ptr[i];
    const auto status = static_cast<Status>(r.via.array.ptr[1].via.u64);
    const auto pid = static_cast<pid_t>(as_i64(r.via.array.ptr[2]));
    const auto& payload = r.via.array.ptr[3];
    // An attached handle's join() waits until its last task's outcome is in its result, not just claimed. (The
    // owner's join waits for its workers instead, so its fast path takes no second lock per result.)
    struct Completed {
      PoolCore* pool;
      ~Completed() {
        if (!pool) return;
        std::lock_guard lock(pool->mutex);
        if (--pool->completing == 0 && pool->pending.empty()) pool->changed.notify_all();
      }
    } completed{attached ? this : nullptr};
    std::string values;
    std::exception_ptr error;
    // A malformed payload fails its own task with the ProtocolError (its caller must not wait for ever); the
    // frame's other tasks, already out of `pending`, are still settled.
    try {
      switch (status) {
        case Status::ok:
          values = as_string(expect(payload, msgpack::type::BIN, "values"));
          break;
        case Status::error:
        case Status::unserializable: {
          const auto& p = expect(payload, msgpack::type::ARRAY, "error");
          if (p.via.array.size != 3) throw ProtocolError("mpx: malformed pool results: error arity");
          const auto type = as_string(p.via.array.ptr[0]);
          const auto message = as_string(p.via.array.ptr[1]);
          const auto index = task.task_index + as_u64(p.via.array.ptr[2]);  // the failing call's index
          error =
              status == Status::error
                  ? std::make_exception_ptr(RemoteError(type, message, pid, index))
                  : std::make_exception_ptr(SerializationError("mpx: task " + std::to_string(index) + " in worker " +
                                                               std::to_string(pid) + ": " + message));
          break;
        }
        case Status::lost: {
          const auto& p = expect(payload, msgpack::type::ARRAY, "lost");
          if (p.via.array.size != 2) throw ProtocolError("mpx: malformed pool results: lost arity");
          const auto exitcode = static_cast<int>(as_i64(p.via.array.ptr[0]));
          const auto attempts = static_cast<unsigned>(as_u64(p.via.array.ptr[1]));
          error = std::make_exception_ptr(WorkerLost(task.task_index, pid, exitcode, attempts));
          break;
        }
        default:
          error = std::make_exception_ptr(CancelledError("mpx: task " + std::to_string(task.task_index) +
                                                         " was cancelled"));
      }
    } catch (const ProtocolError&) {
      values.clear();
      error = std::current_exception();
    }
    if (!here) {
      task.sink->settle(task, std::move(values), std::move(error));
    } else if (!task.sink->complete_here(task, values, error)) {
      // It has callbacks: they run on the result thread, in the order the results came.
      std::lock_guard lock(deferred_mutex);
      deferred.push_back(Deferred{std::move(task), std::move(values), std::move(error)});
      wake_needed = true;
    }
  }
  if (wake_needed) wake();
}

void PoolCore::run_deferred() {
  for (;;) {
    std::deque<Deferred> batch;
    {
      std::lock_guard lock(deferred_mutex);
      if (deferred.empty()) return;
      batch.swap(deferred);
    }
    for (auto& d : batch) d.task.sink->settle(d.task, std::move(d.values), std::move(d.error));
  }
}

void PoolCore::worker_ended(zmq::socket_t& dealer, Process worker) {
  const int code = worker.exitcode().value_or(-SIGKILL);
  const pid_t pid = worker.pid();
  auto report = wire::make(wire::Kind::pool_worker_exit, id, 0,
                           std::make_tuple(static_cast<std::int64_t>(pid), static_cast<std::int64_t>(code)));
  wire::send(dealer, report, static_cast<std::uint64_t>(runtime::self_pid()));
  std::unique_lock lock(mutex);
  std::erase_if(workers, [pid](const Process& p) { return p.pid() == pid; });
  const bool used_up = options.maxtasksperchild && tasks_done[pid] >= options.maxtasksperchild;
  const bool never_worked = tasks_done[pid] == 0;
  tasks_done.erase(pid);
  changed.notify_all();
  if (state == State::terminated) return;
  // An initializer that raises would raise in every replacement too: Python's Pool restarts workers for ever (and its
  // map hangs); here the pool breaks at once, as Python's ProcessPoolExecutor does.
  if (options.initializer && code == initializer_failed_exit && never_worked) {
    lock.unlock();
    stop_everything(std::make_exception_ptr(BrokenProcessPool(
                        "mpx: the pool's initializer raised in worker " + std::to_string(pid) +
                        " (its error is on that worker's stderr); the pool cannot run tasks")),
                    true);
    return;
  }
  if (options.broken_on_worker_death && code != 0 && !used_up) {
    lock.unlock();
    stop_everything(std::make_exception_ptr(BrokenProcessPool(
                        "mpx: a process in the process pool was terminated abruptly (pid " + std::to_string(pid) +
                        ", exit code " + std::to_string(code) + ")")),
                    true);
    return;
  }
  // A closed pool replaces a worker that died or used up its tasks: work may remain, this owner's or an attached
  // handle's (which only the scheduler knows); if none does, the replacement is told `closed` and exits at once. One
  // that exited because the queue was drained is not replaced.
  const bool replace = state == State::running || code != 0 || used_up;
  if (replace) {
    try {
      start_worker();
    } catch (const std::exception& e) {
      lock.unlock();
      stop_everything(std::make_exception_ptr(BrokenProcessPool(std::string("mpx: cannot start a pool worker: ") +
                                                                e.what())),
                      true);
    }
  }
}

void PoolCore::run(zmq::socket_t& dealer) {
  for (;;) {
    try {
      if (run_once(dealer)) return;
    } catch (const std::exception& e) {
      // The result thread must outlive any one bad event, or every waiter would hang.
      std::cerr << "mpx: pool " << id << ": result thread: " << e.what() << "\n";
    }
  }
}

// One wake-up of the result thread; true when it should stop.
bool PoolCore::run_once(zmq::socket_t& dealer) {
  std::vector<zmq::pollitem_t> items;
  std::vector<Process> watched;
  for (;;) {
    {
      std::unique_lock lock(mutex);
      if (stop) {
        lock.unlock();
        run_deferred();
        return true;
      }
      watched = workers;
    }
    items.clear();
    items.push_back({dealer.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({nullptr, wake_fd, ZMQ_POLLIN, 0});
    items.push_back({nullptr, interrupt_fd, ZMQ_POLLIN, 0});
    bool reaped_elsewhere = false;
    for (auto& w : watched) {
      const int fd = w.sentinel();
      reaped_elsewhere = reaped_elsewhere || fd < 0;
      items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
    }
    if (reaped_elsewhere) {
      // Someone else reaped a worker (active_children(), for one): its sentinel is closed, but its exit code is kept.
      for (auto& w : watched) {
        if (w.sentinel() < 0) worker_ended(dealer, w);
      }
      continue;
    }
    try {
      (void)wire::poll(items.data(), items.size(), -1);
    } catch (const zmq::error_t& e) {
      if (e.num() == EBADF) continue;
      return true;  // the context is gone: the process is exiting
    }
    run_deferred();  // what the coordinator thread left here came before anything on the socket now
    if (items[0].revents & ZMQ_POLLIN) {
      for (;;) {
        std::optional<wire::Envelope> e;
        try {
          e = wire::recv(dealer, nullptr, true);
          if (!e) break;
          if (e->header.kind == wire::Kind::pool_delivery) {
            handle_delivery(*e);
          } else if (e->header.kind == wire::Kind::pool_ended) {
            // The owner is gone or terminated the pool: nothing this handle waits for can come any more.
            auto [reason, message] = e->body_as<std::tuple<std::uint8_t, std::string>>();
            stop_everything(reason == 1 ? std::make_exception_ptr(CancelledError(message))
                                        : std::make_exception_ptr(BrokenProcessPool(message)),
                            false);
          }
        } catch (const ProtocolError& err) {
          std::cerr << "mpx: pool " << id << ": dropped a malformed delivery: " << err.what() << "\n";
        }
      }
    }
    if (items[1].revents & ZMQ_POLLIN) {
      std::uint64_t n = 0;
      (void)!::read(wake_fd, &n, sizeof n);
    }
    if (items[2].revents & ZMQ_POLLIN) {
      std::uint64_t n = 0;
      (void)!::read(interrupt_fd, &n, sizeof n);
      auto why = std::make_exception_ptr(
          Interrupted("mpx: interrupted (SIGINT): the pool's workers were stopped and its tasks cancelled"));
      auto bye = leave_message();
      wire::send(dealer, bye, static_cast<std::uint64_t>(runtime::self_pid()));
      stop_everything(why, true);
    }
    for (std::size_t i = 0; i < watched.size(); ++i) {
      if (items[i + 3].revents & ZMQ_POLLIN) worker_ended(dealer, watched[i]);
    }
  }
}

// Appends a chunk's payload to `out`: a msgpack array header, then its calls' argument arrays as they were encoded.
void append_chunk(std::string& out, const EncodedCalls& calls, std::size_t first, std::size_t count) {
  struct Writer {
    std::string& out;
    void write(const char* data, std::size_t size) { out.append(data, size); }
  } writer{out};
  msgpack::packer<Writer>(writer).pack_array(static_cast<std::uint32_t>(count));
  out += calls.slice(first, count);
}

// pool_submit: [function (bin), [[task_id, size]...]] + the payloads. The function travels as the bin of its encoded
// FunctionId, which the scheduler stores as it is and the worker decodes.
wire::Envelope submit_message(std::uint64_t pool, const std::string& function,
                              const std::vector<std::tuple<std::uint64_t, std::uint64_t>>& sizes,
                              std::string_view payload) {
  msgpack::sbuffer body(64 + 12 * sizes.size());
  msgpack::packer<msgpack::sbuffer> pk(body);
  pk.pack_array(2);
  pk.pack_bin(static_cast<std::uint32_t>(function.size()));
  pk.pack_bin_body(function.data(), static_cast<std::uint32_t>(function.size()));
  pk.pack(sizes);
  wire::Envelope e;
  e.header.kind = wire::Kind::pool_submit;
  e.header.object = pool;
  e.body.reserve(2);
  e.body.emplace_back(body.data(), body.size());
  e.body.emplace_back(payload.data(), payload.size());
  return e;
}

// ---- the outbox of an owner in the coordinator's process ----

// The open batch is sealed into a message at this size, so that no one pull hands the scheduler a huge message.
constexpr std::size_t batch_max_bytes = std::size_t{1} << 20;

void PoolCore::seal_batch() {
  if (batch_sizes.empty()) return;
  outbox.push_back(submit_message(id, *batch_function, batch_sizes, batch_payload));  // copied: keeps its capacity
  outbox.back().header.sender = static_cast<std::uint64_t>(runtime::self_pid());
  batch_sizes.clear();
  batch_payload.clear();
  batch_function = nullptr;
}

bool PoolCore::outbox_add_single(const std::string& function, std::uint64_t task_id, const EncodedCalls& items) {
  if (batch_function != &function || batch_sizes.size() >= tasks_per_message || batch_payload.size() >= batch_max_bytes) {
    seal_batch();
  }
  batch_function = &function;
  const std::size_t before = batch_payload.size();
  append_chunk(batch_payload, items, 0, items.size());
  batch_sizes.emplace_back(task_id, batch_payload.size() - before);
  return published();
}

bool PoolCore::outbox_add(std::vector<wire::Envelope> messages) {
  seal_batch();
  for (auto& m : messages) {
    m.header.sender = static_cast<std::uint64_t>(runtime::self_pid());
    outbox.push_back(std::move(m));
  }
  return published();
}

// Seen by the scheduler's next look; and if it asked for a ring (a worker waits), the caller rings.
bool PoolCore::published() {
  outbox_ready.store(true);  // sequentially consistent, with the exchange: see the members
  return ring_wanted.exchange(false);
}

void PoolCore::ring() const { post(wire::make(wire::Kind::pool_pull, id, 0, Object{})); }

void PoolCore::send_submissions(std::vector<wire::Envelope> messages) {
  if (!local_outbox) {
    for (auto& m : messages) post(std::move(m));
    return;
  }
  bool must_ring = false;
  {
    std::lock_guard lock(mutex);
    if (state == State::terminated) return;  // its tasks were failed with the rest
  }
  {
    std::lock_guard lock(outbox_mutex);
    must_ring = outbox_add(std::move(messages));
  }
  if (must_ring) ring();
}

// ---- results ----

bool result_wait(ResultCore& core, const Timeout& timeout) {
  WaitingCaller waiting;
  std::unique_lock lock(core.mutex);
  if (!timeout) {
    core.changed.wait(lock, [&] { return core.done; });
    return true;
  }
  const auto limit = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(timeout->count(), 0.0) *
                                                                          std::chrono::seconds(1));
  return core.changed.wait_for(lock, limit, [&] { return core.done; });
}

void throw_empty_result(const char* type) {
  throw ValueError(std::string("mpx: this ") + type + " is empty (default-constructed and never assigned a result)");
}

bool result_ready(const ResultCore& core) {
  std::lock_guard lock(const_cast<ResultCore&>(core).mutex);
  return core.done;
}

bool result_successful(const ResultCore& core) {
  std::lock_guard lock(const_cast<ResultCore&>(core).mutex);
  if (!core.done) throw ValueError("mpx: the result is not ready");
  return !core.error;
}

void result_check(ResultCore& core, const Timeout& timeout) {
  if (!result_wait(core, timeout)) throw TimeoutError("mpx: the result was not ready within the timeout");
  std::lock_guard lock(core.mutex);
  if (core.error) std::rethrow_exception(core.error);
}

const std::vector<std::string>& result_values(const ResultCore& core) { return core.values; }
std::size_t result_size(const ResultCore& core) { return core.size; }

std::uint64_t& chunk_offset() noexcept {
  thread_local std::uint64_t offset = 0;
  return offset;
}
bool result_single(const ResultCore& core) { return core.single; }

bool result_cancelled(const ResultCore& core) {
  std::lock_guard lock(const_cast<ResultCore&>(core).mutex);
  return core.cancelled;
}

void result_add_done_callback(ResultCore& core, std::function<void()> callback) {
  {
    std::lock_guard lock(core.mutex);
    if (!core.done) {
      core.done_callbacks.push_back(std::move(callback));
      return;
    }
  }
  ResultCore::run_callback(callback);  // already done: at once, on this thread, as Python does
}

std::exception_ptr result_error(const ResultCore& core) {
  std::lock_guard lock(const_cast<ResultCore&>(core).mutex);
  return core.error;
}

// ---- the pool's operations ----

namespace {

// This process's owned pools by id, for the coordinator thread's local delivery (services::set_pool_local_delivery).
// The hook holds the mutex while it uses a pool, so a Pool that unregisters (its destructor, first thing) is never
// touched, nor freed, by the coordinator thread afterwards.
std::mutex local_pools_mutex;
std::unordered_map<std::uint64_t, std::weak_ptr<PoolCore>>& local_pools() {
  static auto* pools = new std::unordered_map<std::uint64_t, std::weak_ptr<PoolCore>>();  // outlives exit-time threads
  return *pools;
}

// Only a frame of a few records is taken here: that is the latency case (a lone task, a few concurrent ones). A big
// frame is a batch, whose parsing would take the coordinator thread from its other work for longer than the hop to
// the result thread (which parses it meanwhile) costs.
constexpr std::size_t local_delivery_max_records = 4;

// The scheduler's look at an owner's outbox (services::PoolLocalSubmissions), on the coordinator thread.
void pull_local_submissions(std::uint64_t pool, bool ring, std::vector<wire::Envelope>& out) {
  std::lock_guard lock(local_pools_mutex);
  auto it = local_pools().find(pool);
  if (it == local_pools().end()) return;
  auto core = it->second.lock();
  if (!core) return;
  if (ring) core->ring_wanted.store(true);  // before the read of outbox_ready: see PoolCore's members
  if (!core->outbox_ready.load()) return;
  std::lock_guard outbox_lock(core->outbox_mutex);
  core->seal_batch();
  out = std::move(core->outbox);
  core->outbox.clear();
  core->outbox_ready.store(false);
}

bool deliver_locally(std::uint64_t pool, std::string_view results) {
  // A msgpack fixarray header (0x90 | n) names a frame of n <= 15 records in its first byte.
  const auto head = results.empty() ? 0u : static_cast<unsigned>(static_cast<unsigned char>(results[0]));
  if ((head & 0xf0u) != 0x90u || (head & 0x0fu) > local_delivery_max_records) return false;
  std::lock_guard lock(local_pools_mutex);
  auto it = local_pools().find(pool);
  if (it == local_pools().end()) return false;
  auto core = it->second.lock();
  if (!core) return false;
  try {
    core->handle_results(results, true);
  } catch (const std::exception& e) {
    std::cerr << "mpx: pool " << pool << ": dropped a malformed delivery: " << e.what() << "\n";
  }
  return true;
}

void register_local_pool(const std::shared_ptr<PoolCore>& core) {
  static std::once_flag hooked;
  std::call_once(hooked, [] {
    services::set_pool_local_delivery(&deliver_locally);
    services::set_pool_local_submissions(&pull_local_submissions);
  });
  core->local_outbox = true;  // before any submission: fixed from here on
  std::lock_guard lock(local_pools_mutex);
  local_pools()[core->id] = core;
}

void unregister_local_pool(std::uint64_t id) {
  std::lock_guard lock(local_pools_mutex);
  local_pools().erase(id);
}

std::shared_ptr<PoolCore> new_core() {
  auto core = std::make_shared<PoolCore>();
  core->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  core->interrupt_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (core->wake_fd < 0 || core->interrupt_fd < 0) {
    throw std::system_error(errno, std::generic_category(), "mpx: eventfd for a Pool");
  }
  return core;
}

// The result socket: a DEALER of its own, subscribed by the request it sends (pool_create or pool_attach): the
// scheduler pushes this submitter's deliveries to it. Returns the socket and the request's ok reply.
std::pair<zmq::socket_t, wire::Envelope> open_result_socket(wire::Envelope request) {
  runtime::ensure_coordinator();
  const runtime::Coordinator* local = runtime::coordinator_if_running();
  const std::string endpoint = local ? local->local_endpoint() : runtime::state().session.coordinator_endpoint;
  zmq::socket_t dealer(runtime::context(), zmq::socket_type::dealer);
  wire::configure(dealer, endpoint);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::rcvhwm, 0);  // deliveries are answers to our own submissions: never drop one
  dealer.connect(endpoint);
  const auto kind = request.header.kind;
  wire::send(dealer, request, static_cast<std::uint64_t>(runtime::self_pid()));
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  if (wire::poll(&item, 1, 30000) == 0) {
    throw TimeoutError("mpx: the coordinator did not answer " + std::string(wire::kind_name(kind)));
  }
  auto reply = wire::recv(dealer, nullptr, false);
  if (!reply) throw ProtocolError("mpx: no answer to " + std::string(wire::kind_name(kind)));
  if (reply->header.kind == wire::Kind::error) raise_error(*reply);
  if (reply->header.kind != wire::Kind::ok) throw ProtocolError("mpx: " + std::string(wire::kind_name(kind)) + " was refused");
  return {std::move(dealer), std::move(*reply)};
}

// Ctrl-C, then the result thread; the socket moves to the thread here (thread creation is the memory barrier ZeroMQ
// asks for).
void start_result_thread(PoolCore& core, zmq::socket_t dealer) {
  install_sigint_handler();
  core.interrupt_slot = register_interrupt_fd(core.interrupt_fd);
  PoolCore* raw = &core;
  core.result_thread = std::thread([raw, dealer = std::move(dealer)]() mutable { raw->run(dealer); });
}

}  // namespace

std::shared_ptr<PoolCore> pool_start(PoolOptions options) {
  runtime::require_initialized();
  if (options.processes && *options.processes < 1) throw ValueError("mpx: Number of processes must be at least 1");
  auto core = new_core();
  core->processes = static_cast<std::size_t>(options.processes.value_or(cpu_count()));
  core->options = std::move(options);
  // The workers run this program: attached handles compare their functions' build against it.
  auto [dealer, reply] = open_result_socket(wire::make(
      wire::Kind::pool_create, 0, 1,
      std::make_tuple(core->options.max_retries, static_cast<std::uint32_t>(core->processes), main_build_id())));
  core->id = std::get<0>(reply.body_as<std::tuple<std::uint64_t>>());
  core->endpoint = coordinator_endpoint();
  // Before any result can come: the coordinator may hand this pool's results straight to it.
  if (runtime::coordinator_if_running()) register_local_pool(core);
  {
    std::lock_guard lock(core->mutex);
    for (std::size_t i = 0; i < core->processes; ++i) core->start_worker();
  }
  start_result_thread(*core, std::move(dealer));
  return core;
}

std::shared_ptr<PoolCore> pool_attach(const ObjectRef& ref) {
  runtime::require_initialized();
  runtime::ensure_coordinator();
  if (ref.endpoint != coordinator_endpoint()) {
    throw ValueError("mpx: this Pool belongs to the session at " + ref.endpoint + ", not this one (" +
                     coordinator_endpoint() + ")");
  }
  auto core = new_core();
  core->attached = true;
  auto [dealer, reply] = open_result_socket(wire::make(wire::Kind::pool_attach, ref.id, 1, Object{}));
  auto [submitter, processes, max_retries, build_id] =
      reply.body_as<std::tuple<std::uint64_t, std::uint32_t, std::uint32_t, std::string>>();
  core->id = ref.id;
  core->endpoint = ref.endpoint;
  core->submitter = submitter;
  core->processes = std::max<std::size_t>(1, processes);
  core->options.processes = static_cast<int>(core->processes);
  core->options.max_retries = max_retries;
  core->workers_build_id = std::move(build_id);
  core->next_task_id = (submitter << submitter_shift) + 1;
  start_result_thread(*core, std::move(dealer));
  return core;
}

ObjectRef pool_ref(const PoolCore& pool) { return ObjectRef{pool.id, pool.endpoint}; }
bool pool_attached(const PoolCore& pool) { return pool.attached; }

namespace {
// Python's "Pool not running" for a closed or terminated pool; a pool that broke (a lost worker, Ctrl-C) says why
// instead. The CancelledError terminate() left is the answer for the tasks it cancelled, not for new ones.
[[noreturn]] void throw_not_running(const PoolCore& pool) {
  if (pool.broken) {
    try {
      std::rethrow_exception(pool.broken);
    } catch (const CancelledError&) {
    }
  }
  throw ValueError("mpx: Pool not running");
}
}  // namespace

void pool_require_running(const PoolCore& pool) {
  std::lock_guard lock(pool.mutex);
  if (pool.state != PoolCore::State::running) throw_not_running(pool);
}

std::shared_ptr<ResultCore> pool_submit(PoolCore& pool, Submission s) {
  auto result = std::make_shared<ResultCore>();
  result->single = s.single;
  result->size = s.items.size();
  result->on_done = std::move(s.on_done);
  result->progress = std::move(s.progress);
  result->pool = pool.weak_from_this();
  const std::size_t chunksize = std::max<std::size_t>(1, s.chunksize);
  const std::size_t chunks = (s.items.size() + chunksize - 1) / chunksize;
  result->remaining = chunks;
  result->values.resize(chunks);
  const std::string* function = nullptr;
  std::uint64_t first_id = 0;
  std::uint64_t submission = 0;
  bool ring = false;
  {
    std::lock_guard lock(pool.mutex);
    if (pool.state != PoolCore::State::running) throw_not_running(pool);
    function = &pool.function_id(s.function, s.trampoline);  // entries are never erased: the pointer stays valid
    first_id = pool.next_task_id;
    pool.next_task_id += chunks;
    submission = pool.next_submission++;
    result->first_task = first_id;
    result->tasks = chunks;
    for (std::size_t c = 0; c < chunks; ++c) {
      const std::size_t first = c * chunksize;
      const auto count = static_cast<std::uint32_t>(std::min(chunksize, s.items.size() - first));
      pool.pending.emplace(first_id + c, Pending{result, c, count, s.single ? submission : first});
    }
  }
  if (pool.local_outbox && chunks == 1) {
    // One chunk (apply_async, submit) joins the outbox's open batch: no message of its own.
    std::lock_guard lock(pool.outbox_mutex);
    ring = pool.outbox_add_single(*function, first_id, s.items);
  }
  if (ring) pool.ring();
  if (chunks == 1 && pool.local_outbox) return result;
  if (chunks == 0) {
    std::unique_lock lock(result->mutex);
    result->finish(lock);
    return result;
  }
  // A message carries up to tasks_per_message chunks.
  std::vector<wire::Envelope> messages;
  for (std::size_t c0 = 0; c0 < chunks; c0 += tasks_per_message) {
    const std::size_t c1 = std::min(chunks, c0 + tasks_per_message);
    std::vector<std::tuple<std::uint64_t, std::uint64_t>> sizes;
    sizes.reserve(c1 - c0);
    std::string payload;
    payload.reserve(s.items.slice(c0 * chunksize, std::min(c1 * chunksize, s.items.size()) - c0 * chunksize).size() +
                    5 * (c1 - c0));
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t first = c * chunksize;
      const std::size_t before = payload.size();
      append_chunk(payload, s.items, first, std::min(chunksize, s.items.size() - first));
      sizes.emplace_back(first_id + c, payload.size() - before);
    }
    messages.push_back(submit_message(pool.id, *function, sizes, payload));
  }
  pool.send_submissions(std::move(messages));
  return result;
}

std::size_t pool_processes(const PoolCore& pool) { return pool.processes; }

std::size_t pool_default_chunksize(const PoolCore& pool, std::size_t items) {
  const std::size_t per = pool.processes * 4;
  return std::max<std::size_t>(1, (items + per - 1) / per);
}

bool pool_cancel(PoolCore& pool, ResultCore& result) {
  if (result_ready(result)) return false;
  bool all = true;
  for (auto id = result.first_task; id < result.first_task + result.tasks; ++id) {
    auto reply = call(wire::make(wire::Kind::pool_cancel, pool.id, 0, std::make_tuple(id)), 0);
    all = all && std::get<0>(reply.body_as<std::tuple<bool>>());
  }
  if (!all) return false;
  Pending task;
  {
    std::lock_guard lock(pool.mutex);
    for (auto id = result.first_task; id < result.first_task + result.tasks; ++id) {
      auto it = pool.pending.find(id);
      if (it == pool.pending.end()) continue;
      task = std::move(it->second);
      pool.pending.erase(it);
    }
  }
  {
    std::lock_guard lock(result.mutex);
    result.cancelled = true;
  }
  if (task.sink) task.sink->fail(task, std::make_exception_ptr(CancelledError("mpx: the task was cancelled")));
  return true;
}

int pool_task_state(PoolCore& pool, ResultCore& result) {
  if (result_ready(result) || result.tasks == 0) return 2;
  auto reply = call(wire::make(wire::Kind::pool_task_state, pool.id, 0, std::make_tuple(result.first_task)), 0);
  return std::get<0>(reply.body_as<std::tuple<std::uint8_t>>());
}

void pool_close(PoolCore& pool) {
  {
    std::lock_guard lock(pool.mutex);
    if (pool.state != PoolCore::State::running) return;
    pool.state = PoolCore::State::closed;
    if (pool.attached) return;  // this handle takes no more tasks; the pool goes on for the others
  }
  post(wire::make(wire::Kind::pool_close, pool.id, 0, Object{}));
}

void pool_terminate(PoolCore& pool) {
  {
    std::lock_guard lock(pool.mutex);
    if (pool.stop) return;
  }
  try {
    (void)call(pool.leave_message(), 0);
  } catch (const std::exception&) {
    // The coordinator is gone (the process is exiting): the workers die with their parent anyway.
  }
  pool.stop_everything(std::make_exception_ptr(CancelledError("mpx: the pool was terminated")), true);
  pool.wake();
  // The result thread reaps the workers; a worker that ignores SIGTERM gets SIGKILL after a grace period.
  std::unique_lock lock(pool.mutex);
  if (!pool.changed.wait_for(lock, terminate_grace, [&] { return pool.workers.empty(); })) {
    auto stubborn = pool.workers;
    lock.unlock();
    for (auto& w : stubborn) {
      try {
        w.kill();
      } catch (...) {
      }
    }
    lock.lock();
    pool.changed.wait(lock, [&] { return pool.workers.empty(); });
  }
}

void pool_join(PoolCore& pool) {
  {
    std::lock_guard lock(pool.mutex);
    if (pool.state == PoolCore::State::running) throw ValueError("mpx: Pool is still running");
  }
  WaitingCaller waiting;
  std::unique_lock lock(pool.mutex);
  // An attached handle has no workers: its join waits for its own tasks.
  pool.changed.wait(lock, [&] {
    return pool.workers.empty() && (!pool.attached || (pool.pending.empty() && pool.completing == 0));
  });
}

std::vector<pid_t> pool_pids(const PoolCore& pool) {
  std::lock_guard lock(pool.mutex);
  std::vector<pid_t> out;
  for (const auto& w : pool.workers) out.push_back(w.pid());
  return out;
}

std::uint64_t pool_id(const PoolCore& pool) { return pool.id; }

void pool_forget_local(const PoolCore& pool) { unregister_local_pool(pool.id); }

PoolStats pool_stats(PoolCore& pool) {
  auto reply = call(wire::make(wire::Kind::pool_stats, pool.id, 0, Object{}), 0);
  auto [queued, held, workers, requeued, lost] = reply.body_as<
      std::tuple<std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t>>();
  return PoolStats{queued, held, workers, requeued, lost};
}

// ---- streams ----

void report_progress(const Progress& progress, std::size_t done, std::size_t total) noexcept {
  try {
    progress(done, total);
  } catch (const std::exception& e) {
    std::cerr << "mpx: a Pool progress callback raised " << current_exception_type() << ": " << e.what() << "\n";
  } catch (...) {
    std::cerr << "mpx: a Pool progress callback raised an exception\n";
  }
}

Timeout time_left(const std::optional<std::chrono::steady_clock::time_point>& deadline) {
  if (!deadline) return std::nullopt;
  return std::max(std::chrono::duration<double>(*deadline - std::chrono::steady_clock::now()),
                  std::chrono::duration<double>(0));
}

std::shared_ptr<StreamCore> stream_open(PoolCore& pool, ErasedFunction function, Trampoline trampoline, bool ordered) {
  auto stream = std::make_shared<StreamCore>();
  stream->ordered = ordered;
  stream->function = function;
  stream->trampoline = trampoline;
  stream->pool = pool.weak_from_this();
  std::lock_guard lock(pool.mutex);
  std::erase_if(pool.streams, [](const auto& w) { return w.expired(); });
  pool.streams.push_back(stream);
  return stream;
}

void stream_feed(StreamCore& stream, const EncodedCalls& items) {
  auto pool = stream.pool.lock();
  if (!pool) throw ValueError("mpx: Pool not running");
  const auto count = static_cast<std::uint32_t>(items.size());
  const std::string* function = nullptr;
  std::uint64_t id = 0;
  std::uint64_t first = 0;
  {
    std::lock_guard lock(pool->mutex);
    if (pool->state == PoolCore::State::terminated) throw_not_running(*pool);
    function = &pool->function_id(stream.function, stream.trampoline);  // entries are never erased
    id = pool->next_task_id++;
    {
      std::lock_guard slock(stream.mutex);
      first = stream.fed;
      stream.fed += count;
      stream.outstanding += count;
    }
    pool->pending.emplace(id, Pending{stream.shared_from_this(), 0, count, first});
  }
  std::string payload;
  append_chunk(payload, items, 0, items.size());
  std::vector<std::tuple<std::uint64_t, std::uint64_t>> sizes{{id, payload.size()}};
  std::vector<wire::Envelope> messages;
  messages.push_back(submit_message(pool->id, *function, sizes, payload));
  pool->send_submissions(std::move(messages));
}

// Executor::map's timeout passed: as Python's map does when its result iterator raises, the calls no worker has
// taken yet are cancelled, so they never run. Those a worker holds finish; nobody reads their results.
void stream_cancel(StreamCore& stream) {
  auto pool = stream.pool.lock();
  if (!pool) return;
  std::vector<std::uint64_t> ids;
  {
    std::lock_guard lock(pool->mutex);
    for (const auto& [id, task] : pool->pending) {
      if (task.sink.get() == &stream) ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  for (auto id : ids) {
    auto reply = call(wire::make(wire::Kind::pool_cancel, pool->id, 0, std::make_tuple(id)), 0);
    if (!std::get<0>(reply.body_as<std::tuple<bool>>())) continue;  // a worker holds it, or it is done
    Pending task;
    {
      std::lock_guard lock(pool->mutex);
      auto it = pool->pending.find(id);
      if (it == pool->pending.end()) continue;
      task = std::move(it->second);
      pool->pending.erase(it);
    }
    task.sink->fail(task, std::make_exception_ptr(CancelledError("mpx: the call was cancelled: map's timeout passed")));
  }
}

std::size_t stream_outstanding(const StreamCore& stream) {
  std::lock_guard lock(const_cast<StreamCore&>(stream).mutex);
  return stream.outstanding;
}

std::string stream_next(StreamCore& stream, const Timeout& timeout) {
  WaitingCaller waiting;
  std::unique_lock lock(stream.mutex);
  auto arrived = [&] {
    if (stream.ordered) return stream.arrived.count(stream.next_first) > 0;
    return !stream.arrived.empty();
  };
  auto available = [&] { return stream.fatal || arrived(); };
  if (!timeout) {
    stream.changed.wait(lock, available);
  } else {
    const auto limit = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(timeout->count(), 0.0) *
                                                                            std::chrono::seconds(1));
    if (!stream.changed.wait_for(lock, limit, available)) {
      throw TimeoutError("mpx: no result within the timeout");
    }
  }
  // Results that came in before the pool ended are still results (an executor's map read after its shutdown).
  if (!arrived()) std::rethrow_exception(stream.fatal);
  auto it = stream.ordered ? stream.arrived.find(stream.next_first) : stream.arrived.begin();
  StreamCore::Chunk chunk = std::move(it->second);
  stream.arrived.erase(it);
  stream.outstanding -= chunk.count;
  if (stream.ordered) stream.next_first += chunk.count;
  if (chunk.error) std::rethrow_exception(chunk.error);
  return std::move(chunk.values);
}

// Pool's destructor: the coordinator thread no longer hands this pool results (it may be freed next).
void pool_forget_local(const PoolCore& pool);

}  // namespace mpx::detail

namespace mpx {

namespace {
PoolOptions with_processes(std::optional<int> processes) {
  PoolOptions options;
  options.processes = processes;
  return options;
}
}  // namespace

Pool::Pool(std::optional<int> processes) : Pool(with_processes(processes)) {}

Pool::Pool(PoolOptions options) : core_(detail::pool_start(std::move(options))) {}

Pool::~Pool() {
  if (!core_) return;
  if (!core_->attached) detail::pool_forget_local(*core_);
  try {
    detail::pool_terminate(*core_);
  } catch (const std::exception& e) {
    std::cerr << "mpx: terminating a Pool: " << e.what() << "\n";
  }
  {
    std::lock_guard lock(core_->mutex);
    core_->stop = true;
  }
  core_->wake();
  if (core_->result_thread.joinable()) core_->result_thread.join();
}

void Pool::close() { detail::pool_close(*core_); }
void Pool::terminate() { detail::pool_terminate(*core_); }
void Pool::join() { detail::pool_join(*core_); }
std::size_t Pool::processes() const { return detail::pool_processes(*core_); }
std::vector<pid_t> Pool::pids() const { return detail::pool_pids(*core_); }

}  // namespace mpx
