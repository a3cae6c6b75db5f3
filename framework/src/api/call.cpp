#include "api/call.hpp"

#include <mpx/handle.hpp>

#include <algorithm>
#include <cmath>

#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"

namespace mpx {

std::int64_t wait_ms(bool block, const Timeout& timeout) {
  if (!block) return 0;
  if (!timeout) return -1;
  // Zero, negative (and NaN) do not wait, everywhere in the API, as in Python. A wait beyond 30 years is one of 30
  // years, so that adding a grace period to it cannot overflow.
  constexpr double longest_ms = 1e12;
  const double ms = std::ceil(timeout->count() * 1000.0);
  if (!(ms > 0)) return 0;
  return static_cast<std::int64_t>(std::min(ms, longest_ms));
}

}  // namespace mpx

namespace mpx::detail {

namespace {
// Beyond the coordinator's own deadline, how long a caller waits before deciding the coordinator is gone.
constexpr std::int64_t grace_ms = 30000;
}  // namespace

const std::string& coordinator_endpoint() {
  runtime::require_initialized();
  return runtime::state().session.coordinator_endpoint;
}

void raise_error(const wire::Envelope& reply) {
  auto [code, message] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
  switch (static_cast<wire::ErrorCode>(code)) {
    case wire::ErrorCode::timeout: throw TimeoutError(message);
    case wire::ErrorCode::full: throw Full(message);
    case wire::ErrorCode::empty: throw Empty(message);
    case wire::ErrorCode::closed:
    case wire::ErrorCode::value:
    case wire::ErrorCode::not_owner: throw ValueError(message);
    case wire::ErrorCode::broken: throw BrokenBarrierError(message);
    case wire::ErrorCode::eof: throw EOFError(message);
    case wire::ErrorCode::unauthenticated: throw AuthenticationError(message);
    case wire::ErrorCode::node_lost: throw NodeLost(message);
    default: throw ProtocolError(message);
  }
}

wire::Envelope call(wire::Envelope request, std::int64_t wait_ms) {
  auto& channel = runtime::Channel::current();
  const auto local = wait_ms < 0 ? std::optional<std::chrono::milliseconds>()
                                 : std::optional<std::chrono::milliseconds>(wait_ms + grace_ms);
  auto reply = channel.request(std::move(request), local);
  if (reply.header.kind == wire::Kind::error) raise_error(reply);
  return reply;
}

void post(wire::Envelope message) { runtime::Channel::current().post(std::move(message)); }

bool posts_are_ordered() { return runtime::Channel::sole_in_process(); }

}  // namespace mpx::detail
