// mpx::ProcessPoolExecutor: a Pool with Python's concurrent.futures surface.
#include <mpx/executor.hpp>

#include <iostream>

namespace mpx {

namespace {
PoolOptions pool_options(ExecutorOptions o) {
  if (o.max_workers && *o.max_workers <= 0) throw ValueError("mpx: max_workers must be greater than 0");
  PoolOptions p;
  p.processes = o.max_workers;
  p.initializer = std::move(o.initializer);
  p.maxtasksperchild = o.max_tasks_per_child;
  p.max_retries = o.max_retries;
  p.method = o.method;
  p.broken_on_worker_death = o.broken_on_worker_death;
  p.placement = o.placement;
  p.nodes = std::move(o.nodes);
  return p;
}
}  // namespace

ProcessPoolExecutor::ProcessPoolExecutor(ExecutorOptions options) : pool_(pool_options(std::move(options))) {}

ProcessPoolExecutor::~ProcessPoolExecutor() {
  try {
    shutdown(true);
  } catch (const std::exception& e) {
    std::cerr << "mpx: shutting down a ProcessPoolExecutor: " << e.what() << "\n";
  }
}

void ProcessPoolExecutor::check_open() {
  std::lock_guard lock(mutex_);
  if (shutdown_) throw Error("mpx: cannot schedule new futures after shutdown");
}

void ProcessPoolExecutor::track(const std::shared_ptr<detail::ResultCore>& core) {
  std::lock_guard lock(mutex_);
  // Forget finished futures now and then, so the list stays as long as what is outstanding.
  if (submitted_.size() >= 1024 && (submitted_.size() & (submitted_.size() - 1)) == 0) {
    std::erase_if(submitted_, [](const auto& w) {
      auto c = w.lock();
      return !c || detail::result_ready(*c);
    });
  }
  submitted_.push_back(core);
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  std::vector<std::weak_ptr<detail::ResultCore>> outstanding;
  {
    std::lock_guard lock(mutex_);
    if (!shutdown_) {
      shutdown_ = true;
      if (cancel_futures) outstanding.swap(submitted_);
    }
  }
  for (auto& w : outstanding) {
    if (auto c = w.lock(); c && !detail::result_ready(*c)) (void)detail::pool_cancel(*pool_.core(), *c);
  }
  pool_.close();
  if (wait) pool_.join();
}

}  // namespace mpx
