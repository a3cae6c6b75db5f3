// The peer-to-peer path of a Pipe (PROTOCOL.md, "Pipes: the direct path"): what the reader process, the writer
// process and the coordinator share about one reading end. The reader listens on a unix socket next to a control file
// that holds one 64-bit word; the writer counts each message it sends straight to the reader in that word, and anyone
// who must stop the writer (the reader handing its end on, the coordinator turning tracing on) sets a bit in it. The
// word is how a reader learns exactly how many messages are still in flight without asking the writer, which may be
// blocked or gone.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mpx::services::direct {

// The socket a reading end's holder listens on, and its control file. Derived from the end and the reader's pid, so
// the coordinator never takes a path from a message.
inline std::string socket_path(const std::string& session_directory, std::uint64_t end, std::uint64_t pid) {
  return session_directory + "/pipe-" + std::to_string(end) + "-" + std::to_string(pid);
}
inline std::string control_path(const std::string& socket) { return socket + ".ctl"; }

// The word: bit 63 closed (the reader stopped listening: no epoch may start or go on), bits 62..32 the epoch the
// writer is in, bit 31 revoked (that epoch must stop), bits 30..0 how many messages the writer has sent in it.
struct Word {
  static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
  static constexpr std::uint64_t revoked_bit = std::uint64_t{1} << 31;
  static constexpr std::uint64_t count_mask = revoked_bit - 1;
  static constexpr std::uint64_t epoch_mask = (std::uint64_t{1} << 31) - 1;

  std::uint64_t v = 0;
  bool closed() const noexcept { return (v & closed_bit) != 0; }
  bool revoked() const noexcept { return (v & revoked_bit) != 0; }
  std::uint64_t epoch() const noexcept { return (v >> 32) & epoch_mask; }
  std::uint64_t count() const noexcept { return v & count_mask; }
  static std::uint64_t make(std::uint64_t epoch, bool revoked, std::uint64_t count) noexcept {
    return ((epoch & epoch_mask) << 32) | (revoked ? revoked_bit : 0) | (count & count_mask);
  }
};

// A mapping of a control file (8 bytes; the file is one page so every process maps it the same way).
class Control {
 public:
  Control() = default;
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;
  ~Control() { unmap(); }

  // Creates (the reader) or opens (writer, coordinator) the file; false if it cannot.
  bool open(const std::string& path, bool create) {
    unmap();
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0) return false;
    struct stat st {};
    bool good = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (good && create) good = ::ftruncate(fd, page) == 0;
    if (good && !create) good = st.st_size >= static_cast<off_t>(sizeof(std::uint64_t));
    void* p = good ? ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (p == MAP_FAILED) return false;
    word_ = static_cast<std::uint64_t*>(p);
    return true;
  }
  void unmap() noexcept {
    if (word_ != nullptr) ::munmap(word_, page);
    word_ = nullptr;
  }
  bool mapped() const noexcept { return word_ != nullptr; }

  Word load() const noexcept { return Word{ref().load(std::memory_order_acquire)}; }

  // The writer, once granted `epoch`: moves the word to it, unless the reader closed or someone already revoked it.
  bool begin(std::uint64_t epoch) noexcept {
    auto w = load();
    for (;;) {
      if (w.closed() || w.epoch() > epoch) return false;
      if (w.epoch() == epoch) return !w.revoked();
      if (ref().compare_exchange_weak(w.v, Word::make(epoch, false, 0), std::memory_order_acq_rel)) return true;
    }
  }
  // The writer, before each message: counts it, or says the epoch is over.
  bool count(std::uint64_t epoch) noexcept {
    auto w = load();
    for (;;) {
      if (w.closed() || w.revoked() || w.epoch() != epoch || w.count() == Word::count_mask) return false;
      if (ref().compare_exchange_weak(w.v, w.v + 1, std::memory_order_acq_rel)) return true;
    }
  }
  // Stops `epoch` (an epoch not begun yet starts revoked) and returns the word as it was: its count is final.
  Word revoke(std::uint64_t epoch, bool close) noexcept {
    auto w = load();
    for (;;) {
      std::uint64_t next = w.v;
      if (w.epoch() < epoch) next = Word::make(epoch, true, 0) | (w.v & Word::closed_bit);
      else if (w.epoch() == epoch) next |= Word::revoked_bit;
      if (close) next |= Word::closed_bit;
      if (next == w.v || ref().compare_exchange_weak(w.v, next, std::memory_order_acq_rel)) return w;
    }
  }

 private:
  static constexpr std::size_t page = 4096;
  std::atomic_ref<std::uint64_t> ref() const noexcept { return std::atomic_ref<std::uint64_t>(*word_); }
  std::uint64_t* word_ = nullptr;
};

}  // namespace mpx::services::direct
