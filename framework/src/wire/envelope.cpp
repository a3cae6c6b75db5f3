#include "wire/envelope.hpp"

#include <time.h>

namespace mpx::wire {

namespace {
constexpr std::size_t header_fields = 7;
constexpr std::size_t max_header_bytes = 64;
constexpr std::size_t max_body_frames = 64;

// A lookup table built from known_kinds, so that checking a kind costs one load.
struct KindTable {
  bool known[65536] = {};
  constexpr KindTable() {
    for (const auto& k : known_kinds) known[static_cast<std::uint16_t>(k.kind)] = true;
  }
};
constexpr KindTable kind_table{};
}  // namespace

bool is_known(std::uint16_t kind) noexcept { return kind_table.known[kind]; }

std::string_view kind_name(Kind kind) noexcept {
  for (const auto& k : known_kinds) {
    if (k.kind == kind) return k.name;
  }
  return "unknown";
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

zmq::message_t encode_header(const Header& h) {
  msgpack::sbuffer buffer(max_header_bytes);
  msgpack::packer<msgpack::sbuffer> pk(buffer);
  pk.pack_array(header_fields);
  pk.pack(h.version);
  pk.pack(static_cast<std::uint16_t>(h.kind));
  pk.pack(h.sender);
  pk.pack(h.object);
  pk.pack(h.correlation);
  pk.pack(h.flags);
  pk.pack(h.timestamp_ns);
  return zmq::message_t(buffer.data(), buffer.size());
}

Header decode_header(const void* data, std::size_t size) {
  if (size == 0 || size > max_header_bytes) {
    throw ProtocolError("mpx: header frame of " + std::to_string(size) + " bytes (expected 1.." +
                        std::to_string(max_header_bytes) + ")");
  }
  auto handle = detail::unpack_bounded(static_cast<const char*>(data), size);
  const msgpack::object& o = handle.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != header_fields) {
    throw ProtocolError("mpx: header is not an array of " + std::to_string(header_fields) + " fields");
  }
  const msgpack::object* f = o.via.array.ptr;
  for (std::size_t i = 0; i < header_fields; ++i) {
    if (f[i].type != msgpack::type::POSITIVE_INTEGER) {
      throw ProtocolError("mpx: header field " + std::to_string(i) + " is not an unsigned integer");
    }
  }
  Header h;
  if (f[0].via.u64 != protocol_version) {
    throw ProtocolError("mpx: protocol version " + std::to_string(f[0].via.u64) + " (this build speaks " +
                        std::to_string(protocol_version) + ")");
  }
  if (f[1].via.u64 > 0xffff || !is_known(static_cast<std::uint16_t>(f[1].via.u64))) {
    throw ProtocolError("mpx: unknown message kind " + std::to_string(f[1].via.u64));
  }
  if (f[5].via.u64 > 0xffffffffu) throw ProtocolError("mpx: header flags out of range");
  h.kind = static_cast<Kind>(f[1].via.u64);
  h.sender = f[2].via.u64;
  h.object = f[3].via.u64;
  h.correlation = f[4].via.u64;
  h.flags = static_cast<std::uint32_t>(f[5].via.u64);
  h.timestamp_ns = f[6].via.u64;
  return h;
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
    if (!socket.send(id, more)) return false;
  }
  auto header = encode_header(envelope.header);
  // Once the first frame is queued, ZeroMQ guarantees the rest of the multipart message is accepted atomically.
  if (!socket.send(header, envelope.body.empty() ? last : more)) return false;
  for (std::size_t i = 0; i < envelope.body.size(); ++i) {
    socket.send(envelope.body[i], i + 1 == envelope.body.size() ? zmq::send_flags::none : zmq::send_flags::sndmore);
  }
  return true;
}

namespace {
void drain(zmq::socket_ref socket) {
  while (socket.get(zmq::sockopt::rcvmore)) {
    zmq::message_t rest;
    (void)socket.recv(rest);
  }
}
}  // namespace

std::optional<Envelope> recv(zmq::socket_ref socket, zmq::message_t* routing, bool dontwait) {
  const auto flags = dontwait ? zmq::recv_flags::dontwait : zmq::recv_flags::none;
  zmq::message_t first;
  if (!socket.recv(first, flags)) return std::nullopt;
  if (routing) {
    *routing = std::move(first);
    if (!routing->more()) throw ProtocolError("mpx: message has no header frame");
    first = zmq::message_t();
    (void)socket.recv(first);
  }
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
    (void)socket.recv(frame);
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
