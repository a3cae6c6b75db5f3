// Message kinds and error codes. The kinds are listed once, in kinds.inc; framework/PROTOCOL.md documents each one
// with its body and its reply, and tests/protocol checks the two agree.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mpx::wire {

// The msgpack value a kind's first body frame holds: nil, an array of min..max elements, either, or anything.
struct Arity {
  bool nil = false;
  std::int8_t min = -1;  // -1: no array is accepted
  std::int8_t max = -1;
  bool any = false;
};

namespace body {
inline constexpr Arity nil{true};
inline constexpr Arity any{false, -1, -1, true};
consteval Arity array(std::int8_t n) { return Arity{false, n, n}; }
consteval Arity array(std::int8_t min, std::int8_t max) { return Arity{false, min, max}; }
consteval Arity nil_or(std::int8_t n) { return Arity{true, n, n}; }
}  // namespace body

enum class Kind : std::uint16_t {
#define MPX_KIND(name, id, arity) name = id,
#include "wire/kinds.inc"
#undef MPX_KIND
};

struct KindInfo {
  Kind kind;
  std::string_view name;
  Arity arity;
};

// Every kind this build knows, in id order; anything else is malformed.
inline constexpr KindInfo known_kinds[] = {
#define MPX_KIND(name, id, arity) {Kind::name, #name, body::arity},
#include "wire/kinds.inc"
#undef MPX_KIND
};

namespace kind_table {
inline constexpr std::uint16_t max_kind_id = [] {
  std::uint16_t top = 0;
  for (const auto& k : known_kinds) top = std::max(top, static_cast<std::uint16_t>(k.kind));
  return top;
}();

// index_of_kind[id] is 1 + the kind's place in known_kinds, or 0 for an unknown id: a lookup costs one load.
inline constexpr auto index_of_kind = [] {
  std::array<std::uint8_t, max_kind_id + 1> index{};
  static_assert(std::size(known_kinds) < 255);
  for (std::size_t i = 0; i < std::size(known_kinds); ++i) {
    index[static_cast<std::uint16_t>(known_kinds[i].kind)] = static_cast<std::uint8_t>(i + 1);
  }
  return index;
}();

inline constexpr bool ids_ascend_and_are_unique = [] {
  for (std::size_t i = 1; i < std::size(known_kinds); ++i) {
    if (known_kinds[i - 1].kind >= known_kinds[i].kind) return false;
  }
  return true;
}();
static_assert(ids_ascend_and_are_unique, "kinds.inc lists each id once, in ascending order");
}  // namespace kind_table

constexpr const KindInfo* find_kind(std::uint16_t id) noexcept {
  if (id > kind_table::max_kind_id || kind_table::index_of_kind[id] == 0) return nullptr;
  return &known_kinds[kind_table::index_of_kind[id] - 1];
}

constexpr bool is_known(std::uint16_t kind) noexcept { return find_kind(kind) != nullptr; }

constexpr std::string_view kind_name(Kind kind) noexcept {
  const KindInfo* info = find_kind(static_cast<std::uint16_t>(kind));
  return info ? info->name : "unknown";
}

constexpr std::optional<Kind> kind_named(std::string_view name) noexcept {
  for (const auto& k : known_kinds) {
    if (k.name == name) return k.kind;
  }
  return std::nullopt;
}

// The nodes' kinds (140-149, kinds.inc): runtime/nodes.cpp serves them all, inside the coordinator.
constexpr bool is_node_kind(Kind kind) noexcept {
  const auto number = static_cast<std::uint16_t>(kind);
  return number >= static_cast<std::uint16_t>(Kind::node_hello) &&
         number <= static_cast<std::uint16_t>(Kind::node_shutdown);
}

enum class ErrorCode : std::uint16_t {
  malformed = 1,       // the body did not match the kind
  unknown_object = 2,  // no object with that id (or an object of another type)
  unsupported = 3,     // a kind the receiver does not serve
  timeout = 4,         // a blocking request's deadline passed
  internal = 5,
  full = 6,            // mpx::Full
  empty = 7,           // mpx::Empty
  closed = 8,          // the object was closed (Python: ValueError)
  value = 9,           // a misuse Python reports as ValueError (task_done too many times, release past a bound)
  not_owner = 10,      // releasing what this process does not hold
  broken = 11,         // mpx::BrokenBarrierError
  eof = 12,            // mpx::EOFError
  file_exists = 120,     // shared memory: mpx::FileExistsError
  file_not_found = 121,  // shared memory: mpx::FileNotFoundError
  // manager (130-139)
  key = 130,            // mpx::KeyError
  index = 131,          // mpx::IndexError
  attribute = 132,      // mpx::AttributeError
  type = 133,           // mpx::TypeError
  unauthenticated = 134,  // mpx::AuthenticationError: the peer has not (or not rightly) answered the challenge
  node_lost = 140,        // mpx::NodeLost: the node was declared lost
};

}  // namespace mpx::wire
