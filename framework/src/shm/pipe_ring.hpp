// The shared-memory ring of a direct pipe epoch (PROTOCOL.md, "Pipes: the direct path"): one writer, one reader, a
// byte stream of records (a little-endian u32 length, then the message) in a sealed memfd that the writer creates and
// passes to the reader with the epoch's first bytes on the connection (SCM_RIGHTS).
//
// Why a ring: a sendmsg per message was the whole cost of a pipelined stream; a store into shared memory is not a
// system call. Why the writer's memfd: it belongs to one epoch and one connection, so nothing is reused across writers,
// and the kernel keeps it alive while either side maps it (or while it waits in the socket, not yet accepted), so a
// message stored before the writer exits or is killed is still there for the reader, as the socket buffer was.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/ring_bytes.hpp"
#include "wire/stream_framing.hpp"

namespace mpx::shm {

class PipeRing {
 public:
  // The data starts one page in; the header's counters each have their own cache line, so the writer's per-message
  // store of `head` and the reader's per-batch store of `tail` do not slow each other down.
  static constexpr std::size_t data_offset = 4096;
  static constexpr std::size_t default_capacity = 256 * 1024;
  static constexpr std::size_t max_capacity = 64u << 20;
  static constexpr std::uint32_t to_socket = wire::to_socket_record;

  PipeRing() = default;
  PipeRing(const PipeRing&) = delete;
  PipeRing& operator=(const PipeRing&) = delete;
  ~PipeRing() { unmap(); }

  // The writer: makes and maps a ring; the memfd to pass to the reader (the caller closes it), or -1.
  int create(std::size_t capacity = default_capacity) {
    unmap();
    const int fd = ::memfd_create("mpx-pipe-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -1;
    // Sealed against shrinking, so a reader can never fault on a page that went away.
    if (::ftruncate(fd, static_cast<off_t>(data_offset + capacity)) != 0 ||
        ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0 || !map(fd, capacity)) {
      ::close(fd);
      return -1;
    }
    header()->capacity = capacity;
    return fd;
  }

  // The reader: maps the ring received from the writer; false if it is not a sealed ring of a sane size.
  bool attach(int fd) {
    unmap();
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (::fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK) == 0) return false;
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size <= data_offset || size - data_offset > max_capacity) return false;
    const std::size_t capacity = size - data_offset;
    if ((capacity & (capacity - 1)) != 0 || !map(fd, capacity)) return false;
    if (header()->capacity != capacity) {
      unmap();
      return false;
    }
    return true;
  }

  void unmap() noexcept {
    if (base_ != nullptr) ::munmap(base_, data_offset + capacity_);
    base_ = nullptr;
    capacity_ = 0;
    head_ = tail_ = 0;
  }
  bool mapped() const noexcept { return base_ != nullptr; }
  std::size_t capacity() const noexcept { return capacity_; }

  // ---- writer ----

  // Free bytes, as of the reader's latest published tail.
  std::size_t room() noexcept {
    tail_ = atomic(header()->tail).load(std::memory_order_acquire);
    return capacity_ - static_cast<std::size_t>(head_ - tail_);
  }
  // Appends a record and publishes it, keeping `reserve` bytes free (room for a to_socket marker); false if it does
  // not fit. The tail is reloaded only when the last one seen says there is no room.
  bool put(std::uint32_t length, const char* data, std::size_t size, std::size_t reserve) noexcept {
    const std::size_t need = record_overhead + size + reserve;
    if (capacity_ - static_cast<std::size_t>(head_ - tail_) < need && room() < need) return false;
    char prefix[record_overhead];
    wire::store_record_length(prefix, length);
    copy_in(head_, prefix, record_overhead);
    copy_in(head_ + record_overhead, data, size);
    head_ += record_overhead + size;
    // seq_cst, not release: with the load in reader_sleeping() this is the writer's half of a store-then-load
    // handshake (the reader stores `sleeping`, then loads `head`), so one of the two always sees the other.
    atomic(header()->head).store(head_, std::memory_order_seq_cst);
    return true;
  }
  // After publishing: whether the reader said it may block in poll; clears the flag, so one wake-up answers one sleep.
  bool reader_sleeping() noexcept {
    auto flag = atomic(header()->sleeping);
    return flag.load(std::memory_order_seq_cst) != 0 && flag.exchange(0, std::memory_order_seq_cst) != 0;
  }

  // ---- reader ----

  // Bytes published and not consumed; more than the capacity means the ring is not to be trusted.
  std::uint64_t available() noexcept {
    return atomic(header()->head).load(std::memory_order_acquire) - tail_;
  }
  std::uint32_t peek_length() const noexcept {
    char prefix[record_overhead];
    copy_out(tail_, prefix, record_overhead);
    return wire::load_record_length(prefix);
  }
  // Copies `size` bytes from after the length at the tail into out, and moves past the record (locally: publish()
  // hands the room back to the writer, once per batch).
  void take(char* out, std::size_t size) noexcept {
    copy_out(tail_ + record_overhead, out, size);
    tail_ += record_overhead + size;
  }
  void skip(std::size_t bytes) noexcept { tail_ += bytes; }
  void publish() noexcept { atomic(header()->tail).store(tail_, std::memory_order_release); }
  // The reader's half of the handshake: says it may block, then looks once more (true: something arrived meanwhile).
  bool sleep_unless_available() noexcept {
    atomic(header()->sleeping).store(1, std::memory_order_seq_cst);
    if (atomic(header()->head).load(std::memory_order_seq_cst) == tail_) return false;
    awake();
    return true;
  }
  void awake() noexcept { atomic(header()->sleeping).store(0, std::memory_order_relaxed); }

 private:
  struct Header {
    alignas(64) std::uint64_t head;      // bytes the writer has published (never wraps: 2^64 bytes)
    alignas(64) std::uint64_t tail;      // bytes the reader has consumed
    alignas(64) std::uint32_t sleeping;  // 1: the reader may block in poll and needs a wake frame on the connection
    alignas(64) std::uint64_t capacity;  // written once by the writer before the ring is handed over
  };
  static_assert(sizeof(Header) <= data_offset);

  template <class T>
  static std::atomic_ref<T> atomic(T& v) noexcept {
    return std::atomic_ref<T>(v);
  }
  Header* header() const noexcept { return static_cast<Header*>(base_); }
  std::byte* data() const noexcept { return static_cast<std::byte*>(base_) + data_offset; }

  bool map(int fd, std::size_t capacity) noexcept {
    void* p = ::mmap(nullptr, data_offset + capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return false;
    base_ = p;
    capacity_ = capacity;
    head_ = tail_ = 0;
    return true;
  }
  // `at` counts bytes since the ring began; the capacity is a power of two.
  void copy_in(std::uint64_t at, const char* from, std::size_t size) noexcept {
    copy_into_ring(data(), capacity_, static_cast<std::size_t>(at) & (capacity_ - 1), from, size);
  }
  void copy_out(std::uint64_t at, char* to, std::size_t size) const noexcept {
    copy_out_of_ring(data(), capacity_, static_cast<std::size_t>(at) & (capacity_ - 1), to, size);
  }

  void* base_ = nullptr;
  std::size_t capacity_ = 0;
  // The writer's published head and latest seen tail; the reader's consumed tail (one side uses each ring object).
  std::uint64_t head_ = 0;
  std::uint64_t tail_ = 0;
};

}  // namespace mpx::shm
