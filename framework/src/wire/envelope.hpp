// The envelope: every message is multipart [header][body...]. The header is a small msgpack array; bodies are
// msgpack or raw bytes, each in its own frame so that large payloads travel without a copy.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include <mpx/errors.hpp>
#include <mpx/object.hpp>

#include "wire/kinds.hpp"

namespace mpx::wire {

inline constexpr std::uint8_t protocol_version = 1;
// A message with more body frames than this is malformed; batches must fit under it.
inline constexpr std::size_t max_body_frames = 64;

enum class Flag : std::uint32_t {
  none = 0,
  trace = 1u << 0,        // record this message on the trace bus
  acknowledge = 1u << 1,  // a posted kind sent as a request: the coordinator answers `ok nil` once it handled it
};

struct Header {
  std::uint8_t version = protocol_version;
  Kind kind = Kind::ok;
  std::uint64_t sender = 0;       // actor id (the sending process's pid on this host)
  std::uint64_t object = 0;       // the shared object addressed, 0 for the runtime itself
  std::uint64_t correlation = 0;  // copied into the reply
  std::uint32_t flags = 0;
  std::uint64_t timestamp_ns = 0;  // CLOCK_MONOTONIC at send
};

struct Envelope {
  Header header;
  std::vector<zmq::message_t> body;

  // The first body frame decoded as T (bounded); throws ProtocolError if absent or malformed.
  template <Serializable T>
  T body_as() const {
    if (body.empty()) throw ProtocolError("mpx: message has no body");
    try {
      return decode<T>(std::string_view(static_cast<const char*>(body.front().data()), body.front().size()));
    } catch (const SerializationError& e) {
      throw ProtocolError(e.what());
    }
  }
};

std::uint64_t monotonic_ns() noexcept;

// Encodes a header into one frame.
zmq::message_t encode_header(const Header& header);
// Decodes and validates a header frame: exactly 7 fields, this protocol version, a known kind. Throws ProtocolError.
Header decode_header(const void* data, std::size_t size);

// Builds an envelope whose single body frame is `body` encoded with msgpack.
template <Serializable T>
Envelope make(Kind kind, std::uint64_t object, std::uint64_t correlation, const T& body) {
  Envelope e;
  e.header.kind = kind;
  e.header.object = object;
  e.header.correlation = correlation;
  e.body.emplace_back(encode(body));
  return e;
}
Envelope make_reply(const Header& request, Kind kind, std::string body);
// A body frame that takes over `bytes`: a large one is handed to ZeroMQ without a copy.
zmq::message_t frame_of(std::string bytes);
Envelope make_error(const Header& request, ErrorCode code, std::string_view message);

// The side door's framing (PROTOCOL.md, "The side door"): one message is a packet [u32 size][u32 frames] then, per
// frame (the header first), [u32 length][bytes]; little-endian, `size` counting everything after itself.
// Appends `envelope` as a packet to `out`, stamping sender and timestamp as send() does.
void append_packet(std::string& out, Envelope& envelope, std::uint64_t sender);
// Takes the packet at `start` of `buffer` if it is whole (advancing `start`); nullopt if more bytes are needed.
// Throws ProtocolError for a malformed packet or one over `max_bytes`: the stream cannot be trusted after it.
std::optional<Envelope> take_packet(std::string_view buffer, std::size_t& start, std::size_t max_bytes);

// Sends [routing...][header][body...]; stamps the sender and the timestamp. Returns false if it would block
// (only when `dontwait`); a real fault throws zmq::error_t.
bool send(zmq::socket_ref socket, Envelope& envelope, std::uint64_t sender, const zmq::message_t* routing = nullptr,
          bool dontwait = false);

// Receives one multipart message. For a ROUTER socket, routing receives the peer identity, and `credentials` what the
// header frame says about the connection it came on (wire/curve.hpp: the User-Id ZAP gave it).
// Returns nullopt if no message is ready and `dontwait`. Throws ProtocolError on a malformed message (after draining
// all its frames, so the socket stays in step).
struct Credentials;
std::optional<Envelope> recv(zmq::socket_ref socket, zmq::message_t* routing = nullptr, bool dontwait = false,
                             Credentials* credentials = nullptr);

}  // namespace mpx::wire
