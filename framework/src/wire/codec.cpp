// Bounded msgpack decoding: the one place where bytes from outside become objects.
#include "wire/limits.hpp"

#include <mpx/object.hpp>

#include <string>

namespace mpx::wire {

const Limits& limits() noexcept {
  static const Limits instance;
  return instance;
}

}  // namespace mpx::wire

namespace mpx::detail {

msgpack::object_handle unpack_bounded(const char* data, std::size_t size) {
  const auto& l = wire::limits();
  const msgpack::unpack_limit limit(l.max_array, l.max_map, l.max_str, l.max_bin, l.max_ext, l.max_depth);
  std::size_t offset = 0;
  msgpack::object_handle handle;
  try {
    // A header that claims more elements than the limit (e.g. dd ff ff ff ff) is refused before anything is allocated.
    handle = msgpack::unpack(data, size, offset, nullptr, nullptr, limit);
  } catch (const msgpack::insufficient_bytes&) {
    throw ProtocolError("mpx: truncated msgpack data (" + std::to_string(size) + " bytes)");
  } catch (const msgpack::depth_size_overflow& e) {
    throw ProtocolError(std::string("mpx: msgpack data nested too deeply: ") + e.what());
  } catch (const msgpack::size_overflow& e) {
    throw ProtocolError(std::string("mpx: msgpack data exceeds the decode limits: ") + e.what());
  } catch (const std::bad_alloc&) {
    throw ProtocolError("mpx: msgpack data too large to decode");
  } catch (const std::exception& e) {
    throw ProtocolError(std::string("mpx: malformed msgpack data: ") + e.what());
  }
  if (offset != size) {
    throw ProtocolError("mpx: " + std::to_string(size - offset) + " trailing bytes after a msgpack value");
  }
  return handle;
}

}  // namespace mpx::detail
