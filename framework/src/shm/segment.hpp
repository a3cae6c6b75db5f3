// POSIX shared memory segments: names, create/open/map/unlink, the header of a Value/Array segment with its
// process-shared lock, and the clean-up of segments a session leaves behind. This is OS plumbing below the runtime: it
// knows nothing of sockets or messages.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <sys/types.h>

namespace mpx::shm {

// The lock of a Value/Array: a futex word that names the owning *process*, so that whoever watches processes die (the
// coordinator) can recover it, plus the owning thread and its recursion count, written only by the owner.
// word: 0 free | pid | owner_died, each possibly with `waiters` (someone may sleep in FUTEX_WAIT on it).
struct Lock {
  std::uint32_t word;
  std::uint32_t owner_tid;  // the holding thread; 0 whenever the lock is free
  std::uint32_t count;      // recursion levels beyond the first
  std::uint32_t reserved;
};
inline constexpr std::uint32_t lock_waiters = 1u << 31;
inline constexpr std::uint32_t lock_owner_died = 1u << 30;  // free; its last holder died holding it (pids are < 2^22)

// A Value or Array segment starts with this header; its data follows at data_offset. A raw SharedMemory segment has
// no header (its bytes are all the user's, as in Python, so Python can attach to it too).
struct Header {
  std::uint64_t magic;
  std::uint64_t token;      // random; a process that maps the segment by name checks it is the one its handle means
  std::uint64_t data_size;  // bytes after data_offset
  std::uint32_t has_lock;
  std::uint32_t reserved;
  Lock lock;                // recursive, per thread (Python's Value lock is an RLock)
};
inline constexpr std::uint64_t header_magic = 0x32306d687378706dULL;  // "mpxshm02", little-endian
inline constexpr std::size_t data_offset = 128;  // cache-line aligned, and aligned for any T
static_assert(sizeof(Header) <= data_offset);

// One mapping of a segment in this process; unmapped when the last owner lets go. It may keep the segment's descriptor
// open (a queue's ring allocates its pages with fallocate as it grows), closed with the mapping.
class Mapping {
 public:
  Mapping(void* base, std::size_t length, int fd = -1) : base_(base), length_(length), fd_(fd) {}
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::byte* base() const noexcept { return static_cast<std::byte*>(base_); }
  std::size_t length() const noexcept { return length_; }
  int fd() const noexcept { return fd_; }

 private:
  void* base_;
  std::size_t length_;
  int fd_;
};

struct Opened {
  std::shared_ptr<Mapping> mapping;
  ino_t inode = 0;
};

// POSIX names carry a leading '/'; Python's SharedMemory.name does not. These take the name without it.
// Creates a new segment of `length` bytes (zero-filled, sparse); throws FileExistsError if the name is taken.
Opened create(const std::string& name, std::size_t length, bool keep_fd = false);
// Maps an existing segment (its whole length); throws FileNotFoundError if there is none.
Opened open(const std::string& name, bool keep_fd = false);
// Removes the name; false if there was none.
bool unlink(const std::string& name);
// Unlinks `name` only if it is still the segment with this inode (not a later one that reused the name).
bool unlink_if_inode(const std::string& name, ino_t inode);
// Throws ValueError naming what is wrong with a user-chosen name.
void check_name(const std::string& name);

// Writes a header (its lock free, when `lock`). The segment is not yet visible to anyone else.
void init_header(const Mapping& mapping, std::uint64_t token, std::uint64_t data_size, bool lock);
// The header of a mapped Value/Array segment, or nullptr if the mapping does not carry this token.
Header* header_of(const Mapping& mapping, std::uint64_t token) noexcept;

// The lock. A holder that dies leaves its pid in the word until recover() is called with that pid (the coordinator
// does it when it sees the process die); the next locker then gets it and is told (yes_owner_died), and the lock is
// consistent again. A thread that exits holding it while its process lives on is not recovered (as in Python).
enum class Locked { yes, yes_owner_died, no };
// Waits until `deadline` (steady clock; nullopt: forever), or tries once. Recursive for the thread that holds it.
inline Locked lock(Lock* lock, std::optional<std::chrono::steady_clock::time_point> deadline, bool try_only) noexcept;
// False if the calling thread does not hold it.
inline bool unlock(Lock* lock) noexcept;
// Process `pid` is dead: if the word names it, the lock becomes "owner died" and every waiter is woken. True if it did.
bool recover(Lock* lock, pid_t pid) noexcept;
// The calling thread holds it and gives it up as if it had died (every recursion level): the next locker is told the
// owner died. For a thread that holds it on behalf of a process that died. False if this thread does not hold it.
bool abandon(Lock* lock) noexcept;

// Shared futexes (no FUTEX_PRIVATE_FLAG: the waiters are in other processes, with the segment mapped anywhere).
// futex_wait sleeps while *word == expected, until woken or past `deadline` (nullopt: no limit); every return (woken,
// the word changed, a signal, the deadline) sends the caller back to look at its state.
void futex_wait(std::uint32_t* word, std::uint32_t expected,
                std::optional<std::chrono::steady_clock::time_point> deadline) noexcept;
void futex_wake(std::uint32_t* word, int how_many) noexcept;

// Who the calling thread is: getpid() and gettid() are system calls, so each thread asks once (and a forked child's
// thread asks again).
struct Self {
  std::uint32_t pid = 0;
  std::uint32_t tid = 0;
};
inline const Self& self() noexcept;

// The names of a session's segments: "mpx-<session id>-<creator pid>-<n>", so that a later session can tell a dead
// session's segments by its root pid.
std::string session_prefix(const std::string& session_id);
// What identifies "the same /dev/shm, the same pids" across processes: boot id, IPC, mount and pid namespaces. A handle
// whose host key differs from the receiver's falls back to the coordinator protocol.
const std::string& host_key();
// A random 64-bit value (tokens, untracked names).
std::uint64_t random_u64();

// The session directory's list of user-named segments to unlink when the session ends ("<name> <inode>" lines).
void manifest_add(const std::string& session_directory, const std::string& name, ino_t inode);
void manifest_remove(const std::string& session_directory, const std::string& name);
// Unlinks every segment of a session: names with its prefix, and those in its manifest (if the inode still matches).
int remove_session_segments(const std::string& session_id, const std::string& session_directory);
// Unlinks /dev/shm segments named mpx-<pid>-... whose root pid no longer exists (a SIGKILLed session's leftovers).
int remove_dead_segments();

// ---- the lock's fast paths, inline: a locked increment is two calls of these, millions of times a second ----------

namespace lock_internals {
// initial-exec: read straight off the thread pointer, never through __tls_get_addr.
extern constinit thread_local Self self_cache __attribute__((tls_model("initial-exec")));
const Self& find_self() noexcept;
// The wait, when the fast path's compare-exchange saw `seen` instead of a free lock.
Locked lock_contended(Lock* lock, const Self& me, std::uint32_t seen,
                      std::optional<std::chrono::steady_clock::time_point> deadline, bool try_only) noexcept;
void wake_one(Lock* lock) noexcept;
inline std::atomic_ref<std::uint32_t> field(std::uint32_t& f) noexcept { return std::atomic_ref<std::uint32_t>(f); }
// owner_tid is this thread's only if this thread wrote it: it clears it before it lets the word go.
inline bool held_by(Lock* lock, const Self& me) noexcept {
  return (field(lock->word).load(std::memory_order_relaxed) & ~lock_waiters) == me.pid &&
         field(lock->owner_tid).load(std::memory_order_relaxed) == me.tid;
}
}  // namespace lock_internals

inline const Self& self() noexcept {
  const Self& me = lock_internals::self_cache;
  return me.tid != 0 ? me : lock_internals::find_self();
}

inline Locked lock(Lock* lock, std::optional<std::chrono::steady_clock::time_point> deadline, bool try_only) noexcept {
  using lock_internals::field;
  const Self& me = self();
  std::uint32_t cur = 0;
  if (field(lock->word).compare_exchange_strong(cur, me.pid, std::memory_order_acquire, std::memory_order_relaxed)) {
    field(lock->owner_tid).store(me.tid, std::memory_order_relaxed);  // count is 0 whenever the lock is free
    return Locked::yes;
  }
  if ((cur & ~lock_waiters) == me.pid && field(lock->owner_tid).load(std::memory_order_relaxed) == me.tid) {
    field(lock->count).store(field(lock->count).load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return Locked::yes;
  }
  return lock_internals::lock_contended(lock, me, cur, deadline, try_only);
}

inline bool unlock(Lock* lock) noexcept {
  using lock_internals::field;
  if (!lock_internals::held_by(lock, self())) return false;
  if (const std::uint32_t levels = field(lock->count).load(std::memory_order_relaxed); levels > 0) {
    field(lock->count).store(levels - 1, std::memory_order_relaxed);
    return true;
  }
  field(lock->owner_tid).store(0, std::memory_order_relaxed);
  if (field(lock->word).exchange(0, std::memory_order_release) & lock_waiters) lock_internals::wake_one(lock);
  return true;
}

}  // namespace mpx::shm
