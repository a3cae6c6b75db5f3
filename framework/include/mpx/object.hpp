/// \file
/// mpx/object.hpp — what can travel between processes, and mpx::Object for values of any msgpack shape.
#pragma once

#ifndef MSGPACK_NO_BOOST
/// msgpack-c without Boost: mpx needs none. Defined unless the includer did.
#define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>

#include <array>
#include <cstddef>
#include <climits>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <mpx/errors.hpp>
#include <mpx/detail/msgpack_codec.hpp>

namespace mpx {

/// A value of any msgpack shape, for Python-style heterogeneous data such as [42, None, "hello"].
class MPX_API Object {
 public:
  using Array = std::vector<Object>;  ///< A list (Python list or tuple).
  using Map = std::vector<std::pair<Object, Object>>;  ///< A dict, in insertion order; keys may be any Object.
  /// Raw bytes (Python bytes), encoded as msgpack bin rather than str.
  struct Bytes {
    std::string data;  ///< the bytes
    bool operator==(const Bytes&) const = default;  ///< Equal bytes.
  };
  /// The shape of the value: none (Python None), boolean, integer (int64), unsigned_integer (a uint64 above INT64_MAX),
  /// floating (double), string (str), bytes, array (list) or map (dict).
  enum class Type { none, boolean, integer, unsigned_integer, floating, string, bytes, array, map };

  ///@{
  /// Python's None by default; otherwise the value given. Signed integers are stored as int64; unsigned ones as int64
  /// when they fit, so that one value has one representation, as msgpack decodes it.
  Object() = default;
  Object(std::nullptr_t) {}
  Object(bool b) : value_(b) {}
  template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool> && std::is_signed_v<I>)
  Object(I i) : value_(static_cast<std::int64_t>(i)) {}
  template <class U>
    requires(std::is_integral_v<U> && !std::is_same_v<U, bool> && std::is_unsigned_v<U>)
  Object(U u) {
    // One representation per value: unsigned values that fit are stored as signed, as msgpack decodes them.
    if (static_cast<std::uint64_t>(u) <= static_cast<std::uint64_t>(INT64_MAX)) {
      value_ = static_cast<std::int64_t>(u);
    } else {
      value_ = static_cast<std::uint64_t>(u);
    }
  }
  Object(double d) : value_(d) {}
  Object(const char* s) : value_(std::string(s)) {}
  Object(std::string s) : value_(std::move(s)) {}
  Object(std::string_view s) : value_(std::string(s)) {}
  Object(Bytes b) : value_(std::move(b)) {}
  Object(Array a) : value_(std::move(a)) {}
  Object(Map m) : value_(std::move(m)) {}
  ///@}

  /// Object::list({42, nullptr, "hello"}) is Python's [42, None, "hello"].
  static Object list(std::initializer_list<Object> items) { return Object(Array(items)); }
  /// Object::dict({{"a", 1}, {"b", 2}}) is Python's {"a": 1, "b": 2}.
  static Object dict(std::initializer_list<std::pair<Object, Object>> items) { return Object(Map(items)); }

  Type type() const noexcept { return static_cast<Type>(value_.index()); }  ///< The shape of the value.
  /// True for Python's None (a default-constructed Object).
  bool is_none() const noexcept { return type() == Type::none; }

  ///@{
  /// Typed access; a wrong type throws mpx::SerializationError naming both types.
  bool as_bool() const;
  std::int64_t as_int() const;
  std::uint64_t as_uint() const;
  double as_double() const;
  const std::string& as_string() const;
  const Bytes& as_bytes() const;
  const Array& as_array() const;
  Array& as_array();
  const Map& as_map() const;
  Map& as_map();
  ///@}

  /// Size of an array, map, string or bytes.
  std::size_t size() const;
  /// Array element; throws mpx::SerializationError if this is not an array or `index` is outside it.
  const Object& operator[](std::size_t index) const;
  /// Map lookup by key; throws mpx::SerializationError naming the missing key.
  const Object& operator[](std::string_view key) const;
  /// True if this map has the string key `key`; SerializationError if not a map.
  bool contains(std::string_view key) const;

  bool operator==(const Object&) const = default;  ///< Same type and equal value (1 and 1.0 differ, as their types do).

  /// Python's repr: [42, None, 'hello'], {'a': 1}, True, 1.5, b'..'.
  std::string repr() const;
  static const char* type_name(Type t) noexcept;  ///< Python's name of the type, for messages: "None", "int", "str"...

 private:
  std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Bytes, Array, Map> value_;
};

/// Opt a type with a hand-written msgpack adaptor into mpx's compile-time check.
template <class T>
struct is_serializable : std::false_type {};

namespace detail {

template <class T>
concept HasMsgpackDefine = requires(const T& c, T& m, msgpack::packer<msgpack::sbuffer>& pk, const msgpack::object& o) {
  c.msgpack_pack(pk);
  m.msgpack_unpack(o);
};

template <class T>
struct serializable
    : std::bool_constant<std::is_arithmetic_v<T> || HasMsgpackDefine<T> || is_serializable<T>::value> {};
template <>
struct serializable<std::string> : std::true_type {};
template <>
struct serializable<Object> : std::true_type {};
template <class T, class A>
struct serializable<std::vector<T, A>> : serializable<T> {};
template <class T, class A>
struct serializable<std::list<T, A>> : serializable<T> {};
template <class T, class A>
struct serializable<std::deque<T, A>> : serializable<T> {};
template <class T, std::size_t N>
struct serializable<std::array<T, N>> : serializable<T> {};
template <class T, class C, class A>
struct serializable<std::set<T, C, A>> : serializable<T> {};
template <class K, class V, class C, class A>
struct serializable<std::map<K, V, C, A>> : std::bool_constant<serializable<K>::value && serializable<V>::value> {};
template <class K, class V, class H, class E, class A>
struct serializable<std::unordered_map<K, V, H, E, A>>
    : std::bool_constant<serializable<K>::value && serializable<V>::value> {};
template <class T>
struct serializable<std::optional<T>> : serializable<T> {};
template <class A, class B>
struct serializable<std::pair<A, B>> : std::bool_constant<serializable<A>::value && serializable<B>::value> {};
template <class... T>
struct serializable<std::tuple<T...>> : std::bool_constant<(serializable<T>::value && ...)> {};

}  // namespace detail

/// True for what mpx can send: scalars, strings, containers, optionals, tuples, mpx::Object,
/// and user types with MSGPACK_DEFINE(...) (or is_serializable<T> for a hand-written adaptor).
template <class T>
concept Serializable = detail::serializable<std::remove_cvref_t<T>>::value;

/// Encode a value; a failure is a SerializationError at the call site.
template <Serializable T>
std::string encode(const T& value) {
  std::string out;
  detail::StringWriter writer{out};
  try {
    msgpack::pack(writer, value);
  } catch (const std::exception& e) {
    throw SerializationError(std::string("mpx: cannot encode value: ") + e.what());
  }
  return out;
}

/// Decode a value with bounded limits; malformed input or a type mismatch throws SerializationError. Another
/// mpx::Error raised while building the value (a decoded handle whose object is gone) reaches the caller unchanged.
template <Serializable T>
T decode(std::string_view bytes) {
  msgpack::object_handle handle;
  try {
    handle = detail::unpack_bounded(bytes.data(), bytes.size());
  } catch (const ProtocolError& e) {
    throw SerializationError(e.what());
  }
  if constexpr (detail::is_tuple<T>::value) {
    // msgpack-c fills missing tuple elements with defaults; a message or an argument list must match exactly.
    const auto& o = handle.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != std::tuple_size_v<T>) {
      throw SerializationError("mpx: expected an array of " + std::to_string(std::tuple_size_v<T>) + " elements");
    }
  }
  try {
    return handle.get().as<T>();
  } catch (const ProtocolError& e) {
    throw SerializationError(e.what());
  } catch (const Error&) {
    throw;  // a handle whose object is gone (FileNotFoundError, say) says so, as Python's unpickling does
  } catch (const std::exception& e) {
    throw SerializationError(std::string("mpx: cannot decode value: ") + e.what());
  }
}

/// Appends the elements of an encoded msgpack array to `out`, decoding one element at a time (detail::each_element):
/// the same result as appending decode<std::vector<T>>(bytes), without building the whole array first. Malformed
/// input or a type mismatch throws SerializationError.
template <Serializable T>
void decode_append(std::string_view bytes, std::vector<T>& out) {
  try {
    detail::for_each_element(bytes, [&out](std::uint32_t, const msgpack::object& element) {
      out.push_back(element.as<T>());
    });
  } catch (const ProtocolError& e) {
    throw SerializationError(e.what());
  } catch (const SerializationError&) {
    throw;
  } catch (const std::exception& e) {
    throw SerializationError(std::string("mpx: cannot decode value: ") + e.what());
  }
}

}  // namespace mpx

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {

template <>
struct MPX_API convert<mpx::Object> {
  const msgpack::object& operator()(const msgpack::object& o, mpx::Object& v) const;
};

template <>
struct pack<mpx::Object> {
  template <class Stream>
  packer<Stream>& operator()(packer<Stream>& p, const mpx::Object& v) const {
    using T = mpx::Object::Type;
    switch (v.type()) {
      case T::none: p.pack_nil(); break;
      case T::boolean: p.pack(v.as_bool()); break;
      case T::integer: p.pack(v.as_int()); break;
      case T::unsigned_integer: p.pack(v.as_uint()); break;
      case T::floating: p.pack(v.as_double()); break;
      case T::string: p.pack(v.as_string()); break;
      case T::bytes:
        p.pack_bin(static_cast<std::uint32_t>(v.as_bytes().data.size()));
        p.pack_bin_body(v.as_bytes().data.data(), static_cast<std::uint32_t>(v.as_bytes().data.size()));
        break;
      case T::array:
        p.pack_array(static_cast<std::uint32_t>(v.as_array().size()));
        for (const auto& item : v.as_array()) (*this)(p, item);
        break;
      case T::map:
        p.pack_map(static_cast<std::uint32_t>(v.as_map().size()));
        for (const auto& [key, value] : v.as_map()) {
          (*this)(p, key);
          (*this)(p, value);
        }
        break;
    }
    return p;
  }
};

}  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack
