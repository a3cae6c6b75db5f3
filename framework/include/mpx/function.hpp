/// \file
/// mpx/function.hpp — function identity: how a plain function travels to another process without registration.
///
/// A target is sent as (build-id of the module that holds it, offset of the function in that module, offset of a
/// typed trampoline that decodes the arguments and encodes the result). Any process running the same build can
/// turn that back into a call, whether it was forked, forkserved, spawned or started on another host.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mpx/object.hpp>

namespace mpx {

/// A function pointer with its type erased; the trampoline casts it back.
using ErasedFunction = void (*)();
/// Decodes `args` as the function's parameters, calls it, and writes the msgpack-encoded result (nil for void) to
/// `result`.
using Trampoline = void (*)(ErasedFunction function, std::string_view args, std::string& result);

/// Where a function lives, portable across processes of one build.
struct FunctionId {
  std::string build_id;              ///< hex GNU build-id of the module holding the function
  std::uint64_t function_offset = 0;  ///< 0 when the trampoline needs no function (Process subclasses)
  std::uint64_t trampoline_offset = 0;  ///< offset of the typed trampoline in the module holding it
  MSGPACK_DEFINE(build_id, function_offset, trampoline_offset);
};

/// Turns a local (function, trampoline) pair into its portable id. Throws ProtocolError if the module has no build-id.
MPX_API FunctionId identify(ErasedFunction function, Trampoline trampoline);
/// The inverse, in any process of the same build. A build that does not hold the module is refused with a ProtocolError
/// that names both build-ids.
MPX_API std::pair<ErasedFunction, Trampoline> resolve(const FunctionId& id);
/// The build-id of the module that holds `address` (the main executable for a function defined in it).
MPX_API std::string build_id_of(const void* address);
/// The build-id of this process's main executable: what a process started from this program runs.
MPX_API std::string main_build_id();

/// A function with its arguments already encoded: what a Process or a Pool task sends.
struct BoundCall {
  /// The target, type-erased.
  ErasedFunction function = nullptr;
  /// Decodes `args`, calls `function` and encodes its result.
  Trampoline trampoline = nullptr;
  std::string args;  ///< msgpack array of the parameters

  /// The portable id of (function, trampoline); throws ProtocolError if the module has no build-id.
  FunctionId id() const { return identify(function, trampoline); }
  /// Runs the call in this process and returns the encoded result.
  std::string invoke() const {
    std::string result;
    trampoline(function, args, result);
    return result;
  }
};

namespace detail {

template <class F>
concept PlainFunctionLike = requires(F f) {
  { +f };
} && std::is_pointer_v<decltype(+std::declval<F>())> &&
                            std::is_function_v<std::remove_pointer_t<decltype(+std::declval<F>())>>;

template <class R, class... P>
void trampoline(ErasedFunction function, std::string_view args, std::string& result) {
  auto typed = reinterpret_cast<R (*)(P...)>(function);
  auto params = decode<std::tuple<std::decay_t<P>...>>(args);
  if constexpr (std::is_void_v<R>) {
    std::apply(typed, params);
    result = encode(Object{});
  } else {
    result = encode(std::apply(typed, params));
  }
}

// The trampoline of a function type, picked by overload on a null pointer of that type.
template <class R, class... P>
Trampoline trampoline_for(R (*)(P...)) {
  static_assert(std::is_void_v<R> || Serializable<R>, "mpx: the function's return type is not serializable");
  static_assert((Serializable<std::decay_t<P>> && ...), "mpx: a parameter type of the function is not serializable");
  return &trampoline<R, P...>;
}

template <class R, class... P, class... A>
BoundCall bind_plain(R (*function)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "mpx: wrong number of arguments for the target function");
  static_assert((std::is_constructible_v<std::decay_t<P>, A&&> && ...),
                "mpx: an argument cannot be converted to the target function's parameter type");
  static_assert((Serializable<std::decay_t<P>> && ...),
                "mpx: a parameter type of the target is not serializable. Use scalars, strings, containers, "
                "optionals, tuples, mpx::Object, or add MSGPACK_DEFINE(members...) to your type");
  static_assert(std::is_void_v<R> || Serializable<R>,
                "mpx: the target's return type is not serializable. Return void, a scalar, a string, a container, "
                "or a type with MSGPACK_DEFINE(members...)");
  BoundCall call;
  call.function = reinterpret_cast<ErasedFunction>(function);
  call.trampoline = &trampoline<R, P...>;
  call.args = encode(std::tuple<std::decay_t<P>...>(std::forward<A>(args)...));
  return call;
}

}  // namespace detail

/// Binds a plain function or a captureless lambda to its arguments, encoding them now so that a serialization
/// error is raised here, at the caller.
template <class F, class... A>
BoundCall bind(F&& function, A&&... args) {
  static_assert(detail::PlainFunctionLike<std::remove_cvref_t<F>>,
                "mpx: a target must be a plain function or a captureless lambda (its identity is its address). "
                "A lambda that captures state can run only under the fork start method: pass it as "
                "mpx::Process(mpx::closure, lambda)");
  return detail::bind_plain(+function, std::forward<A>(args)...);
}

/// Gives a function a name, for config files and foreign clients, which cannot name a function by its address.
/// Registering the same name twice replaces the first (a later registration wins, as with a dict).
MPX_API void register_actor_call(std::string name, ErasedFunction function, Trampoline trampoline);

/// Registers a plain function or captureless lambda under `name` (see register_actor_call), so that topology files,
/// bind_registered and foreign clients can start it by name. Python has no equivalent: its targets travel by pickle.
template <class F>
void register_actor(std::string name, F&& function) {
  static_assert(detail::PlainFunctionLike<std::remove_cvref_t<F>>,
                "mpx::register_actor: the function must be a plain function or a captureless lambda");
  auto typed = +function;
  using Typed = decltype(typed);
  register_actor_call(std::move(name), reinterpret_cast<ErasedFunction>(typed),
                      detail::trampoline_for(static_cast<Typed>(nullptr)));
}

/// True if a function was registered under `name`.
MPX_API bool is_registered_actor(std::string_view name);
/// The names registered so far, sorted.
MPX_API std::vector<std::string> registered_actors();
/// Binds a registered function to arguments given as a list (Object::list({...})), encoded as its parameters. An
/// unknown name throws std::invalid_argument naming it; arguments of the wrong shape fail in the callee, where they are
/// decoded, as mpx::SerializationError.
MPX_API BoundCall bind_registered(std::string_view name, const Object& args = Object::list({}));

}  // namespace mpx
