// Message kinds. framework/PROTOCOL.md documents each one with its body and its reply; keep the two in step.
// Each service owns a range of ids: runtime 10-19, queues 20-39, sync 40-69, pipes and connections 70-89,
// pool and executor 90-119.
#pragma once

#include <cstdint>
#include <string_view>

namespace mpx::wire {

enum class Kind : std::uint16_t {
  // generic replies
  ok = 1,     // success; body depends on the request
  error = 2,  // [code, message]

  // runtime
  hello = 10,                // actor -> coordinator: [pid, parent_pid, name]
  ping = 11,                 // -> pong
  pong = 12,
  stats = 13,                // -> ok [received, malformed, actors]
  process_error = 14,        // actor -> coordinator: [pid, type, message, host]; -> ok
  process_error_query = 15,  // [pid] -> ok [found, type, message, pid, host]
  metrics = 16,              // nil -> ok [snapshot] (PROTOCOL.md, "Metrics")

  // queues (services/queues.cpp)
  queue_create = 20,     // [maxsize, joinable] -> ok [object id]
  queue_put = 21,        // [timeout_ms] + item frame -> ok nil | error full   (timeout_ms: -1 forever, 0 no wait)
  queue_put_posted = 22, // [nil] + item frame (unbounded queues; no reply, errors are counted)
  queue_get = 23,        // [timeout_ms, max_items, consumed] -> ok nil + one frame of 1..max_items items | error empty
  queue_size = 24,       // [consumed] -> ok [qsize, maxsize]
  queue_release = 25,    // [consumed] (posted): a consumer thread gives back its unconsumed lent items
  queue_task_done = 26,  // [consumed] -> ok nil | error value (called too many times)
  queue_join = 27,       // [timeout_ms] -> ok nil once every item is done | error timeout
  queue_lane = 28,       // nil -> ok [ring name or "", token, host key], once the sender's posted puts are in the ring
  queue_lane_poke = 29,  // nil (posted): a lane's ring changed while the coordinator has requests parked on it
  queue_unget = 30,      // [nil] + item frame (posted): the item the sender got did not decode; back to the head

  // synchronization (services/sync.cpp); timeout_ms: -1 forever, 0 no wait
  lock_create = 40,          // [recursive] -> ok [id]
  lock_acquire = 41,         // [timeout_ms] -> ok [acquired, previous_owner_died]
  lock_release = 42,         // nil -> ok nil | error not_owner
  lock_release_posted = 43,  // nil (no reply: sent only by a process that holds the lock)
  lock_state = 44,           // nil -> ok [owner pid or 0, count]
  sem_create = 45,           // [value, bounded] -> ok [id]
  sem_acquire = 46,          // [timeout_ms] -> ok [acquired, previous_owner_died]
  sem_release = 47,          // nil -> ok nil | error value (bounded, released too many times)
  sem_release_posted = 48,   // nil (no reply: unbounded semaphores only)
  sem_get_value = 49,        // nil -> ok [value]
  event_create = 50,         // nil -> ok [id]
  event_set = 51,            // nil -> ok nil
  event_clear = 52,          // nil -> ok nil
  event_is_set = 53,         // nil -> ok [flag]
  event_wait = 54,           // [timeout_ms] -> ok [flag]
  cond_create = 55,          // [lock id] -> ok [id]
  cond_lock = 56,            // nil -> ok [lock id, recursive]
  cond_wait = 57,            // [timeout_ms] -> ok [notified, previous_owner_died] | error not_owner
  cond_notify = 58,          // [n] (-1: all) -> ok nil | error not_owner
  barrier_create = 60,       // [parties, action or nil, timeout_ms] -> ok [id]
  barrier_wait = 61,         // [timeout_ms, use_default] -> ok [index, action or nil, generation] | error broken
  barrier_action_done = 62,  // [generation, succeeded] -> ok nil
  barrier_abort = 63,        // nil -> ok nil
  barrier_reset = 64,        // nil -> ok nil
  barrier_state = 65,        // nil -> ok [parties, n_waiting, broken]
  sync_waiting = 66,         // nil -> ok [n_waiting]   (a lock, semaphore, event or condition's blocked requests)

  // pipes (services/pipes.cpp); the object is an end's id; timeout_ms: -1 forever, 0 no wait
  pipe_create = 70,  // [duplex] -> ok [end0 id, end1 id]   (the sender holds both ends)
  pipe_attach = 71,  // nil -> ok [readable, writable] | error eof   (the sender becomes a holder)
  pipe_send = 72,    // [nil] + message frame (posted; no reply, errors are counted)
  pipe_recv = 73,    // [timeout_ms, max_items] -> ok [ready, version] + 1..max_items message frames | error eof | timeout | value
  pipe_poll = 74,    // [timeout_ms] -> ok [ready, version] | error eof (the pipe is gone)
  pipe_close = 75,   // nil (posted): the sender stops holding the end
  pipe_watch = 76,   // nil -> ok [ready, version], then pipe_ready pushes to the same socket | error eof
  pipe_ready = 77,   // coordinator -> watcher (pushed): [ready, version] of the end in the object field

  // manager (services/manager.cpp), served by a manager process's own ROUTER; the object is a managed object's id
  manager_challenge = 130,  // nil -> ok [challenge]   (authentication, when the manager has an authkey)
  manager_answer = 131,     // [response, challenge] -> ok [response] | error auth
  manager_create = 132,     // [type name, init] -> ok [id]
  manager_get = 133,        // [path] -> ok [value]
  manager_apply = 134,      // [path, op, args] -> ok [result]
  manager_call = 135,       // [method, args bin] -> ok [raised, result bin or [type, message]]
  manager_release = 136,    // nil -> ok nil: the object is destroyed
  manager_shutdown = 137,   // nil (posted): the manager stops serving
  manager_info = 138,       // nil -> ok [direct stream address or ""]
  pipe_unread = 78,  // [nil] + message frames -> ok nil: a reader gives back messages it took but did not read
  pipe_listen = 79,      // nil -> ok [accepted]: the reader listens at <session dir>/pipe-<end>-<pid> (peer to peer)
  pipe_connect = 80,     // nil -> ok [path, epoch] | ok nil: a writer asks to send straight to the reader
  pipe_connected = 81,   // [epoch, connected] (posted): the writer is connected (or gave up)
  pipe_direct = 82,      // reply to pipe_recv/pipe_poll: [epoch]: read the direct connection of that epoch
  pipe_direct_end = 83,  // [epoch, listening] + drained message frames -> ok nil: the reader finished an epoch
  pipe_hand_over = 84,   // nil -> ok nil: the sender encoded its copy for another process (held until adopted)

  // tracing (services/trace.cpp); switches the coordinator's trace bus at run time
  trace_enable = 180,   // [spec] (MPX_TRACE syntax) -> ok [pub endpoint or ""] | error value | error internal
  trace_disable = 181,  // nil -> ok [recorded, dropped, pub_dropped]
  trace_status = 182,   // nil -> ok [on, spec, pub endpoint, recorded, dropped, pub_dropped]
  trace_lane = 183,     // nil -> ok [trace ring name or "", token]: where this process records its lane operations

  // shared memory (services/shm.cpp); the object is a segment's id
  shm_create = 120,      // [name or nil, size, cells, lock, track] -> ok [id, name, size, token, host] | error file_exists
  shm_attach = 121,      // [name] -> ok [id, size] | error file_not_found   (remote mode: the coordinator maps it)
  shm_read = 122,        // [offset, length] -> ok nil + one frame of bytes
  shm_write = 123,       // [offset] + one frame of bytes -> ok nil
  shm_atomic = 124,      // [op, offset, width, a, b] -> ok [old, succeeded]   (op 1: fetch_add, 2: compare_exchange)
  shm_lock = 125,        // [timeout_ms] -> ok [acquired, previous_owner_died]
  shm_unlock = 126,      // nil -> ok nil | error not_owner
  shm_unlink = 127,      // [name] -> ok [existed]: forget the record, unlink the segment if it is still there
  shm_agent_done = 128,  // [ticket] (posted by the coordinator's own lock agents; no reply)
  shm_list = 129,        // nil -> ok [[name...]]: the segments this session will unlink when it ends

  // pool and executor (services/pool.cpp); the object is the pool's id. Results frames: see PROTOCOL.md "Pool".
  pool_create = 90,       // [max_retries, processes, build_id] -> ok [id]; the sending socket receives the owner's deliveries
  pool_submit = 91,       // [function, [[task_id, size]...]] + payload frame (posted)
  pool_take = 92,         // [max_tasks, [[submitter, [task ids]]...]] + results frames -> ok [functions, tasks] + payload | error closed
  pool_results = 93,      // worker -> coordinator (posted): [[[submitter, [task ids]]...]] + one results frame each
  pool_delivery = 94,     // coordinator -> a submitter's result socket (pushed): [nil] + results frame
  pool_worker_exit = 95,  // owner -> coordinator (posted): [pid, exitcode]: requeue or fail what the worker held
  pool_close = 96,        // nil (posted): workers exit once the queue is drained
  pool_terminate = 97,    // nil -> ok nil: drop queued tasks; waiting workers are told to exit
  pool_cancel = 98,       // [task_id] -> ok [cancelled]: true if it was still queued (removed)
  pool_task_state = 99,   // [task_id] -> ok [state]: 0 queued, 1 running (held by a worker), 2 neither
  pool_stats = 100,       // nil -> ok [queued, held, workers, requeued, lost]
  pool_attach = 101,      // nil -> ok [submitter, processes, max_retries, build_id]; the sending socket gets its deliveries
  pool_detach = 102,      // [submitter] -> ok nil: its queued tasks are dropped, its later results discarded
  pool_ended = 103,       // coordinator -> attached result sockets (pushed): [reason, message]: 0 owner died, 1 terminated
  pool_pull = 104,        // nil (posted), from an owner in the coordinator's process: pull its outbox of submissions
};

struct KindInfo {
  Kind kind;
  std::string_view name;
};

// Every kind this build knows; anything else is malformed.
inline constexpr KindInfo known_kinds[] = {
    {Kind::ok, "ok"},
    {Kind::error, "error"},
    {Kind::hello, "hello"},
    {Kind::ping, "ping"},
    {Kind::pong, "pong"},
    {Kind::stats, "stats"},
    {Kind::process_error, "process_error"},
    {Kind::process_error_query, "process_error_query"},
    {Kind::metrics, "metrics"},
    {Kind::queue_create, "queue_create"},
    {Kind::queue_put, "queue_put"},
    {Kind::queue_put_posted, "queue_put_posted"},
    {Kind::queue_get, "queue_get"},
    {Kind::queue_size, "queue_size"},
    {Kind::queue_release, "queue_release"},
    {Kind::queue_task_done, "queue_task_done"},
    {Kind::queue_join, "queue_join"},
    {Kind::queue_lane, "queue_lane"},
    {Kind::queue_lane_poke, "queue_lane_poke"},
    {Kind::queue_unget, "queue_unget"},
    {Kind::lock_create, "lock_create"},
    {Kind::lock_acquire, "lock_acquire"},
    {Kind::lock_release, "lock_release"},
    {Kind::lock_release_posted, "lock_release_posted"},
    {Kind::lock_state, "lock_state"},
    {Kind::sem_create, "sem_create"},
    {Kind::sem_acquire, "sem_acquire"},
    {Kind::sem_release, "sem_release"},
    {Kind::sem_release_posted, "sem_release_posted"},
    {Kind::sem_get_value, "sem_get_value"},
    {Kind::event_create, "event_create"},
    {Kind::event_set, "event_set"},
    {Kind::event_clear, "event_clear"},
    {Kind::event_is_set, "event_is_set"},
    {Kind::event_wait, "event_wait"},
    {Kind::cond_create, "cond_create"},
    {Kind::cond_lock, "cond_lock"},
    {Kind::cond_wait, "cond_wait"},
    {Kind::cond_notify, "cond_notify"},
    {Kind::barrier_create, "barrier_create"},
    {Kind::barrier_wait, "barrier_wait"},
    {Kind::barrier_action_done, "barrier_action_done"},
    {Kind::barrier_abort, "barrier_abort"},
    {Kind::barrier_reset, "barrier_reset"},
    {Kind::barrier_state, "barrier_state"},
    {Kind::sync_waiting, "sync_waiting"},
    {Kind::pipe_create, "pipe_create"},
    {Kind::pipe_attach, "pipe_attach"},
    {Kind::pipe_send, "pipe_send"},
    {Kind::pipe_recv, "pipe_recv"},
    {Kind::pipe_poll, "pipe_poll"},
    {Kind::pipe_close, "pipe_close"},
    {Kind::pipe_watch, "pipe_watch"},
    {Kind::pipe_ready, "pipe_ready"},
    {Kind::manager_challenge, "manager_challenge"},
    {Kind::manager_answer, "manager_answer"},
    {Kind::manager_create, "manager_create"},
    {Kind::manager_get, "manager_get"},
    {Kind::manager_apply, "manager_apply"},
    {Kind::manager_call, "manager_call"},
    {Kind::manager_release, "manager_release"},
    {Kind::manager_shutdown, "manager_shutdown"},
    {Kind::manager_info, "manager_info"},
    {Kind::pipe_unread, "pipe_unread"},
    {Kind::pipe_listen, "pipe_listen"},
    {Kind::pipe_connect, "pipe_connect"},
    {Kind::pipe_connected, "pipe_connected"},
    {Kind::pipe_direct, "pipe_direct"},
    {Kind::pipe_direct_end, "pipe_direct_end"},
    {Kind::pipe_hand_over, "pipe_hand_over"},
    {Kind::trace_enable, "trace_enable"},
    {Kind::trace_disable, "trace_disable"},
    {Kind::trace_status, "trace_status"},
    {Kind::trace_lane, "trace_lane"},
    {Kind::shm_create, "shm_create"},
    {Kind::shm_attach, "shm_attach"},
    {Kind::shm_read, "shm_read"},
    {Kind::shm_write, "shm_write"},
    {Kind::shm_atomic, "shm_atomic"},
    {Kind::shm_lock, "shm_lock"},
    {Kind::shm_unlock, "shm_unlock"},
    {Kind::shm_unlink, "shm_unlink"},
    {Kind::shm_agent_done, "shm_agent_done"},
    {Kind::shm_list, "shm_list"},
    {Kind::pool_create, "pool_create"},
    {Kind::pool_submit, "pool_submit"},
    {Kind::pool_take, "pool_take"},
    {Kind::pool_results, "pool_results"},
    {Kind::pool_delivery, "pool_delivery"},
    {Kind::pool_worker_exit, "pool_worker_exit"},
    {Kind::pool_close, "pool_close"},
    {Kind::pool_terminate, "pool_terminate"},
    {Kind::pool_cancel, "pool_cancel"},
    {Kind::pool_task_state, "pool_task_state"},
    {Kind::pool_stats, "pool_stats"},
    {Kind::pool_attach, "pool_attach"},
    {Kind::pool_detach, "pool_detach"},
    {Kind::pool_ended, "pool_ended"},
    {Kind::pool_pull, "pool_pull"},
};

bool is_known(std::uint16_t kind) noexcept;
std::string_view kind_name(Kind kind) noexcept;

enum class ErrorCode : std::uint16_t {
  malformed = 1,       // the body did not match the kind
  unknown_object = 2,  // no object with that id (or an object of another type)
  unsupported = 3,     // a kind the receiver does not serve
  timeout = 4,         // a blocking request's deadline passed
  internal = 5,
  full = 6,            // mpx::Full
  empty = 7,           // mpx::Empty
  closed = 8,          // the object was closed (Python: ValueError)
  value = 9,           // a misuse Python reports as ValueError (task_done too many times, release past a bound)
  not_owner = 10,      // releasing what this process does not hold
  broken = 11,         // mpx::BrokenBarrierError
  eof = 12,            // mpx::EOFError
  file_exists = 120,     // shared memory: mpx::FileExistsError
  file_not_found = 121,  // shared memory: mpx::FileNotFoundError
  // manager (130-139)
  key = 130,            // mpx::KeyError
  index = 131,          // mpx::IndexError
  attribute = 132,      // mpx::AttributeError
  type = 133,           // mpx::TypeError
  unauthenticated = 134,  // mpx::AuthenticationError: the peer has not (or not rightly) answered the challenge
};

}  // namespace mpx::wire
