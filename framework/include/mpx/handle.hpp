// mpx/handle.hpp — shared objects are thin handles: an object id plus the coordinator's endpoint. A handle travels
// as a Process or Pool argument and works the same in the receiving process.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include <mpx/object.hpp>

namespace mpx {

struct ObjectRef {
  std::uint64_t id = 0;
  std::string endpoint;
  MSGPACK_DEFINE(id, endpoint);
};

// Tag for rebuilding a handle from its reference (what decoding an argument does) instead of creating an object.
struct adopt_t {
  explicit adopt_t() = default;
};
inline constexpr adopt_t adopt{};

class Handle {
 public:
  const ObjectRef& ref() const noexcept { return ref_; }
  std::uint64_t id() const noexcept { return ref_.id; }

 protected:
  Handle() = default;
  explicit Handle(ObjectRef ref) : ref_(std::move(ref)) {}
  ObjectRef ref_;
};

template <class T>
concept HandleType = std::is_base_of_v<Handle, T> && std::is_constructible_v<T, adopt_t, ObjectRef>;

// What travels as an argument: anything with a reference, rebuilt from it with the adopt tag (the coordinator's
// handles here, a manager's proxies in mpx/manager.hpp).
template <class T>
using ref_type = std::remove_cvref_t<decltype(std::declval<const T&>().ref())>;

template <class T>
concept Adoptable = requires(const T& t) { t.ref(); } && std::is_constructible_v<T, adopt_t, ref_type<T>>;

template <class T>
  requires Adoptable<T>
struct is_serializable<T> : std::true_type {};

// Python's (block, timeout) pair as the coordinator's wait in milliseconds: -1 forever, 0 not at all.
using Timeout = std::optional<std::chrono::duration<double>>;
std::int64_t wait_ms(bool block, const Timeout& timeout);

}  // namespace mpx

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {

template <class T>
struct pack<T, std::enable_if_t<mpx::Adoptable<T>>> {
  template <class Stream>
  packer<Stream>& operator()(packer<Stream>& p, const T& handle) const {
    return p.pack(handle.ref());
  }
};

template <class T>
struct as<T, std::enable_if_t<mpx::Adoptable<T>>> {
  T operator()(const msgpack::object& o) const { return T(mpx::adopt, o.as<mpx::ref_type<T>>()); }
};

template <class T>
struct convert<T, std::enable_if_t<mpx::Adoptable<T>>> {
  const msgpack::object& operator()(const msgpack::object& o, T& v) const {
    v = T(mpx::adopt, o.as<mpx::ref_type<T>>());
    return o;
  }
};

}  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack
