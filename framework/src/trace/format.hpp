// The trace record format, shared by the bus (which writes it) and mpx-trace (which reads it). framework/PROTOCOL.md,
// section "Tracing", is its specification; keep the two in step.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mpx::trace::format {

inline constexpr std::string_view magic = "mpx-trace";
inline constexpr std::uint32_t version = 2;  // 2: a message record's `lane` field
inline constexpr std::uint32_t oldest_readable_version = 1;
// A record larger than this is corruption, not data: bodies are truncated long before.
inline constexpr std::uint32_t max_record_bytes = 16u << 20;
// The coordinator's actor id in records (actors are otherwise named by their pid).
inline constexpr std::uint64_t coordinator_actor = 0;

enum class Direction : std::uint8_t { in = 0, out = 1 };  // into the socket owner, or out of it

struct Message {
  std::uint64_t ts_ns = 0;  // CLOCK_MONOTONIC when the socket owner saw it
  Direction direction = Direction::in;
  std::uint64_t from = 0, to = 0;  // actor ids
  std::uint16_t kind = 0;
  std::string kind_name;
  std::uint64_t object_id = 0;
  std::string object;  // "queue:7", or a name given with name_object; empty for the runtime itself
  std::uint64_t correlation = 0;
  std::uint64_t size = 0;            // bytes of header and body frames
  std::optional<std::string> body;   // JSON text of the body frames, truncated
  bool lane = false;  // an operation on a queue's shared-memory ring, recorded by the process that did it
};
struct Actor {
  std::uint64_t id = 0;
  std::int64_t pid = 0;
  std::string name;
};
struct Drops {
  std::uint64_t ts_ns = 0;
  std::uint64_t queue = 0;  // cumulative: records lost because the sink queue was full
  std::uint64_t pub = 0;    // cumulative: records a PUB subscriber did not get
};
struct Gauge {  // a sampled value of an object, e.g. a queue's depth after a put or get
  std::uint64_t ts_ns = 0;
  std::string object;
  std::string name;
  std::int64_t value = 0;
};
using Record = std::variant<Message, Actor, Drops, Gauge>;

// A Message's fields with borrowed strings: the sink frames one per traced message straight into its output, which
// encode() followed by append_framed() would do through a Message and a string of its own each time.
struct MessageView {
  std::uint64_t ts_ns = 0;
  Direction direction = Direction::in;
  std::uint64_t from = 0, to = 0;
  std::uint16_t kind = 0;
  std::string_view kind_name;
  std::uint64_t object_id = 0;
  std::string_view object;
  std::uint64_t correlation = 0;
  std::uint64_t size = 0;
  const std::string* body = nullptr;  // null: no body
  bool lane = false;
};

struct FileHeader {
  std::uint32_t version = format::version;
  std::int64_t wall_ns = 0;      // CLOCK_REALTIME at start, to place monotonic timestamps in the day
  std::uint64_t mono_ns = 0;     // CLOCK_MONOTONIC at the same instant
  std::vector<Actor> actors;     // actors known at start; later ones follow as Actor records
};

std::string encode(const Record& record);
std::string encode(const FileHeader& header);
// Bounded decodes; throw mpx::ProtocolError naming what is wrong.
Record decode_record(std::string_view bytes);
FileHeader decode_header(std::string_view bytes);
// Appends the u32 little-endian length, then the bytes.
void append_framed(std::string& out, std::string_view payload);
// Appends a message record, framed: the bytes append_framed(out, encode(Message{...})) appends.
void append_framed(std::string& out, const MessageView& message);

// Body frames as JSON: one frame is its value, several an array of values. A frame that is not one complete msgpack
// value shows as "<N bytes>". The text is cut at `limit` characters (then ends with "...").
std::string body_json(const std::vector<std::string_view>& frames, std::size_t limit);

// Reads a record file front to back. open() throws mpx::Error for a missing file or one that is not a trace file.
class FileReader {
 public:
  explicit FileReader(const std::string& path);
  ~FileReader();
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  const FileHeader& header() const noexcept { return header_; }
  // The next record, or nullopt at the end. At a truncated or corrupted record it returns nullopt and sets problem().
  std::optional<Record> next();
  // Why reading stopped early ("truncated at byte 812 (record 14): ..."); empty after a clean end.
  const std::string& problem() const noexcept { return problem_; }
  std::uint64_t records() const noexcept { return records_; }

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
  FileHeader header_;
  std::uint64_t offset_ = 0;
  std::uint64_t records_ = 0;
  std::string problem_;
  enum class Read { ok, end, truncated };
  Read read_frame(std::string& out);
};

}  // namespace mpx::trace::format
