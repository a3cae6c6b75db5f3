// mpx/detail/managed_type.hpp — a registered type's constructor, destructor and methods as plain functions, which
// is what gives each an identity (build-id + offset) in every process. Internal: BaseManager::register_type
// (mpx/manager.hpp) makes them.
#pragma once

#include <exception>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mpx/function.hpp>
#include <mpx/object.hpp>

namespace mpx::detail {

using ManagedConstruct = void* (*)(std::string_view args, std::string& error);
using ManagedDestroy = void (*)(void* self);
using ManagedMethod = bool (*)(void* self, std::string_view args, std::string& result);

// msgpack [type, message, pid] of an exception thrown by the user's code in the manager process.
MPX_API std::string describe_exception(const std::exception& e);
MPX_API std::string describe_unknown_exception();

template <class T, class... A>
void* construct_managed(std::string_view args, std::string& error) {
  try {
    auto params = decode<std::tuple<std::decay_t<A>...>>(args);
    return std::apply([](auto&&... a) { return static_cast<void*>(new T(std::forward<decltype(a)>(a)...)); },
                      std::move(params));
  } catch (const std::exception& e) {
    error = describe_exception(e);
  } catch (...) {
    error = describe_unknown_exception();
  }
  return nullptr;
}

template <class T>
void destroy_managed(void* self) {
  delete static_cast<T*>(self);
}

template <class M>
struct member_traits;
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...)> {
  using Class = C;
  using Result = R;
  using Params = std::tuple<std::decay_t<P>...>;
};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) const> : member_traits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) noexcept> : member_traits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) const noexcept> : member_traits<R (C::*)(P...)> {};

// The method as a plain function: that is what gives it an identity (build-id + offset) in every process.
template <auto M>
bool invoke_managed(void* self, std::string_view args, std::string& result) {
  using Traits = member_traits<decltype(M)>;
  using R = typename Traits::Result;
  try {
    auto params = decode<typename Traits::Params>(args);
    auto* object = static_cast<typename Traits::Class*>(self);
    auto call = [object](auto&&... a) -> decltype(auto) { return (object->*M)(std::forward<decltype(a)>(a)...); };
    if constexpr (std::is_void_v<R>) {
      std::apply(call, std::move(params));
      result = encode(Object{});
    } else {
      result = encode(std::apply(call, std::move(params)));
    }
    return true;
  } catch (const std::exception& e) {
    result = describe_exception(e);
  } catch (...) {
    result = describe_unknown_exception();
  }
  return false;
}

MPX_API FunctionId identify_managed(void (*function)());
MPX_API void register_managed_type(std::string name, FunctionId construct, FunctionId destroy);
MPX_API void register_managed_method(const std::string& type, std::string method, FunctionId invoke);

}  // namespace mpx::detail
