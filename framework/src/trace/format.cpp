#include "trace/format.hpp"

#include <cerrno>
#include <cstring>

#include <msgpack.hpp>

#include <mpx/errors.hpp>
#include <mpx/object.hpp>

#include "wire/stream_framing.hpp"

namespace mpx::trace::format {

namespace {

enum class Tag : std::uint8_t { message = 0, actor = 1, drops = 2, gauge = 3 };

using Packer = msgpack::packer<msgpack::sbuffer>;

// msgpack's packer writing straight to the end of a string.
struct StringStream {
  std::string& out;
  void write(const char* data, std::size_t size) { out.append(data, size); }
};

template <class Stream>
void pack_message(msgpack::packer<Stream>& p, const MessageView& m) {
  p.pack_array(13);
  p.pack(static_cast<std::uint8_t>(Tag::message));
  p.pack(m.ts_ns);
  p.pack(static_cast<std::uint8_t>(m.direction));
  p.pack(m.from);
  p.pack(m.to);
  p.pack(m.kind);
  p.pack(m.kind_name);
  p.pack(m.object_id);
  p.pack(m.object);
  p.pack(m.correlation);
  p.pack(m.size);
  if (m.body) p.pack(*m.body); else p.pack_nil();
  p.pack(m.lane);
}

void pack_actor_fields(Packer& p, const Actor& a) {
  p.pack(a.id);
  p.pack(a.pid);
  p.pack(a.name);
}

struct Encoder {
  Packer& p;
  void operator()(const Message& m) const {
    pack_message(p, MessageView{m.ts_ns, m.direction, m.from, m.to, m.kind, m.kind_name, m.object_id, m.object,
                                m.correlation, m.size, m.body ? &*m.body : nullptr, m.lane});
  }
  void operator()(const Actor& a) const {
    p.pack_array(4);
    p.pack(static_cast<std::uint8_t>(Tag::actor));
    pack_actor_fields(p, a);
  }
  void operator()(const Drops& d) const {
    p.pack_array(4);
    p.pack(static_cast<std::uint8_t>(Tag::drops));
    p.pack(d.ts_ns);
    p.pack(d.queue);
    p.pack(d.pub);
  }
  void operator()(const Gauge& g) const {
    p.pack_array(5);
    p.pack(static_cast<std::uint8_t>(Tag::gauge));
    p.pack(g.ts_ns);
    p.pack(g.object);
    p.pack(g.name);
    p.pack(g.value);
  }
};

// Field readers: each names the field it expected, so a corrupted record gets a precise message.
const msgpack::object& array_of(const msgpack::object& o, std::uint32_t n, const char* what) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != n) {
    throw ProtocolError(std::string("mpx: ") + what + " is not an array of " + std::to_string(n) + " fields");
  }
  return o;
}
template <class T>
T field(const msgpack::object& array, std::uint32_t i, const char* what) {
  try {
    return array.via.array.ptr[i].as<T>();
  } catch (const std::exception&) {
    throw ProtocolError(std::string("mpx: field ") + std::to_string(i) + " of " + what + " has the wrong type");
  }
}

Actor actor_from(const msgpack::object& o, std::uint32_t first, const char* what) {
  return Actor{field<std::uint64_t>(o, first, what), field<std::int64_t>(o, first + 1, what),
               field<std::string>(o, first + 2, what)};
}

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// Stops early once `out` passes `limit`: a huge body costs no more than the part that is kept.
void json_value(std::string& out, const msgpack::object& o, std::size_t limit) {
  if (out.size() > limit) return;
  switch (o.type) {
    case msgpack::type::NIL: out += "null"; break;
    case msgpack::type::BOOLEAN: out += o.via.boolean ? "true" : "false"; break;
    case msgpack::type::POSITIVE_INTEGER: out += std::to_string(o.via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: out += std::to_string(o.via.i64); break;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", o.via.f64);
      out += buf;
      break;
    }
    case msgpack::type::STR: json_string(out, std::string_view(o.via.str.ptr, o.via.str.size)); break;
    case msgpack::type::BIN: out += "\"<" + std::to_string(o.via.bin.size) + " bytes>\""; break;
    case msgpack::type::EXT: out += "\"<ext " + std::to_string(o.via.ext.type()) + ">\""; break;
    case msgpack::type::ARRAY:
      out += '[';
      for (std::uint32_t i = 0; i < o.via.array.size && out.size() <= limit; ++i) {
        if (i) out += ',';
        json_value(out, o.via.array.ptr[i], limit);
      }
      out += ']';
      break;
    case msgpack::type::MAP:
      out += '{';
      for (std::uint32_t i = 0; i < o.via.map.size && out.size() <= limit; ++i) {
        if (i) out += ',';
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type == msgpack::type::STR) {
          json_string(out, std::string_view(kv.key.via.str.ptr, kv.key.via.str.size));
        } else {  // JSON keys are strings
          std::string key;
          json_value(key, kv.key, limit);
          json_string(out, key);
        }
        out += ':';
        json_value(out, kv.val, limit);
      }
      out += '}';
      break;
  }
}

}  // namespace

std::string encode(const Record& record) {
  // The sink encodes every record: one buffer per thread, not a new 8 KiB one (sbuffer's default) per record.
  thread_local msgpack::sbuffer buffer(256);
  buffer.clear();
  Packer p(buffer);
  std::visit(Encoder{p}, record);
  return std::string(buffer.data(), buffer.size());
}

std::string encode(const FileHeader& header) {
  msgpack::sbuffer buffer;
  Packer p(buffer);
  p.pack_array(5);
  p.pack(magic);
  p.pack(header.version);
  p.pack(header.wall_ns);
  p.pack(header.mono_ns);
  p.pack_array(static_cast<std::uint32_t>(header.actors.size()));
  for (const auto& a : header.actors) {
    p.pack_array(3);
    pack_actor_fields(p, a);
  }
  return std::string(buffer.data(), buffer.size());
}

Record decode_record(std::string_view bytes) {
  auto handle = mpx::detail::unpack_bounded(bytes.data(), bytes.size());
  const auto& o = handle.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size == 0) throw ProtocolError("mpx: a record is not an array");
  const auto tag = field<std::uint8_t>(o, 0, "a record");
  switch (static_cast<Tag>(tag)) {
    case Tag::message: {
      // Version 1 wrote 12 fields: without `lane`.
      if (o.via.array.size != 12) array_of(o, 13, "a message record");
      const char* w = "a message record";
      Message m;
      m.ts_ns = field<std::uint64_t>(o, 1, w);
      const auto dir = field<std::uint8_t>(o, 2, w);
      if (dir > 1) throw ProtocolError("mpx: a message record's direction is " + std::to_string(dir));
      m.direction = static_cast<Direction>(dir);
      m.from = field<std::uint64_t>(o, 3, w);
      m.to = field<std::uint64_t>(o, 4, w);
      m.kind = field<std::uint16_t>(o, 5, w);
      m.kind_name = field<std::string>(o, 6, w);
      m.object_id = field<std::uint64_t>(o, 7, w);
      m.object = field<std::string>(o, 8, w);
      m.correlation = field<std::uint64_t>(o, 9, w);
      m.size = field<std::uint64_t>(o, 10, w);
      if (o.via.array.ptr[11].type != msgpack::type::NIL) m.body = field<std::string>(o, 11, w);
      if (o.via.array.size == 13) m.lane = field<bool>(o, 12, w);
      return m;
    }
    case Tag::actor:
      array_of(o, 4, "an actor record");
      return actor_from(o, 1, "an actor record");
    case Tag::drops: {
      array_of(o, 4, "a drops record");
      const char* w = "a drops record";
      return Drops{field<std::uint64_t>(o, 1, w), field<std::uint64_t>(o, 2, w), field<std::uint64_t>(o, 3, w)};
    }
    case Tag::gauge: {
      array_of(o, 5, "a gauge record");
      const char* w = "a gauge record";
      return Gauge{field<std::uint64_t>(o, 1, w), field<std::string>(o, 2, w), field<std::string>(o, 3, w),
                   field<std::int64_t>(o, 4, w)};
    }
  }
  throw ProtocolError("mpx: unknown record type " + std::to_string(tag));
}

FileHeader decode_header(std::string_view bytes) {
  auto handle = mpx::detail::unpack_bounded(bytes.data(), bytes.size());
  const auto& o = handle.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 5 || o.via.array.ptr[0].type != msgpack::type::STR ||
      std::string_view(o.via.array.ptr[0].via.str.ptr, o.via.array.ptr[0].via.str.size) != magic) {
    throw ProtocolError("mpx: no mpx-trace header");
  }
  const char* w = "the header";
  FileHeader h;
  h.version = field<std::uint32_t>(o, 1, w);
  if (h.version < oldest_readable_version || h.version > version) {
    throw ProtocolError("mpx: trace format version " + std::to_string(h.version) + " (this build reads " +
                        std::to_string(oldest_readable_version) + " to " + std::to_string(version) + ")");
  }
  h.wall_ns = field<std::int64_t>(o, 2, w);
  h.mono_ns = field<std::uint64_t>(o, 3, w);
  const auto& actors = o.via.array.ptr[4];
  if (actors.type != msgpack::type::ARRAY) throw ProtocolError("mpx: the header's actor list is not an array");
  for (std::uint32_t i = 0; i < actors.via.array.size; ++i) {
    h.actors.push_back(actor_from(array_of(actors.via.array.ptr[i], 3, "an actor of the header"), 0, "an actor"));
  }
  return h;
}

void append_framed(std::string& out, std::string_view payload) { wire::append_record(out, payload); }

void append_framed(std::string& out, const MessageView& message) {
  const std::size_t start = out.size();
  out.append(4, '\0');  // the length, once it is known
  StringStream stream{out};
  msgpack::packer<StringStream> p(stream);
  pack_message(p, message);
  const auto n = static_cast<std::uint32_t>(out.size() - start - 4);
  for (int i = 0; i < 4; ++i) out[start + i] = static_cast<char>((n >> (8 * i)) & 0xff);
}

std::string body_json(const std::vector<std::string_view>& frames, std::size_t limit) {
  std::string out;
  if (frames.size() > 1) out += '[';
  for (std::size_t i = 0; i < frames.size() && out.size() <= limit; ++i) {
    if (i) out += ',';
    try {
      auto handle = mpx::detail::unpack_bounded(frames[i].data(), frames[i].size());
      json_value(out, handle.get(), limit);
    } catch (const ProtocolError&) {
      out += "\"<" + std::to_string(frames[i].size()) + " bytes>\"";
    }
  }
  if (frames.size() > 1) out += ']';
  if (out.size() > limit) {
    out.resize(limit);
    out += "...";
  }
  return out;
}

FileReader::FileReader(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) throw Error("cannot open " + path + ": " + std::strerror(errno));
  std::string bytes;
  if (read_frame(bytes) != Read::ok) {
    std::fclose(file_);
    throw Error(path + " is not an mpx trace file (no header record)");
  }
  try {
    header_ = decode_header(bytes);
  } catch (const ProtocolError& e) {
    std::fclose(file_);
    std::string why = e.what();
    if (why.rfind("mpx: ", 0) == 0) why.erase(0, 5);
    throw Error(path + " is not an mpx trace file (" + why + ")");
  }
}

FileReader::~FileReader() {
  if (file_) std::fclose(file_);
}

FileReader::Read FileReader::read_frame(std::string& out) {
  char len[wire::record_length_bytes];
  const std::size_t got = std::fread(len, 1, sizeof len, file_);
  if (got == 0) return Read::end;
  if (got < sizeof len) return Read::truncated;
  const std::uint32_t n = wire::load_record_length(len);
  if (n > max_record_bytes) {
    problem_ = "corrupted record " + std::to_string(records_ + 1) + " at byte " + std::to_string(offset_) +
               ": length " + std::to_string(n) + " exceeds " + std::to_string(max_record_bytes);
    return Read::truncated;
  }
  out.resize(n);
  if (std::fread(out.data(), 1, n, file_) != n) return Read::truncated;
  offset_ += 4 + n;
  return Read::ok;
}

std::optional<Record> FileReader::next() {
  if (!problem_.empty() || !file_) return std::nullopt;
  std::string bytes;
  switch (read_frame(bytes)) {
    case Read::end: return std::nullopt;
    case Read::truncated:
      if (problem_.empty()) {
        problem_ = "truncated at byte " + std::to_string(offset_) + " (record " + std::to_string(records_ + 1) +
                   " is incomplete)";
      }
      return std::nullopt;
    case Read::ok: break;
  }
  try {
    auto r = decode_record(bytes);
    ++records_;
    return r;
  } catch (const ProtocolError& e) {
    const auto start = offset_ - 4 - bytes.size();
    problem_ = "corrupted record " + std::to_string(records_ + 1) + " at byte " + std::to_string(start) + ": " +
               (std::string(e.what()).rfind("mpx: ", 0) == 0 ? std::string(e.what() + 5) : std::string(e.what()));
    return std::nullopt;
  }
}

}  // namespace mpx::trace::format
