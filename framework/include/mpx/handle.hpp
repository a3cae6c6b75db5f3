/// \file
/// mpx/handle.hpp — shared objects are thin handles: an object id plus the coordinator's endpoint. A handle travels
/// as a Process or Pool argument and works the same in the receiving process.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include <mpx/object.hpp>

namespace mpx {

/// What a handle is: a shared object's id and the endpoint of the coordinator that owns it. It is what travels.
struct ObjectRef {
  std::uint64_t id = 0;  ///< the object's id at its coordinator (0: no object)
  std::string endpoint;  ///< the coordinator's ZeroMQ endpoint (ipc:// or tcp://)
  MSGPACK_DEFINE(id, endpoint);
};

/// Tag for rebuilding a handle from its reference (what decoding an argument does) instead of creating an object.
struct adopt_t {
  explicit adopt_t() = default;  ///< Explicit, so that `{}` never converts to the tag by accident.
};
/// The adopt tag: `Queue<int>(mpx::adopt, ref)` rebuilds a handle from its ObjectRef.
inline constexpr adopt_t adopt{};

/// Base of every coordinator-owned object (Queue, Lock, Event, Value...): copies share the object, and the handle
/// travels as a Process or Pool argument. Python pickles the object's reference the same way.
class Handle {
 public:
  const ObjectRef& ref() const noexcept { return ref_; }  ///< The reference that identifies the object in any process.
  std::uint64_t id() const noexcept { return ref_.id; }  ///< The object's id at its coordinator.

 protected:
  /// An empty handle, for subclasses that fill ref_ when they create their object.
  Handle() = default;
  explicit Handle(ObjectRef ref) : ref_(std::move(ref)) {}  ///< A handle to the existing object `ref`.
  ObjectRef ref_;  ///< The object this handle names.
};

/// A type derived from Handle that can be rebuilt from an ObjectRef with the adopt tag.
template <class T>
concept HandleType = std::is_base_of_v<Handle, T> && std::is_constructible_v<T, adopt_t, ObjectRef>;

/// What travels as an argument: anything with a reference, rebuilt from it with the adopt tag (the coordinator's
/// handles here, a manager's proxies in mpx/proxy.hpp, the shared-memory handles of mpx/shared.hpp).
template <class T>
using ref_type = std::remove_cvref_t<decltype(std::declval<const T&>().ref())>;

/// A type with a ref() that can be rebuilt from it with the adopt tag: it travels as an argument (handles and proxies).
template <class T>
concept Adoptable = requires(const T& t) { t.ref(); } && std::is_constructible_v<T, adopt_t, ref_type<T>>;

/// Adoptable types are serializable: their reference is what is encoded.
template <class T>
  requires Adoptable<T>
struct is_serializable<T> : std::true_type {};

/// Python's (block, timeout) pair as the coordinator's wait in milliseconds: -1 forever, 0 not at all.
using Timeout = std::optional<std::chrono::duration<double>>;
/// Converts Python's (block, timeout) to milliseconds for the coordinator: -1 when block and no timeout, 0 when not
/// block or the timeout is zero, negative or NaN (as in Python), else the timeout rounded up (at most 30 years).
MPX_API std::int64_t wait_ms(bool block, const Timeout& timeout);

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
