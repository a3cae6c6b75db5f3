#include "services/services.hpp"

namespace mpx::services {

void install_all(runtime::Coordinator& coordinator) {
  install_queues(coordinator);
  install_sync(coordinator);
  install_pipes(coordinator);
  install_pool(coordinator);
}

}  // namespace mpx::services
