// Byte-stream framing: how mpx delimits messages outside ZeroMQ, on stream sockets and inside byte frames, in one
// place (PROTOCOL.md names each use). The side door's packets are in envelope.hpp, built from these records.
#pragma once

#include <sys/types.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "wire/little_endian.hpp"

namespace mpx::wire {

// ---- length records: [u32 little-endian length][bytes] ----
// A queue_get reply's items frame, a pipe_direct_end's given-back frame, the direct pipe path (its connection and its
// ring), a trace record file, and each frame of a side-door packet.
inline constexpr std::size_t record_length_bytes = 4;

inline void store_record_length(char* p, std::uint32_t length) noexcept { store_le(p, length, 4); }
inline std::uint32_t load_record_length(const char* p) noexcept { return static_cast<std::uint32_t>(load_le(p, 4)); }

// Appends one record; the caller keeps `bytes` under 4 GiB (every mpx payload is bounded far below it).
void append_record(std::string& out, std::string_view bytes);

// The records of one byte frame, in order. Throws ProtocolError naming `what` when the frame ends inside a record.
class RecordReader {
 public:
  RecordReader(std::string_view frame, const char* what) noexcept : rest_(frame), what_(what) {}
  // The next record; nullopt at the frame's end.
  std::optional<std::string_view> next();

 private:
  std::string_view rest_;
  const char* what_;
};

// Lengths on the direct pipe path that are no message (far over any message limit). On its connection: a wake-up
// for a reader that said it may block, and "the next messages are in the ring again"; in its ring: "the next messages
// are on the connection" (the ring was full).
inline constexpr std::uint32_t wake_frame = 0xFFFFFFFFu;
inline constexpr std::uint32_t to_ring_frame = 0xFFFFFFFEu;
inline constexpr std::uint32_t to_socket_record = 0xFFFFFFFFu;

// ---- Python's multiprocessing.connection framing (Listener/Client, a manager's direct stream) ----
// A big-endian i32 length, then the message; a message of 2^31 bytes or more has length -1, then a big-endian u64.
inline constexpr std::size_t python_short_length_bytes = 4;
inline constexpr std::size_t python_long_length_bytes = 12;

struct PythonLength {
  char bytes[python_long_length_bytes];
  std::size_t size;  // 4 or 12
};
PythonLength python_length(std::uint64_t length) noexcept;

// The first 4 bytes of a length: its value, or -1 when a u64 follows (python_long_length then reads it).
std::int32_t python_short_length(const char* p) noexcept;
std::uint64_t python_long_length(const char* p) noexcept;  // the 8 bytes after the -1

// Takes the frame at `start` of `buffer` if it is whole (advancing `start`); nullopt if more bytes are needed.
// Throws ProtocolError for a negative length, or one over `max_bytes`, naming `what`: the stream cannot be trusted.
std::optional<std::string_view> take_python_frame(std::string_view buffer, std::size_t& start, std::size_t max_bytes,
                                                  const char* what);

// ---- unix stream sockets ----
// The address of a socket file; nullopt (errno ENOENT or ENAMETOOLONG) when the path is empty or does not fit.
std::optional<sockaddr_un> unix_address(std::string_view path) noexcept;
// bind() and listen() on `fd`; false with errno set if either fails.
bool listen_unix(int fd, const sockaddr_un& address, int backlog) noexcept;
// A non-blocking, close-on-exec stream socket listening at `path` (a stale socket file there is replaced); -1 with
// errno set if the path does not fit or it cannot be made.
int listen_unix_at(const std::string& path, int backlog) noexcept;
// connect() on `fd`, again after EINTR; false with errno set if it fails.
bool connect_unix(int fd, const sockaddr_un& address) noexcept;
// The next pending connection on the non-blocking listening socket `fd`, non-blocking and close-on-exec, with the pid
// of the process that made it (SO_PEERCRED) in `peer`; -1 once there is none. One whose peer is unknown is closed.
int accept_unix_peer(int fd, pid_t& peer) noexcept;
// Writes as much of `out` as the non-blocking socket `fd` takes now, and erases it from `out`. False if the socket is
// broken (then `out` is cleared: nobody will read it).
bool write_pending(int fd, std::string& out) noexcept;

}  // namespace mpx::wire
