// mpx::Pool, the owner's client: task ids, result states, the result thread that receives the scheduler's pushes,
// watches the workers' sentinels and replaces dead workers; and the attached handle's side (the same without workers:
// a submitter of another process's pool). pool_core.hpp names the other roles' files.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>

#include <sys/eventfd.h>
#include <unistd.h>

#include <mpx/nodes.hpp>

#include "api/call.hpp"
#include "api/pool/pool_core.hpp"
#include "runtime/channel.hpp"
#include "runtime/coordinator.hpp"
#include "runtime/runtime.hpp"
#include "wire/envelope.hpp"

namespace mpx::detail {

namespace {

using Status = wire::PoolStatus;

// After SIGTERM, how long terminate() waits for a worker before SIGKILL.
constexpr auto terminate_grace = std::chrono::seconds(2);

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

}  // namespace

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

void PoolCore::worker_ended(runtime::Channel& results, Process worker) {
  const int code = worker.exitcode().value_or(-SIGKILL);
  const pid_t pid = worker.pid();
  // The scheduler knows a worker by its actor id, which names its node too.
  auto report = wire::make(wire::Kind::pool_worker_exit, id, 0,
                           std::make_tuple(static_cast<std::int64_t>(actor_of(worker)), static_cast<std::int64_t>(code)));
  results.post(std::move(report));
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

void PoolCore::run(runtime::Channel& results) {
  for (;;) {
    try {
      if (run_once(results)) return;
    } catch (const std::exception& e) {
      // The result thread must outlive any one bad event, or every waiter would hang.
      std::cerr << "mpx: pool " << id << ": result thread: " << e.what() << "\n";
    }
  }
}

// One wake-up of the result thread; true when it should stop.
bool PoolCore::run_once(runtime::Channel& results) {
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
        if (w.sentinel() < 0) worker_ended(results, w);
      }
      continue;
    }
    bool pushed = false;
    try {
      pushed = results.wait_for_push(items, std::nullopt);
    } catch (const zmq::error_t& e) {
      if (e.num() == EBADF) continue;
      return true;  // the context is gone: the process is exiting
    }
    run_deferred();  // what the coordinator thread left here came before anything on the socket now
    if (pushed) {
      for (;;) {
        std::optional<wire::Envelope> e;
        try {
          e = results.next_push();
          if (!e) break;
          if (e->header.kind == wire::Kind::pool_delivery) {
            handle_delivery(*e);
          } else if (e->header.kind == wire::Kind::pool_ended) {
            // The owner is gone or terminated the pool: nothing this handle waits for can come any more.
            auto [reason, message] = e->body_as<std::tuple<std::uint8_t, std::string>>();
            const bool terminated = static_cast<wire::PoolEnded>(reason) == wire::PoolEnded::terminated;
            stop_everything(terminated ? std::make_exception_ptr(CancelledError(message))
                                       : std::make_exception_ptr(BrokenProcessPool(message)),
                            false);
          }
        } catch (const ProtocolError& err) {
          std::cerr << "mpx: pool " << id << ": dropped a malformed delivery: " << err.what() << "\n";
        }
      }
    }
    if (items[0].revents & ZMQ_POLLIN) {
      std::uint64_t n = 0;
      (void)!::read(wake_fd, &n, sizeof n);
    }
    if (items[1].revents & ZMQ_POLLIN) {
      std::uint64_t n = 0;
      (void)!::read(interrupt_fd, &n, sizeof n);
      auto why = std::make_exception_ptr(
          Interrupted("mpx: interrupted (SIGINT): the pool's workers were stopped and its tasks cancelled"));
      auto bye = leave_message();
      results.post(std::move(bye));
      stop_everything(why, true);
    }
    for (std::size_t i = 0; i < watched.size(); ++i) {
      if (items[i + 2].revents & ZMQ_POLLIN) worker_ended(results, watched[i]);
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

std::shared_ptr<PoolCore> new_core() {
  auto core = std::make_shared<PoolCore>();
  core->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  core->interrupt_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (core->wake_fd < 0 || core->interrupt_fd < 0) {
    throw std::system_error(errno, std::generic_category(), "mpx: eventfd for a Pool");
  }
  return core;
}

// The result channel: a DEALER of its own, subscribed by the request it sends (pool_create or pool_attach): the
// scheduler pushes this submitter's deliveries to it. Returns the channel and the request's ok reply.
std::pair<std::unique_ptr<runtime::Channel>, wire::Envelope> open_result_channel(wire::Envelope request) {
  runtime::ensure_coordinator();
  const runtime::Coordinator* local = runtime::coordinator_if_running();
  const std::string endpoint = local ? local->local_endpoint() : runtime::state().session.coordinator_endpoint;
  auto channel = runtime::Channel::for_pushes(runtime::context(), endpoint);
  const auto kind = request.header.kind;
  auto reply = channel->request(std::move(request), std::chrono::seconds(30));
  if (reply.header.kind == wire::Kind::error) raise_error(reply);
  if (reply.header.kind != wire::Kind::ok) {
    throw ProtocolError("mpx: " + std::string(wire::kind_name(kind)) + " was refused");
  }
  return {std::move(channel), std::move(reply)};
}

// Ctrl-C, then the result thread; the channel moves to the thread here (thread creation is the memory barrier ZeroMQ
// asks for).
void start_result_thread(PoolCore& core, std::unique_ptr<runtime::Channel> results) {
  core.interrupt_slot = watch_interrupts(core.interrupt_fd);
  PoolCore* raw = &core;
  core.result_thread = std::thread([raw, results = std::move(results)] { raw->run(*results); });
}

}  // namespace

namespace {
// The node of each worker, in the order they start; empty for a pool on this host only.
std::vector<std::uint32_t> plan_placement(const PoolOptions& options) {
  if (options.placement == Placement::local) return {};
  if (options.placement == Placement::pinned && options.nodes.empty()) {
    throw ValueError("mpx: Placement::pinned needs the nodes to start workers on (PoolOptions::nodes)");
  }
  std::vector<NodeInfo> chosen;
  for (auto& node : mpx::nodes()) {
    if (node.state != "alive") continue;
    if (options.placement == Placement::pinned &&
        std::find(options.nodes.begin(), options.nodes.end(), node.id) == options.nodes.end()) {
      continue;
    }
    chosen.push_back(std::move(node));
  }
  if (options.placement == Placement::pinned && chosen.size() != options.nodes.size()) {
    std::string missing;
    for (const auto id : options.nodes) {
      if (std::none_of(chosen.begin(), chosen.end(), [id](const NodeInfo& n) { return n.id == id; })) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(id);
      }
    }
    throw ValueError("mpx: no alive node " + missing + " to pin pool workers to (see mpx::nodes())");
  }
  std::vector<std::uint32_t> plan;
  if (options.processes) {
    for (int i = 0; i < *options.processes; ++i) plan.push_back(chosen[static_cast<std::size_t>(i) % chosen.size()].id);
  } else {
    for (const auto& node : chosen) plan.insert(plan.end(), std::max<std::uint32_t>(node.cpus, 1), node.id);
  }
  return plan;
}
}  // namespace

std::shared_ptr<PoolCore> pool_start(PoolOptions options) {
  runtime::require_initialized();
  if (options.processes && *options.processes < 1) throw ValueError("mpx: Number of processes must be at least 1");
  auto core = new_core();
  core->placement = plan_placement(options);
  core->processes = core->placement.empty() ? static_cast<std::size_t>(options.processes.value_or(cpu_count()))
                                            : core->placement.size();
  core->options = std::move(options);
  // The workers run this program: attached handles compare their functions' build against it.
  auto [results, reply] = open_result_channel(wire::make(
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
  start_result_thread(*core, std::move(results));
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
  auto [results, reply] = open_result_channel(wire::make(wire::Kind::pool_attach, ref.id, 1, Object{}));
  auto [submitter, processes, max_retries, build_id] =
      reply.body_as<std::tuple<std::uint64_t, std::uint32_t, std::uint32_t, std::string>>();
  core->id = ref.id;
  core->endpoint = ref.endpoint;
  core->submitter = submitter;
  core->processes = std::max<std::size_t>(1, processes);
  core->options.processes = static_cast<int>(core->processes);
  core->options.max_retries = max_retries;
  core->workers_build_id = std::move(build_id);
  core->next_task_id = wire::pool_first_task_id(submitter);
  start_result_thread(*core, std::move(results));
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

namespace {

// Asks the scheduler to drop task `id` before a worker takes it: false if a worker holds it or it is done.
bool cancel_queued_task(const PoolCore& pool, std::uint64_t id) {
  auto reply = call(wire::make(wire::Kind::pool_cancel, pool.id, 0, std::make_tuple(id)), 0);
  return std::get<0>(reply.body_as<std::tuple<bool>>());
}

// Takes task `id`'s entry out of the pool's pending table; an entry without a sink if it is not there.
Pending take_pending(PoolCore& pool, std::uint64_t id) {
  std::lock_guard lock(pool.mutex);
  Pending task;
  if (auto it = pool.pending.find(id); it != pool.pending.end()) {
    task = std::move(it->second);
    pool.pending.erase(it);
  }
  return task;
}

}  // namespace

bool pool_cancel(PoolCore& pool, ResultCore& result) {
  if (result_ready(result)) return false;
  bool all = true;
  for (auto id = result.first_task; id < result.first_task + result.tasks; ++id) {
    all = all && cancel_queued_task(pool, id);
  }
  if (!all) return false;
  Pending task;
  for (auto id = result.first_task; id < result.first_task + result.tasks; ++id) {
    if (Pending taken = take_pending(pool, id); taken.sink) task = std::move(taken);
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
    if (!cancel_queued_task(*pool, id)) continue;  // a worker holds it, or it is done
    Pending task = take_pending(*pool, id);
    if (!task.sink) continue;
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
