// mpx::Object, and the bounded msgpack decoding every mpx::decode goes through: the one place where bytes from
// outside become objects.
#include <mpx/object.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "core/limits.hpp"

namespace mpx {

namespace {
[[noreturn]] void wrong_type(Object::Type wanted, Object::Type actual) {
  throw SerializationError(std::string("mpx::Object: expected ") + Object::type_name(wanted) + ", holds " +
                           Object::type_name(actual));
}
}  // namespace

const char* Object::type_name(Type t) noexcept {
  switch (t) {
    case Type::none: return "None";
    case Type::boolean: return "bool";
    case Type::integer: return "int";
    case Type::unsigned_integer: return "int";
    case Type::floating: return "float";
    case Type::string: return "str";
    case Type::bytes: return "bytes";
    case Type::array: return "list";
    case Type::map: return "dict";
  }
  return "?";
}

bool Object::as_bool() const {
  if (auto* b = std::get_if<bool>(&value_)) return *b;
  wrong_type(Type::boolean, type());
}

std::int64_t Object::as_int() const {
  if (auto* i = std::get_if<std::int64_t>(&value_)) return *i;
  if (auto* u = std::get_if<std::uint64_t>(&value_)) {
    if (*u > static_cast<std::uint64_t>(INT64_MAX)) throw SerializationError("mpx::Object: integer out of int64 range");
    return static_cast<std::int64_t>(*u);
  }
  wrong_type(Type::integer, type());
}

std::uint64_t Object::as_uint() const {
  if (auto* u = std::get_if<std::uint64_t>(&value_)) return *u;
  if (auto* i = std::get_if<std::int64_t>(&value_)) {
    if (*i < 0) throw SerializationError("mpx::Object: negative integer where unsigned expected");
    return static_cast<std::uint64_t>(*i);
  }
  wrong_type(Type::unsigned_integer, type());
}

double Object::as_double() const {
  if (auto* d = std::get_if<double>(&value_)) return *d;
  if (auto* i = std::get_if<std::int64_t>(&value_)) return static_cast<double>(*i);
  if (auto* u = std::get_if<std::uint64_t>(&value_)) return static_cast<double>(*u);
  wrong_type(Type::floating, type());
}

const std::string& Object::as_string() const {
  if (auto* s = std::get_if<std::string>(&value_)) return *s;
  wrong_type(Type::string, type());
}

const Object::Bytes& Object::as_bytes() const {
  if (auto* b = std::get_if<Bytes>(&value_)) return *b;
  wrong_type(Type::bytes, type());
}

const Object::Array& Object::as_array() const {
  if (auto* a = std::get_if<Array>(&value_)) return *a;
  wrong_type(Type::array, type());
}

Object::Array& Object::as_array() {
  if (auto* a = std::get_if<Array>(&value_)) return *a;
  wrong_type(Type::array, type());
}

const Object::Map& Object::as_map() const {
  if (auto* m = std::get_if<Map>(&value_)) return *m;
  wrong_type(Type::map, type());
}

Object::Map& Object::as_map() {
  if (auto* m = std::get_if<Map>(&value_)) return *m;
  wrong_type(Type::map, type());
}

std::size_t Object::size() const {
  switch (type()) {
    case Type::array: return as_array().size();
    case Type::map: return as_map().size();
    case Type::string: return as_string().size();
    case Type::bytes: return as_bytes().data.size();
    default: throw SerializationError(std::string("mpx::Object: ") + type_name(type()) + " has no size");
  }
}

const Object& Object::operator[](std::size_t index) const {
  const auto& a = as_array();
  if (index >= a.size()) {
    throw SerializationError("mpx::Object: index " + std::to_string(index) + " out of range for a list of " +
                             std::to_string(a.size()));
  }
  return a[index];
}

const Object& Object::operator[](std::string_view key) const {
  for (const auto& [k, v] : as_map()) {
    if (k.type() == Type::string && k.as_string() == key) return v;
  }
  throw SerializationError("mpx::Object: no key '" + std::string(key) + "'");
}

bool Object::contains(std::string_view key) const {
  for (const auto& [k, v] : as_map()) {
    if (k.type() == Type::string && k.as_string() == key) return true;
  }
  return false;
}

namespace {
void quote(std::string& out, const std::string& s) {
  out.push_back('\'');
  for (char c : s) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('\'');
}
}  // namespace

std::string Object::repr() const {
  std::string out;
  switch (type()) {
    case Type::none: return "None";
    case Type::boolean: return as_bool() ? "True" : "False";
    case Type::integer: return std::to_string(std::get<std::int64_t>(value_));
    case Type::unsigned_integer: return std::to_string(std::get<std::uint64_t>(value_));
    case Type::floating: {
      const double d = std::get<double>(value_);
      char buffer[64];
      std::snprintf(buffer, sizeof buffer, "%.17g", d);
      // Python prints the shortest repr that round-trips; try shorter precisions first.
      for (int precision = 1; precision <= 17; ++precision) {
        std::snprintf(buffer, sizeof buffer, "%.*g", precision, d);
        if (std::strtod(buffer, nullptr) == d) break;
      }
      out = buffer;
      if (std::isfinite(d) && out.find_first_of(".eE") == std::string::npos) out += ".0";
      return out;
    }
    case Type::string: quote(out, as_string()); return out;
    case Type::bytes: out = "b"; quote(out, as_bytes().data); return out;
    case Type::array:
      out = "[";
      for (std::size_t i = 0; i < as_array().size(); ++i) {
        if (i) out += ", ";
        out += as_array()[i].repr();
      }
      return out + "]";
    case Type::map:
      out = "{";
      for (std::size_t i = 0; i < as_map().size(); ++i) {
        if (i) out += ", ";
        out += as_map()[i].first.repr() + ": " + as_map()[i].second.repr();
      }
      return out + "}";
  }
  return out;
}

}  // namespace mpx

namespace mpx::core {

const Limits& limits() noexcept {
  static const Limits instance;
  return instance;
}

}  // namespace mpx::core

namespace mpx::detail {

namespace {

msgpack::unpack_limit bounded() {
  const auto& l = core::limits();
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
  if (length > core::limits().max_array) {
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

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {

const msgpack::object& convert<mpx::Object>::operator()(const msgpack::object& o, mpx::Object& v) const {
  switch (o.type) {
    case msgpack::type::NIL: v = mpx::Object{}; break;
    case msgpack::type::BOOLEAN: v = mpx::Object{o.via.boolean}; break;
    case msgpack::type::POSITIVE_INTEGER: v = mpx::Object{o.via.u64}; break;
    case msgpack::type::NEGATIVE_INTEGER: v = mpx::Object{o.via.i64}; break;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: v = mpx::Object{o.via.f64}; break;
    case msgpack::type::STR: v = mpx::Object{std::string(o.via.str.ptr, o.via.str.size)}; break;
    case msgpack::type::BIN: v = mpx::Object{mpx::Object::Bytes{std::string(o.via.bin.ptr, o.via.bin.size)}}; break;
    case msgpack::type::ARRAY: {
      mpx::Object::Array items;
      items.reserve(o.via.array.size);
      for (std::uint32_t i = 0; i < o.via.array.size; ++i) items.push_back(o.via.array.ptr[i].as<mpx::Object>());
      v = mpx::Object{std::move(items)};
      break;
    }
    case msgpack::type::MAP: {
      mpx::Object::Map items;
      items.reserve(o.via.map.size);
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        items.emplace_back(o.via.map.ptr[i].key.as<mpx::Object>(), o.via.map.ptr[i].val.as<mpx::Object>());
      }
      v = mpx::Object{std::move(items)};
      break;
    }
    case msgpack::type::EXT: throw msgpack::type_error();
  }
  return o;
}

}  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack
