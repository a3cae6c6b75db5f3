#include "shm/segment.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mpx/errors.hpp>

namespace mpx::shm {

namespace fs = std::filesystem;

namespace {

constexpr const char* shm_directory = "/dev/shm";
constexpr const char* manifest_file = "shm-segments";
constexpr std::size_t max_name_length = 200;  // NAME_MAX is 255; leave room for the leading '/' and prefixes

std::string posix_name(const std::string& name) { return "/" + name; }

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), "mpx: " + what);
}

Opened map_fd(int fd, const std::string& name, bool keep_fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw_errno(e, "cannot stat shared memory segment '" + name + "'");
  }
  const auto length = static_cast<std::size_t>(st.st_size);
  void* base = length == 0 ? nullptr : ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  if (base == MAP_FAILED || !keep_fd) ::close(fd);  // the mapping keeps the segment; the descriptor is not needed
  if (base == MAP_FAILED) throw_errno(e, "cannot map shared memory segment '" + name + "'");
  return Opened{std::make_shared<Mapping>(base, length, keep_fd ? fd : -1), st.st_ino};
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string namespace_inode(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0 ? std::to_string(st.st_ino) : std::string("?");
}

// "mpx-<pid>-..." -> pid, or 0 if the name is not one of ours.
long root_pid_of(const std::string& name) {
  if (!name.starts_with("mpx-")) return 0;
  const auto dash = name.find('-', 4);
  if (dash == std::string::npos) return 0;
  char* end = nullptr;
  const long pid = std::strtol(name.c_str() + 4, &end, 10);
  return (end == name.c_str() + dash && pid > 0) ? pid : 0;
}

bool owned_by_me(const fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && st.st_uid == ::geteuid();
}

}  // namespace

Mapping::~Mapping() {
  if (base_ != nullptr) ::munmap(base_, length_);
  if (fd_ >= 0) ::close(fd_);
}

void check_name(const std::string& name) {
  if (name.empty()) throw ValueError("mpx: a shared memory name cannot be empty");
  if (name.size() > max_name_length) {
    throw ValueError("mpx: shared memory name '" + name.substr(0, 40) + "...' is longer than " +
                     std::to_string(max_name_length) + " characters");
  }
  if (name.find('/') != std::string::npos || name == "." || name == "..") {
    throw ValueError("mpx: shared memory name '" + name + "' must not contain '/'");
  }
  if (name.find('\0') != std::string::npos) throw ValueError("mpx: shared memory name contains a NUL byte");
}

Opened create(const std::string& name, std::size_t length, bool keep_fd) {
  const int fd = ::shm_open(posix_name(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    if (errno == EEXIST) throw FileExistsError("mpx: [Errno 17] File exists: '/" + name + "'");
    throw_errno(errno, "cannot create shared memory segment '" + name + "'");
  }
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0) {
    const int e = errno;
    ::close(fd);
    ::shm_unlink(posix_name(name).c_str());
    throw_errno(e, "cannot size shared memory segment '" + name + "' to " + std::to_string(length) + " bytes");
  }
  return map_fd(fd, name, keep_fd);
}

Opened open(const std::string& name, bool keep_fd) {
  const int fd = ::shm_open(posix_name(name).c_str(), O_RDWR, 0);
  if (fd < 0) {
    if (errno == ENOENT) throw FileNotFoundError("mpx: [Errno 2] No such file or directory: '/" + name + "'");
    throw_errno(errno, "cannot open shared memory segment '" + name + "'");
  }
  return map_fd(fd, name, keep_fd);
}

bool unlink(const std::string& name) { return ::shm_unlink(posix_name(name).c_str()) == 0; }

bool unlink_if_inode(const std::string& name, ino_t inode) {
  struct stat st {};
  const std::string path = std::string(shm_directory) + "/" + name;
  if (::stat(path.c_str(), &st) != 0 || st.st_ino != inode) return false;
  return unlink(name);
}

void init_header(const Mapping& mapping, std::uint64_t token, std::uint64_t data_size, bool lock) {
  auto* h = reinterpret_cast<Header*>(mapping.base());
  h->token = token;
  h->data_size = data_size;
  h->has_lock = lock ? 1 : 0;
  h->lock = Lock{};  // free
  // Last: a reader that sees the magic sees an initialized header.
  __atomic_store_n(&h->magic, header_magic, __ATOMIC_RELEASE);
}

Header* header_of(const Mapping& mapping, std::uint64_t token) noexcept {
  if (mapping.length() < data_offset) return nullptr;
  auto* h = reinterpret_cast<Header*>(mapping.base());
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != header_magic || h->token != token) return nullptr;
  if (h->data_size > mapping.length() - data_offset) return nullptr;
  return h;
}

// ---- the lock ----------------------------------------------------------------------------------------------------

namespace lock_internals {

constinit thread_local Self self_cache;

const Self& find_self() noexcept {
  self_cache.pid = static_cast<std::uint32_t>(::getpid());
  self_cache.tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  return self_cache;
}

}  // namespace lock_internals

namespace {

using lock_internals::field;

// A forked child's only thread is the one that called fork, with its parent's figures.
void forget_self() noexcept { lock_internals::self_cache = Self{}; }
const bool self_forgotten_at_fork = [] {
  ::pthread_atfork(nullptr, nullptr, &forget_self);
  return true;
}();

timespec monotonic(std::chrono::steady_clock::time_point t) {
  // steady_clock is CLOCK_MONOTONIC on Linux, the clock FUTEX_WAIT_BITSET uses.
  const auto since_epoch = t.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(secs.count());
  ts.tv_nsec = static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs).count());
  return ts;
}

}  // namespace

void futex_wake(std::uint32_t* word, int how_many) noexcept {
  ::syscall(SYS_futex, word, FUTEX_WAKE, how_many, nullptr, nullptr, 0);
}

// FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a wait that is woken early and waits again does not
// stretch the caller's timeout.
void futex_wait(std::uint32_t* word, std::uint32_t expected,
                std::optional<std::chrono::steady_clock::time_point> deadline) noexcept {
  timespec until{};
  if (deadline) until = monotonic(*deadline);
  ::syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline ? &until : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
}

namespace {

// Clears the owner's fields, then turns a word naming `owner` into "owner died" and wakes everyone: the first to get
// there takes it and is told. The caller knows nobody else writes the owner's fields while the word names `owner`.
bool mark_owner_died(Lock* lock, std::uint32_t owner) noexcept {
  field(lock->owner_tid).store(0, std::memory_order_relaxed);
  field(lock->count).store(0, std::memory_order_relaxed);
  auto word = field(lock->word);
  std::uint32_t cur = word.load(std::memory_order_relaxed);
  do {
    if ((cur & ~lock_waiters) != owner) return false;
  } while (!word.compare_exchange_weak(cur, lock_owner_died | (cur & lock_waiters), std::memory_order_release,
                                       std::memory_order_relaxed));
  futex_wake(&lock->word, INT_MAX);
  return true;
}

}  // namespace

namespace lock_internals {

void wake_one(Lock* lock) noexcept { futex_wake(&lock->word, 1); }

Locked lock_contended(Lock* lock, const Self& me, std::uint32_t seen,
                      std::optional<std::chrono::steady_clock::time_point> deadline, bool try_only) noexcept {
  auto word = field(lock->word);
  std::uint32_t cur = seen;
  // Once this thread has slept, others may be asleep too, and the wake that got it here was one of theirs to pass
  // on: it takes the lock with `waiters` set, so that its release wakes the next one.
  bool slept = false;
  for (;;) {
    const std::uint32_t owner = cur & ~lock_waiters;
    if (owner == 0 || owner == lock_owner_died) {
      const std::uint32_t desired = me.pid | (slept ? lock_waiters : cur & lock_waiters);
      if (word.compare_exchange_weak(cur, desired, std::memory_order_acquire, std::memory_order_relaxed)) {
        field(lock->owner_tid).store(me.tid, std::memory_order_relaxed);
        return owner == 0 ? Locked::yes : Locked::yes_owner_died;
      }
      continue;
    }
    if (try_only) return Locked::no;
    if (deadline && std::chrono::steady_clock::now() >= *deadline) return Locked::no;
    if ((cur & lock_waiters) == 0) {
      if (!word.compare_exchange_weak(cur, cur | lock_waiters, std::memory_order_relaxed)) continue;
      cur |= lock_waiters;
    }
    futex_wait(&lock->word, cur, deadline);
    slept = true;
    cur = word.load(std::memory_order_relaxed);
  }
}

}  // namespace lock_internals

bool recover(Lock* lock, pid_t pid) noexcept {
  if (pid <= 0) return false;
  const auto dead = static_cast<std::uint32_t>(pid);
  // While the word names a dead process, nobody writes the owner's fields: clearing them cannot race.
  if ((field(lock->word).load(std::memory_order_acquire) & ~lock_waiters) != dead) return false;
  return mark_owner_died(lock, dead);
}

bool abandon(Lock* lock) noexcept {
  const Self& me = self();
  return lock_internals::held_by(lock, me) && mark_owner_died(lock, me.pid);
}

std::string session_prefix(const std::string& session_id) { return "mpx-" + session_id + "-"; }

const std::string& host_key() {
  static const std::string key = [] {
    std::string boot = read_text("/proc/sys/kernel/random/boot_id");
    while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' ')) boot.pop_back();
    if (boot.empty()) {
      char host[256] = {0};
      ::gethostname(host, sizeof host - 1);
      boot = host;
    }
    // The pid namespace too: a lock's word names its holder's pid, which must mean the same process to every
    // process that maps the segment and to the coordinator that recovers it.
    return boot + ":" + namespace_inode("/proc/self/ns/ipc") + ":" + namespace_inode("/proc/self/ns/mnt") + ":" +
           namespace_inode("/proc/self/ns/pid");
  }();
  return key;
}

std::uint64_t random_u64() {
  static thread_local std::mt19937_64 engine{std::random_device{}() ^ (static_cast<std::uint64_t>(::getpid()) << 32)};
  return engine();
}

void manifest_add(const std::string& session_directory, const std::string& name, ino_t inode) {
  std::ofstream out(session_directory + "/" + manifest_file, std::ios::app);
  out << name << ' ' << inode << '\n';
}

void manifest_remove(const std::string& session_directory, const std::string& name) {
  const std::string path = session_directory + "/" + manifest_file;
  std::ifstream in(path);
  std::vector<std::string> kept;
  for (std::string line; std::getline(in, line);) {
    if (line.substr(0, line.find(' ')) != name) kept.push_back(line);
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const auto& line : kept) out << line << '\n';
}

int remove_session_segments(const std::string& session_id, const std::string& session_directory) {
  int removed = 0;
  if (!session_directory.empty()) {
    std::ifstream in(session_directory + "/" + manifest_file);
    std::string name;
    unsigned long long inode = 0;
    while (in >> name >> inode) {
      if (unlink_if_inode(name, static_cast<ino_t>(inode))) ++removed;
    }
  }
  if (session_id.empty()) return removed;
  const std::string prefix = session_prefix(session_id);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(shm_directory, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && owned_by_me(entry.path()) && unlink(name)) ++removed;
  }
  return removed;
}

int remove_dead_segments() {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(shm_directory, ec)) {
    const std::string name = entry.path().filename().string();
    const long pid = root_pid_of(name);
    if (pid == 0 || !owned_by_me(entry.path())) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    if (unlink(name)) ++removed;
  }
  return removed;
}

}  // namespace mpx::shm
