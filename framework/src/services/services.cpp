#include "services/services.hpp"

#include "trace/bus.hpp"

namespace mpx::services {

void install_all(runtime::Coordinator& coordinator) {
  install_queues(coordinator);
  install_sync(coordinator);
  install_pipes(coordinator);
  install_trace(coordinator);
  install_shm(coordinator);
  install_pool(coordinator);
}

void expect_nil(const wire::Envelope& req) {
  if (req.body.size() != 1 || !req.body_as<Object>().is_none()) {
    throw ProtocolError("mpx: '" + std::string(wire::kind_name(req.header.kind)) + "' takes a nil body");
  }
}

std::string metrics_name(std::string_view type, std::uint64_t id) {
  std::string given = trace::given_object_name(id);
  if (given.empty()) return std::to_string(id);
  // A topology's joinable_queue is a queue here too: whatever type it was given, only the name after it is shown.
  const auto colon = given.find(':');
  if (colon != std::string::npos && std::string_view(given).substr(0, colon).ends_with(type)) given.erase(0, colon + 1);
  return given;
}

}  // namespace mpx::services
