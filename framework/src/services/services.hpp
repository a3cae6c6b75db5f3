// The services: protocol state machines inside the coordinator. Each owns its objects' state and replies through
// the coordinator; none knows about sockets beyond "reply to this peer" (service.hpp: their one shape).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/coordinator.hpp"
#include "services/service.hpp"

namespace mpx::services {

// Makes every service on a coordinator before it starts, through a CoordinatorHost that lives as long as it.
void install_all(runtime::Coordinator& coordinator);


}  // namespace mpx::services
