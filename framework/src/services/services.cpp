#include "services/services.hpp"

namespace mpx::services {

void install_all(runtime::Coordinator& coordinator) {
  struct Installed {
    explicit Installed(runtime::Coordinator& c) : host(c) {}
    CoordinatorHost host;
    std::vector<std::unique_ptr<Service>> services;
  };
  // Lives as long as the coordinator's handlers, which is the rest of the process.
  auto* installed = new Installed(coordinator);
  for (auto install : {install_queues, install_sync, install_pipes, install_trace, install_shm, install_pool}) {
    installed->services.push_back(install(installed->host));
  }
}

}  // namespace mpx::services
