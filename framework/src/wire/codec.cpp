// Bounded msgpack decoding: the one place where bytes from outside become objects.
#include "wire/limits.hpp"

#include <mpx/object.hpp>

#include <algorithm>
#include <exception>
#include <memory>
#include <string>

namespace mpx::wire {

const Limits& limits() noexcept {
  static const Limits instance;
  return instance;
}

}  // namespace mpx::wire

namespace mpx::detail {

namespace {

msgpack::unpack_limit bounded() {
  const auto& l = wire::limits();
  return msgpack::unpack_limit(l.max_array, l.max_map, l.max_str, l.max_bin, l.max_ext, l.max_depth);
}

// Runs one bounded msgpack decode, turning msgpack's exceptions into ProtocolError.
template <class Decode>
auto guarded(std::size_t size, Decode&& decode) {
  try {
    // A header that claims more elements than the limit (e.g. dd ff ff ff ff) is refused before anything is allocated.
    return decode();
  } catch (const Error&) {
    throw;  // mpx's own, already saying what is wrong
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
}

// msgpack's default zone starts with an 8 KiB chunk: for the small messages that are most of mpx's traffic, that is a
// large-bin malloc (which also consolidates the fast bins) per decode. A first chunk sized to the data comes from
// the thread cache instead; the zone still grows for whatever does not fit.
std::size_t zone_chunk_for(std::size_t size) { return std::clamp<std::size_t>(2 * size + 64, 128, 8192); }

void check_consumed(std::size_t offset, std::size_t size) {
  if (offset != size) {
    throw ProtocolError("mpx: " + std::to_string(size - offset) + " trailing bytes after a msgpack value");
  }
}

}  // namespace

msgpack::object_handle unpack_bounded(const char* data, std::size_t size) {
  std::size_t offset = 0;
  auto zone = std::make_unique<msgpack::zone>(zone_chunk_for(size));
  const msgpack::object object =
      guarded(size, [&] { return msgpack::unpack(*zone, data, size, offset, nullptr, nullptr, bounded()); });
  check_consumed(offset, size);
  return msgpack::object_handle(object, std::move(zone));
}

std::uint32_t array_length(std::string_view bytes) {
  // The header alone: fixarray (0x90-0x9f), array 16 (0xdc) or array 32 (0xdd), big-endian counts.
  const auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(bytes[i]); };
  if (bytes.empty()) throw ProtocolError("mpx: truncated msgpack data (0 bytes)");
  const std::uint8_t tag = byte(0);
  std::uint32_t length = 0;
  if ((tag & 0xf0) == 0x90) {
    length = tag & 0x0f;
  } else if (tag == 0xdc || tag == 0xdd) {
    const std::size_t width = tag == 0xdc ? 2 : 4;
    if (bytes.size() < 1 + width) throw ProtocolError("mpx: truncated msgpack data (" + std::to_string(bytes.size()) + " bytes)");
    for (std::size_t i = 1; i <= width; ++i) length = (length << 8) | byte(i);
  } else {
    throw ProtocolError("mpx: msgpack data is not an array");
  }
  if (length > wire::limits().max_array) {
    throw ProtocolError("mpx: msgpack data exceeds the decode limits: an array of " + std::to_string(length));
  }
  return length;
}

namespace {

// msgpack's own object builder, with the outermost array taken apart: each of its elements is built as a root of
// its own into one zone, handed on, and the zone is cleared for the next. The visitor's methods are resolved at
// compile time by msgpack's parser, so these hide the base class's.
class ElementVisitor : public msgpack::v2::detail::create_object_visitor {
  using Base = msgpack::v2::detail::create_object_visitor;

 public:
  ElementVisitor(std::size_t size, ElementFn each, void* context)
      : Base(nullptr, nullptr, bounded()), zone_(zone_chunk_for(size)), each_(each), context_(context) {
    set_zone(zone_);
  }

  bool start_array(std::uint32_t n) {
    if (depth_++ == 0) return true;  // the outer array: its length was checked by array_length
    return Base::start_array(n);
  }
  bool start_array_item() { return depth_ == 1 ? true : Base::start_array_item(); }
  bool end_array_item() {
    if (depth_ != 1) return Base::end_array_item();
    try {
      each_(context_, index_++, data());
    } catch (...) {
      failure_ = std::current_exception();  // the caller's own exception, rethrown as it is after the parse stops
      return false;
    }
    init();
    zone_.clear();
    return true;
  }
  bool end_array() { return --depth_ == 0 ? true : Base::end_array(); }
  bool start_map(std::uint32_t n) {
    if (depth_++ == 0) throw ProtocolError("mpx: msgpack data is not an array");
    return Base::start_map(n);
  }
  bool end_map() {
    --depth_;
    return Base::end_map();
  }

  std::exception_ptr failure() const { return failure_; }

 private:
  msgpack::zone zone_;
  ElementFn each_;
  void* context_;
  std::uint32_t depth_ = 0;
  std::uint32_t index_ = 0;
  std::exception_ptr failure_;
};

}  // namespace

void each_element(std::string_view bytes, ElementFn each, void* context) {
  (void)array_length(bytes);  // a scalar at the top, or an oversized header, is refused here
  ElementVisitor visitor(bytes.size(), each, context);
  std::size_t offset = 0;
  guarded(bytes.size(), [&] { return msgpack::v2::parse(bytes.data(), bytes.size(), offset, visitor); });
  if (auto failure = visitor.failure()) std::rethrow_exception(failure);
  check_consumed(offset, bytes.size());
}

}  // namespace mpx::detail
