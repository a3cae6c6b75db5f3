// An application with its own `task` actors that offers mpx-run's command line through mpx::run_main:
//   build/examples/topology_app examples/topologies/app_tasks.toml
//   build/examples/topology_app --check examples/topologies/app_tasks.toml
// A task actor is this program started again: its functions are registered before mpx::init, which runs the task
// in that copy and exits there.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <mpx/mpx.hpp>

namespace {

void greeter() {
  const auto& me = mpx::this_actor();
  me.queue<std::string>("greetings").put("hello from " + me.name() + " replica " + std::to_string(me.replica()) +
                                         " of " + std::to_string(me.replicas()));
}

void printer() {
  const auto& me = mpx::this_actor();
  auto greetings = me.queue<std::string>("greetings");
  std::vector<std::string> lines;
  for (std::int64_t i = 0; i < me.args()["count"].as_int(); ++i) lines.push_back(greetings.get());
  std::sort(lines.begin(), lines.end());  // the greeters run in parallel: print in a stable order
  for (const auto& line : lines) std::printf("printer: %s\n", line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  mpx::register_actor("greeter", greeter);
  mpx::register_actor("printer", printer);
  mpx::init(argc, argv);
  return mpx::run_main(argc, argv);
}
