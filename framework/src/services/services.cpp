#include "services/services.hpp"

namespace mpx::services {

void install_all(runtime::Coordinator& coordinator) {
  install_queues(coordinator);
  install_sync(coordinator);
  install_pipes(coordinator);
  install_trace(coordinator);
  install_shm(coordinator);
}

void expect_nil(const wire::Envelope& req) {
  if (req.body.size() != 1 || !req.body_as<Object>().is_none()) {
    throw ProtocolError("mpx: '" + std::string(wire::kind_name(req.header.kind)) + "' takes a nil body");
  }
}

}  // namespace mpx::services
