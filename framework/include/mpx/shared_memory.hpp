/// \file
/// mpx/shared_memory.hpp — Python's multiprocessing.shared_memory.SharedMemory: a named block of raw bytes that any
/// process of the session (or a Python process) can attach to by name.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <mpx/detail/shared_segment.hpp>
#include <mpx/handle.hpp>

namespace mpx {

/// Python's multiprocessing.shared_memory.SharedMemory(name=None, create=False, size=0, track=True).
///   mpx::SharedMemory block(std::nullopt, true, 1024);   // a new block with a generated name
///   mpx::SharedMemory same(block.name());                // attach to it by name (in this or another process)
/// The bytes are all yours (no header), so Python's SharedMemory(name) can attach to a block made here. A tracked
/// block (the default) is unlinked when the session ends, even if the root process was SIGKILLed; track = false
/// leaves it to you (and to unlink()). Attaching never registers anything, so a process that attaches and exits
/// never unlinks the block under the others' feet (CPython gh-82300).
class MPX_API SharedMemory {
 public:
  /// create: a new block of `size` bytes (> 0), named `name` or a generated name; FileExistsError if taken.
  /// !create: attach to the block called `name`; FileNotFoundError if there is none.
  explicit SharedMemory(const std::optional<std::string>& name = std::nullopt, bool create = false,
                        std::size_t size = 0, bool track = true);
  /// A handle to the existing block `ref` (what a decoded argument is).
  SharedMemory(adopt_t, detail::SegmentRef ref);

  /// The mapped bytes. Throws ValueError once closed, or in remote mode (use read() and write() there).
  std::span<std::byte> buf() const;
  /// The block's name (Python: shm.name), without the leading '/'.
  const std::string& name() const noexcept { return ref_.name; }
  std::size_t size() const noexcept { return ref_.size; }  ///< The block's size in bytes (Python: shm.size).
  /// Copies out of / into the block; these work in remote mode too.
  std::vector<std::byte> read(std::size_t offset, std::size_t n) const;
  void write(std::size_t offset, std::span<const std::byte> bytes);  ///< Copies `bytes` into the block at `offset`.
  /// This handle stops using the block (the mapping goes when no copy of the handle uses it).
  void close();
  /// Removes the name (once, from any process); processes that have it mapped keep using it.
  /// FileNotFoundError if the name is already gone.
  void unlink();
  bool is_remote() const;  ///< Whether this handle goes through the coordinator instead of mapping the block.
  SharedMemory as_remote() const;  ///< The same block, reached through the coordinator (for tests, and other hosts).

  /// What travels to another process: the block's segment reference (handle.hpp's adaptors encode it).
  const detail::SegmentRef& ref() const noexcept { return ref_; }

 private:
  const detail::Segment& open_segment() const;
  detail::SegmentRef ref_;
  std::shared_ptr<detail::Segment> segment_;
};

}  // namespace mpx
