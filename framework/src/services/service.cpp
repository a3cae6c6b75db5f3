#include "services/service.hpp"

#include "trace/bus.hpp"

namespace mpx::services {

void Host::reply_error(const Peer& peer, const wire::Header& request, wire::ErrorCode code, std::string_view message) {
  auto error = wire::make_error(request, code, message);
  reply(peer, error);
}

UnknownObject::UnknownObject(std::string_view type, std::uint64_t id)
    : ProtocolError("mpx: no " + std::string(type) + " with id " + std::to_string(id)) {}

void expect_frames(const wire::Envelope& request, std::size_t frames) {
  if (request.body.size() != frames) {
    throw ProtocolError("mpx: '" + std::string(wire::kind_name(request.header.kind)) + "' takes " +
                        std::to_string(frames) + " body frame" + (frames == 1 ? "" : "s"));
  }
}

void expect_nil(const wire::Envelope& request) {
  if (request.body.size() != 1 || !body_is_nil(request)) {
    throw ProtocolError("mpx: '" + std::string(wire::kind_name(request.header.kind)) + "' takes a nil body");
  }
}

bool body_is_nil(const wire::Envelope& request) { return request.body_as<Object>().is_none(); }

std::string metrics_name(std::string_view type, std::uint64_t id) {
  std::string given = trace::given_object_name(id);
  if (given.empty()) return std::to_string(id);
  // A topology's joinable_queue is a queue here too: whatever type it was given, only the name after it is shown.
  const auto colon = given.find(':');
  if (colon != std::string::npos && std::string_view(given).substr(0, colon).ends_with(type)) given.erase(0, colon + 1);
  return given;
}

void Service::ok(const Peer& peer, const wire::Header& request, std::string body) {
  auto reply = wire::make_reply(request, wire::Kind::ok, std::move(body));
  coordinator_.reply(peer, reply);
}

void Service::ok(const Peer& peer, const wire::Header& request) { ok(peer, request, encode(Object{})); }

}  // namespace mpx::services
