#include "wire/envelope.hpp"

#include <time.h>

#include "wire/curve.hpp"
#include "wire/interrupted.hpp"
#include "wire/little_endian.hpp"
#include "wire/stream_framing.hpp"

namespace mpx::wire {

namespace {
constexpr std::size_t header_fields = 7;
constexpr std::size_t max_header_bytes = 64;
}  // namespace

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// The header is on every message, so it is written and read by hand: a msgpack fixarray of 7 unsigned integers, each
// in msgpack's shortest form. Any msgpack encoder produces the same bytes; any valid header decodes.
namespace {

char* put_uint(char* out, std::uint64_t v) {
  if (v < 0x80) {
    *out++ = static_cast<char>(v);
  } else if (v <= 0xff) {
    *out++ = '\xcc';
    *out++ = static_cast<char>(v);
  } else if (v <= 0xffff) {
    *out++ = '\xcd';
    for (int shift = 8; shift >= 0; shift -= 8) *out++ = static_cast<char>(v >> shift);
  } else if (v <= 0xffffffffu) {
    *out++ = '\xce';
    for (int shift = 24; shift >= 0; shift -= 8) *out++ = static_cast<char>(v >> shift);
  } else {
    *out++ = '\xcf';
    for (int shift = 56; shift >= 0; shift -= 8) *out++ = static_cast<char>(v >> shift);
  }
  return out;
}

// Reads one msgpack unsigned integer; false if the bytes are not one (or are truncated).
bool get_uint(const unsigned char*& p, const unsigned char* end, std::uint64_t& v) {
  if (p >= end) return false;
  const unsigned char tag = *p++;
  std::size_t width = 0;
  if (tag < 0x80) {
    v = tag;
    return true;
  } else if (tag == 0xcc) {
    width = 1;
  } else if (tag == 0xcd) {
    width = 2;
  } else if (tag == 0xce) {
    width = 4;
  } else if (tag == 0xcf) {
    width = 8;
  } else {
    return false;
  }
  if (static_cast<std::size_t>(end - p) < width) return false;
  v = 0;
  for (std::size_t i = 0; i < width; ++i) v = (v << 8) | *p++;
  return true;
}

}  // namespace

zmq::message_t encode_header(const Header& h) {
  char buffer[max_header_bytes];
  char* out = buffer;
  *out++ = static_cast<char>(0x90 | header_fields);
  out = put_uint(out, h.version);
  out = put_uint(out, static_cast<std::uint16_t>(h.kind));
  out = put_uint(out, h.sender);
  out = put_uint(out, h.object);
  out = put_uint(out, h.correlation);
  out = put_uint(out, h.flags);
  out = put_uint(out, h.timestamp_ns);
  return zmq::message_t(buffer, static_cast<std::size_t>(out - buffer));
}

Header decode_header(const void* data, std::size_t size) {
  if (size == 0 || size > max_header_bytes) {
    throw ProtocolError("mpx: header frame of " + std::to_string(size) + " bytes (expected 1.." +
                        std::to_string(max_header_bytes) + ")");
  }
  const auto* p = static_cast<const unsigned char*>(data);
  const auto* end = p + size;
  if (*p != (0x90 | header_fields)) {
    // Not the expected fixarray: decode it properly, for a precise reason (and bounded, like every decode).
    auto handle = detail::unpack_bounded(static_cast<const char*>(data), size);
    throw ProtocolError("mpx: header is not an array of " + std::to_string(header_fields) + " fields");
  }
  ++p;
  std::uint64_t f[header_fields];
  for (std::size_t i = 0; i < header_fields; ++i) {
    if (!get_uint(p, end, f[i])) {
      if (p >= end) throw ProtocolError("mpx: truncated header (" + std::to_string(size) + " bytes)");
      throw ProtocolError("mpx: header field " + std::to_string(i) + " is not an unsigned integer");
    }
  }
  if (p != end) throw ProtocolError("mpx: " + std::to_string(end - p) + " trailing bytes after the header");
  if (f[0] != protocol_version) {
    throw ProtocolError("mpx: protocol version " + std::to_string(f[0]) + " (this build speaks " +
                        std::to_string(protocol_version) + ")");
  }
  if (f[1] > 0xffff || !is_known(static_cast<std::uint16_t>(f[1]))) {
    throw ProtocolError("mpx: unknown message kind " + std::to_string(f[1]));
  }
  if (f[5] > 0xffffffffu) throw ProtocolError("mpx: header flags out of range");
  Header h;
  h.kind = static_cast<Kind>(f[1]);
  h.sender = f[2];
  h.object = f[3];
  h.correlation = f[4];
  h.flags = static_cast<std::uint32_t>(f[5]);
  h.timestamp_ns = f[6];
  return h;
}

zmq::message_t frame_of(std::string bytes) {
  constexpr std::size_t zero_copy_bytes = 4096;  // below this a copy costs less than the allocation it saves
  if (bytes.size() < zero_copy_bytes) return zmq::message_t(bytes.data(), bytes.size());
  auto* owned = new std::string(std::move(bytes));
  return zmq::message_t(
      owned->data(), owned->size(), [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
}

Envelope make_reply(const Header& request, Kind kind, std::string body) {
  Envelope e;
  e.header.kind = kind;
  e.header.object = request.object;
  e.header.correlation = request.correlation;
  e.header.flags = request.flags;
  e.body.emplace_back(body.data(), body.size());
  return e;
}

Envelope make_error(const Header& request, ErrorCode code, std::string_view message) {
  return make_reply(request, Kind::error,
                    encode(std::make_tuple(static_cast<std::uint16_t>(code), std::string(message))));
}

bool send(zmq::socket_ref socket, Envelope& envelope, std::uint64_t sender, const zmq::message_t* routing,
          bool dontwait) {
  envelope.header.sender = sender;
  envelope.header.timestamp_ns = monotonic_ns();
  const auto more = dontwait ? (zmq::send_flags::sndmore | zmq::send_flags::dontwait) : zmq::send_flags::sndmore;
  const auto last = dontwait ? zmq::send_flags::dontwait : zmq::send_flags::none;
  if (routing) {
    zmq::message_t id;
    id.rebuild(routing->data(), routing->size());
    if (!send_frame(socket, id, more)) return false;
  }
  auto header = encode_header(envelope.header);
  // Once the first frame is queued, ZeroMQ guarantees the rest of the multipart message is accepted atomically.
  if (!send_frame(socket, header, envelope.body.empty() ? last : more)) return false;
  for (std::size_t i = 0; i < envelope.body.size(); ++i) {
    const bool final_frame = i + 1 == envelope.body.size();
    (void)send_frame(socket, envelope.body[i], final_frame ? zmq::send_flags::none : zmq::send_flags::sndmore);
  }
  return true;
}

namespace {
void put_u32(std::string& out, std::uint32_t v) {
  char b[4];
  store_le(b, v, 4);
  out.append(b, 4);
}
std::uint32_t get_u32(const char* p) { return static_cast<std::uint32_t>(load_le(p, 4)); }
}  // namespace

void append_packet(std::string& out, Envelope& envelope, std::uint64_t sender) {
  envelope.header.sender = sender;
  envelope.header.timestamp_ns = monotonic_ns();
  const auto header = encode_header(envelope.header);
  std::size_t size = 4 + 4 + header.size();
  for (const auto& f : envelope.body) size += 4 + f.size();
  if (size > 0xffffffffu) throw ProtocolError("mpx: a message too big for the side door");
  out.reserve(out.size() + 4 + size);
  put_u32(out, static_cast<std::uint32_t>(size));
  put_u32(out, static_cast<std::uint32_t>(1 + envelope.body.size()));
  append_record(out, std::string_view(static_cast<const char*>(header.data()), header.size()));
  for (const auto& f : envelope.body) append_record(out, std::string_view(static_cast<const char*>(f.data()), f.size()));
}

std::optional<Envelope> take_packet(std::string_view buffer, std::size_t& start, std::size_t max_bytes) {
  if (buffer.size() - start < 4) return std::nullopt;
  const std::size_t size = get_u32(buffer.data() + start);
  if (size < 8 || size > max_bytes) throw ProtocolError("mpx: a side-door packet of " + std::to_string(size) + " bytes");
  if (buffer.size() - start - 4 < size) return std::nullopt;
  const char* p = buffer.data() + start + 4;
  const char* end = p + size;
  const std::uint32_t frames = get_u32(p);
  p += 4;
  if (frames == 0 || frames > max_body_frames + 1) throw ProtocolError("mpx: a side-door packet's frame count");
  Envelope e;
  RecordReader records(std::string_view(p, static_cast<std::size_t>(end - p)), "a side-door packet");
  for (std::uint32_t k = 0; k < frames; ++k) {
    const auto frame = records.next();
    if (!frame) throw ProtocolError("mpx: a side-door packet ends before its frames");
    if (k == 0) {
      e.header = decode_header(frame->data(), frame->size());
    } else {
      e.body.emplace_back(frame->data(), frame->size());
    }
  }
  if (records.next()) throw ProtocolError("mpx: a side-door packet with bytes after its frames");
  start += 4 + size;
  return e;
}

namespace {
void drain(zmq::socket_ref socket) {
  while (socket.get(zmq::sockopt::rcvmore)) {
    zmq::message_t rest;
    (void)recv_frame(socket, rest);
  }
}
}  // namespace

std::optional<Envelope> recv(zmq::socket_ref socket, zmq::message_t* routing, bool dontwait, Credentials* credentials) {
  const auto flags = dontwait ? zmq::recv_flags::dontwait : zmq::recv_flags::none;
  zmq::message_t first;
  if (!recv_frame(socket, first, flags)) return std::nullopt;
  if (routing) {
    *routing = std::move(first);
    if (!routing->more()) throw ProtocolError("mpx: message has no header frame");
    first = zmq::message_t();
    (void)recv_frame(socket, first);
  }
  if (credentials) *credentials = credentials_of(first);
  Envelope e;
  try {
    e.header = decode_header(first.data(), first.size());
  } catch (...) {
    if (first.more()) drain(socket);
    throw;
  }
  bool more = first.more();
  while (more) {
    zmq::message_t frame;
    (void)recv_frame(socket, frame);
    more = frame.more();
    e.body.push_back(std::move(frame));
    if (more && e.body.size() == max_body_frames) {
      drain(socket);
      throw ProtocolError("mpx: message has more than " + std::to_string(max_body_frames) + " body frames");
    }
  }
  return e;
}

}  // namespace mpx::wire
