// mpx/detail/msgpack_codec.hpp — the bounded msgpack decoding behind mpx::decode and the fast paths that
// decode element by element. Internal: the public API is encode/decode in mpx/object.hpp.
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

#include <mpx/detail/export.hpp>

namespace mpx::detail {

template <class T>
struct is_tuple : std::false_type {};
template <class... T>
struct is_tuple<std::tuple<T...>> : std::true_type {};

// Every decode in mpx goes through here: bounded by mpx's unpack limits, trailing bytes rejected.
// Throws mpx::ProtocolError on malformed or oversized input.
MPX_API msgpack::object_handle unpack_bounded(const char* data, std::size_t size);

// The element count of an encoded msgpack array; ProtocolError if it is not one or its length exceeds the limits.
MPX_API std::uint32_t array_length(std::string_view bytes);

// Decodes the elements of an encoded msgpack array one at a time, each into one reused zone, and passes each to
// `each` with its index (the element is valid during the call only). A large array (a map's chunk of calls, its
// results) so needs no object tree of its own size: it stays in cache and touches no fresh pages. Bounded like
// every decode; mpx::ProtocolError for anything malformed, trailing bytes included. An exception thrown by `each`
// stops the decode and reaches the caller unchanged.
using ElementFn = void (*)(void* context, std::uint32_t index, const msgpack::object& element);
MPX_API void each_element(std::string_view bytes, ElementFn each, void* context);

template <class F>
void for_each_element(std::string_view bytes, F&& each) {
  using Fn = std::remove_reference_t<F>;
  each_element(
      bytes, [](void* context, std::uint32_t index, const msgpack::object& element) {
        (*static_cast<Fn*>(context))(index, element);
      },
      const_cast<void*>(static_cast<const void*>(&each)));
}

// What encode() packs into: the string it returns. msgpack's sbuffer would start with an 8 KiB chunk (a large-bin
// malloc for every small value) and then be copied into the string.
struct StringWriter {
  std::string& out;
  void write(const char* data, std::size_t size) { out.append(data, size); }
};

}  // namespace mpx::detail
