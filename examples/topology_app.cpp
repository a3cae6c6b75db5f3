// An application with its own `task` actors that offers mpx-run's command line through mpx::run_main:
//   build/examples/topology_app examples/topologies/app_tasks.toml
//   build/examples/topology_app --check examples/topologies/app_tasks.toml
//   build/examples/topology_app examples/topologies/pool_tasks.toml      (task actors sharing a topology pool)
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

// pool_tasks.toml: each mapper replica squares its own block of numbers on the shared pool "squares" (whose
// workers run this program, so `square` is theirs too) and reports the block's sum; the reporter adds them up.
long square(long x) { return x * x; }

void mapper() {
  const auto& me = mpx::this_actor();
  const long block = me.args()["block"].as_int();
  std::vector<long> xs(static_cast<std::size_t>(block));
  for (long i = 0; i < block; ++i) xs[static_cast<std::size_t>(i)] = me.replica() * block + i;
  long sum = 0;
  for (long y : me.pool("squares").map(square, xs)) sum += y;
  me.queue<long>("sums").put(sum);
}

void reporter() {
  const auto& me = mpx::this_actor();
  const long mappers = me.args()["mappers"].as_int(), block = me.args()["block"].as_int();
  auto sums = me.queue<long>("sums");
  long total = 0;
  for (long i = 0; i < mappers; ++i) total += sums.get();
  const long n = mappers * block;  // sum of squares 0 .. n-1
  const long expected = (n - 1) * n * (2 * n - 1) / 6;
  std::printf("reporter: sum of squares 0..%ld from %ld mappers on one pool = %ld (%s)\n", n - 1, mappers, total,
              total == expected ? "correct" : "WRONG");
}

}  // namespace

int main(int argc, char** argv) {
  mpx::register_actor("greeter", greeter);
  mpx::register_actor("printer", printer);
  mpx::register_actor("mapper", mapper);
  mpx::register_actor("reporter", reporter);
  mpx::init(argc, argv);
  return mpx::run_main(argc, argv);
}
