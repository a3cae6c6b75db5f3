// Prints every kind of wire/kinds.hpp as "id name arity", one per line, for check_kinds.py to compare with
// framework/PROTOCOL.md. Arity is written as PROTOCOL.md's body column shows it: nil, N, N..M, nil or N, any.
#include <cstdio>
#include <string>

#include "wire/kinds.hpp"

namespace {
std::string arity_text(const mpx::wire::Arity& a) {
  if (a.any) return "any";
  std::string array;
  if (a.min >= 0) array = a.min == a.max ? std::to_string(a.min) : std::to_string(a.min) + ".." + std::to_string(a.max);
  if (!a.nil) return array;
  return array.empty() ? "nil" : "nil or " + array;
}
}  // namespace

int main() {
  for (const auto& k : mpx::wire::known_kinds) {
    std::printf("%u %.*s %s\n", static_cast<unsigned>(k.kind), static_cast<int>(k.name.size()), k.name.data(),
                arity_text(k.arity).c_str());
  }
}
