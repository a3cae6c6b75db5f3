// mpx/detail/manager_request.hpp — what a proxy's inline members call: one request to the manager, and the
// conversions between a typed value and the Object the manager holds. Internal: the proxies are in mpx/proxy.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mpx/object.hpp>

namespace mpx {

struct ManagerRef;

namespace detail {

// Any serializable value as an Object and back (through its msgpack form).
template <Serializable T>
Object to_object(const T& value) {
  if constexpr (std::is_same_v<std::remove_cvref_t<T>, Object>) {
    return value;
  } else {
    return decode<Object>(encode(value));
  }
}
template <Serializable T>
T from_object(const Object& value) {
  if constexpr (std::is_same_v<T, Object>) {
    return value;
  } else {
    return decode<T>(encode(value));
  }
}

// How an argument travels: as its decayed type, except that a string literal travels as a std::string.
template <class A>
using arg_t = std::conditional_t<std::is_same_v<std::decay_t<A>, const char*> || std::is_same_v<std::decay_t<A>, char*>,
                                 std::string, std::decay_t<A>>;

template <class... A>
std::string encode_args(A&&... args) {
  static_assert((Serializable<arg_t<A>> && ...), "mpx: a manager call's argument is not serializable");
  return encode(std::tuple<arg_t<A>...>(std::forward<A>(args)...));
}

// One request to the manager at ref.endpoint; returns the ok reply's body. Error replies raise KeyError, IndexError,
// AttributeError, TypeError, ValueError, AuthenticationError or ProtocolError.
MPX_API std::string manager_request(const ManagerRef& ref, std::uint16_t kind, std::string body);
MPX_API Object manager_get(const ManagerRef& ref, const Object::Array& path);
MPX_API Object manager_apply(const ManagerRef& ref, const Object::Array& path, std::string_view op, const Object::Array& args);
// Calls a registered method: returns its encoded result, or throws RemoteError.
MPX_API std::string manager_call(const ManagerRef& ref, std::string_view method, std::string args);

// A reference to a managed object of proxy type `type_id`, as a value another managed object can hold:
// {"__mpx_proxy__": type_id, "ref": [id, endpoint, direct, authkey]}.
MPX_API Object proxy_token(std::string_view type_id, const ManagerRef& ref);
// The reference a token holds; mpx::TypeError naming what `value` holds if it is no token of `type_id`.
MPX_API ManagerRef proxy_token_ref(const Object& value, std::string_view type_id);

}  // namespace detail
}  // namespace mpx
