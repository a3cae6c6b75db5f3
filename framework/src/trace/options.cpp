// The MPX_TRACE syntax (also the body of trace_enable): comma-separated key:value items; and compiled_in(), which
// the trace service asks before it starts the bus.
#include <charconv>

#include <mpx/errors.hpp>
#include <mpx/trace_options.hpp>

#include "trace/bus.hpp"
#include "wire/kinds.hpp"

namespace mpx::trace {

namespace {

constexpr std::size_t max_body = 1u << 20;
constexpr std::size_t max_queue = 1u << 24;

std::size_t number(std::string_view key, std::string_view value, std::size_t low, std::size_t high) {
  std::size_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < low || n > high) {
    throw ValueError("mpx: trace option " + std::string(key) + ":" + std::string(value) + " is not a number in " +
                     std::to_string(low) + ".." + std::to_string(high));
  }
  return n;
}

}  // namespace

bool compiled_in() noexcept {
#if MPX_TRACING
  return true;
#else
  return false;
#endif
}

std::optional<std::uint16_t> kind_number(std::string_view name) noexcept {
  const auto kind = wire::kind_named(name);
  if (!kind) return std::nullopt;
  return static_cast<std::uint16_t>(*kind);
}

Options Options::parse(std::string_view spec) {
  Options o;
  std::size_t start = 0;
  while (start <= spec.size()) {
    auto comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    const auto item = spec.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    const auto colon = item.find(':');
    if (colon == std::string_view::npos) {
      throw ValueError("mpx: trace option '" + std::string(item) + "' is not key:value (keys: file, pub, body, queue, hwm, kind)");
    }
    const auto key = item.substr(0, colon);
    const auto value = item.substr(colon + 1);
    if (key == "file") {
      if (value.empty()) throw ValueError("mpx: trace option file: needs a path");
      o.file = std::string(value);
    } else if (key == "pub") {
      if (value.empty()) throw ValueError("mpx: trace option pub: needs an endpoint");
      o.pub = std::string(value);
    } else if (key == "body") {
      o.body = number(key, value, 0, max_body);
    } else if (key == "queue") {
      o.queue = number(key, value, 1, max_queue);
    } else if (key == "hwm") {
      o.hwm = static_cast<int>(number(key, value, 1, 1u << 24));
    } else if (key == "kind") {
      if (!kind_number(value)) {
        throw ValueError("mpx: trace option kind:" + std::string(value) + " names no message kind (see PROTOCOL.md)");
      }
      o.kinds.emplace_back(value);
    } else {
      throw ValueError("mpx: unknown trace option '" + std::string(key) + "' (keys: file, pub, body, queue, hwm, kind)");
    }
  }
  if (o.file.empty() && o.pub.empty()) {
    throw ValueError("mpx: trace options '" + std::string(spec) + "' name no sink (file:PATH or pub:ENDPOINT)");
  }
  return o;
}

std::string Options::to_string() const {
  std::string s;
  auto add = [&s](std::string_view key, const std::string& value) {
    if (!s.empty()) s += ',';
    s += key;
    s += ':';
    s += value;
  };
  if (!file.empty()) add("file", file);
  if (!pub.empty()) add("pub", pub);
  add("body", std::to_string(body));
  add("queue", std::to_string(queue));
  add("hwm", std::to_string(hwm));
  for (const auto& k : kinds) add("kind", k);
  return s;
}

}  // namespace mpx::trace
