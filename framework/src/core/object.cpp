#include <mpx/object.hpp>

#include <cmath>
#include <cstdio>

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
