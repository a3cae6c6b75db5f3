#include "services/services.hpp"

namespace mpx::services {

void install_all(runtime::Coordinator& coordinator) { install_queues(coordinator); }

}  // namespace mpx::services
