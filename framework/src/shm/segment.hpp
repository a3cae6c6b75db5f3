// POSIX shared memory segments: names, create/open/map/unlink, the header of a Value/Array segment with its
// process-shared robust mutex, and the clean-up of segments a session leaves behind. This is OS plumbing below the
// runtime: it knows nothing of sockets or messages.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <pthread.h>
#include <sys/types.h>

namespace mpx::shm {

// A Value or Array segment starts with this header; its data follows at data_offset. A raw SharedMemory segment has
// no header (its bytes are all the user's, as in Python, so Python can attach to it too).
struct Header {
  std::uint64_t magic;
  std::uint64_t token;      // random; a process that maps the segment by name checks it is the one its handle means
  std::uint64_t data_size;  // bytes after data_offset
  std::uint32_t has_lock;
  std::uint32_t reserved;
  pthread_mutex_t mutex;    // process-shared, robust, recursive (Python's Value lock is an RLock)
};
inline constexpr std::uint64_t header_magic = 0x31306d687378706dULL;  // "mpxshm01", little-endian
inline constexpr std::size_t data_offset = 128;  // cache-line aligned, and aligned for any T
static_assert(sizeof(Header) <= data_offset);

// One mapping of a segment in this process; unmapped when the last owner lets go.
class Mapping {
 public:
  Mapping(void* base, std::size_t length) : base_(base), length_(length) {}
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::byte* base() const noexcept { return static_cast<std::byte*>(base_); }
  std::size_t length() const noexcept { return length_; }

 private:
  void* base_;
  std::size_t length_;
};

struct Opened {
  std::shared_ptr<Mapping> mapping;
  ino_t inode = 0;
};

// POSIX names carry a leading '/'; Python's SharedMemory.name does not. These take the name without it.
// Creates a new segment of `length` bytes (zero-filled); throws FileExistsError if the name is taken.
Opened create(const std::string& name, std::size_t length);
// Maps an existing segment (its whole length); throws FileNotFoundError if there is none.
Opened open(const std::string& name);
// Removes the name; false if there was none.
bool unlink(const std::string& name);
// Unlinks `name` only if it is still the segment with this inode (not a later one that reused the name).
bool unlink_if_inode(const std::string& name, ino_t inode);
// Throws ValueError naming what is wrong with a user-chosen name.
void check_name(const std::string& name);

// Writes a header and initializes the robust mutex (when `lock`). The segment is not yet visible to anyone else.
void init_header(const Mapping& mapping, std::uint64_t token, std::uint64_t data_size, bool lock);
// The header of a mapped Value/Array segment, or nullptr if the mapping does not carry this token.
Header* header_of(const Mapping& mapping, std::uint64_t token) noexcept;

// The robust mutex. A holder that died leaves it "owner died": the next locker gets it, is told, and it is made
// consistent again (pthread_mutex_consistent), so nobody deadlocks.
enum class Locked { yes, yes_owner_died, no };
// Waits until `deadline` (steady clock; nullopt: forever). wait_ms 0 means try once.
Locked lock(pthread_mutex_t* mutex, std::optional<std::chrono::steady_clock::time_point> deadline, bool try_only);
// False if the calling thread does not hold it.
bool unlock(pthread_mutex_t* mutex) noexcept;

// The names of a session's segments: "mpx-<session id>-<creator pid>-<n>", so that a later session can tell a dead
// session's segments by its root pid.
std::string session_prefix(const std::string& session_id);
// What identifies "the same /dev/shm" across processes: boot id, IPC and mount namespaces. A handle whose host key
// differs from the receiver's falls back to the coordinator protocol.
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

}  // namespace mpx::shm
