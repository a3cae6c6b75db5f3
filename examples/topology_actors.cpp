// The actor programs of the example topologies (examples/topologies/*.toml). mpx-run starts this program once per
// actor replica, with the role as its first argument; mpx::init joins the topology's session, and
// mpx::this_actor() gives the role its name, replica index, args and shared objects.
//
//   pipeline.toml    producer -> jobs (bounded queue) -> worker x4 -> results -> sink (prints throughput)
//   fan_out_in.toml  worker x4 compute partial sums, meet at a Barrier with the collector, which adds them up
//   supervised.toml  a steady service next to a crashy permanent worker that is restarted until it exceeds
//                    max_restarts and the supervisor escalates
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <unistd.h>

#include <mpx/mpx.hpp>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t stop_item = -1;

std::int64_t arg(const char* key, std::int64_t fallback) {
  const auto& args = mpx::this_actor().args();
  return args.contains(key) ? args[key].as_int() : fallback;
}

// Puts `items` numbers on jobs, then one stop marker per worker.
int producer() {
  auto jobs = mpx::this_actor().queue<std::int64_t>("jobs");
  const auto items = arg("items", 10000), workers = arg("workers", 4);
  for (std::int64_t i = 0; i < items; ++i) jobs.put(i);
  for (std::int64_t w = 0; w < workers; ++w) jobs.put(stop_item);
  std::printf("producer: put %lld items on a queue of maxsize %zu\n", static_cast<long long>(items), jobs.maxsize());
  return 0;
}

// Squares what it gets until the stop marker, which it passes on to the sink.
int worker() {
  auto jobs = mpx::this_actor().queue<std::int64_t>("jobs");
  auto results = mpx::this_actor().queue<std::int64_t>("results");
  std::int64_t done = 0;
  for (;;) {
    const auto x = jobs.get();
    if (x == stop_item) break;
    results.put(x * x);
    ++done;
  }
  results.put(stop_item);
  std::printf("worker %d: %lld items\n", mpx::this_actor().replica(), static_cast<long long>(done));
  return 0;
}

// Counts results until every worker has sent its stop marker, then prints the throughput.
int sink() {
  auto results = mpx::this_actor().queue<std::int64_t>("results");
  const auto workers = arg("workers", 4), expected = arg("items", 10000);
  std::int64_t count = 0, stops = 0;
  long double sum = 0;
  Clock::time_point first{};
  while (stops < workers) {
    const auto x = results.get();
    if (count == 0 && stops == 0) first = Clock::now();
    if (x == stop_item) {
      ++stops;
      continue;
    }
    ++count;
    sum += static_cast<long double>(x);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - first).count();
  const long double n = static_cast<long double>(expected);
  const long double want = (n - 1) * n * (2 * n - 1) / 6;  // sum of squares 0..n-1
  std::printf("sink: %lld items through %lld workers in %.3f s: %.0f items/s; sum of squares %s\n",
              static_cast<long long>(count), static_cast<long long>(workers), seconds, seconds > 0 ? count / seconds : 0.0,
              (count == expected && sum == want) ? "correct" : "WRONG");
  return count == expected && sum == want ? 0 : 1;
}

// Fan-out/fan-in: each replica sums the squares of its slice, puts the partial sum, and waits at the barrier.
int fan_worker() {
  const auto& me = mpx::this_actor();
  auto partials = me.queue<std::int64_t>("partials");
  auto done = me.barrier("done");
  const std::int64_t n = arg("n", 1000000), parts = me.replicas();
  const auto lo = n * me.replica() / parts, hi = n * (me.replica() + 1) / parts;
  std::int64_t partial = 0;
  for (auto i = lo; i < hi; ++i) partial += i % 1000;
  partials.put(partial);
  const auto index = done.wait();
  std::printf("fan_worker %d: [%lld, %lld) -> %lld, arrived %zu of %zu\n", me.replica(), static_cast<long long>(lo),
              static_cast<long long>(hi), static_cast<long long>(partial), index + 1, done.parties());
  return 0;
}

// Waits at the barrier with the workers: once it opens, every partial sum is on the queue.
int collector() {
  const auto& me = mpx::this_actor();
  auto partials = me.queue<std::int64_t>("partials");
  auto done = me.barrier("done");
  (void)done.wait();
  const auto parts = arg("parts", 4), n = arg("n", 1000000);
  std::int64_t total = 0;
  for (std::int64_t i = 0; i < parts; ++i) total += partials.get();
  std::int64_t want = 0;
  for (std::int64_t i = 0; i < n; ++i) want += i % 1000;
  std::printf("collector: %lld partial sums after the barrier: total %lld (%s)\n", static_cast<long long>(parts),
              static_cast<long long>(total), total == want ? "correct" : "WRONG");
  return total == want ? 0 : 1;
}

// A steady service: answers nothing, runs until it is stopped.
int service() {
  std::printf("service: up (pid %d)\n", ::getpid());
  std::fflush(stdout);
  mpx::this_actor().event("never").wait();
  return 0;
}

// Works a little, then crashes: a permanent actor that the supervisor restarts until it gives up.
int crashy() {
  const auto after = arg("crash_after_ms", 200);
  std::printf("crashy: up (pid %d), crashing in %lld ms\n", ::getpid(), static_cast<long long>(after));
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::milliseconds(after));  // the "work" before the crash
  std::fprintf(stderr, "crashy: simulated crash (exit 42)\n");
  return 42;
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  if (!mpx::is_actor() || argc < 2) {
    std::fprintf(stderr, "usage: started by mpx-run as an actor: topology_actors ROLE (see examples/topologies)\n");
    return 2;
  }
  const std::string role = argv[1];
  int code = 2;
  if (role == "producer") code = producer();
  else if (role == "worker") code = worker();
  else if (role == "sink") code = sink();
  else if (role == "fan_worker") code = fan_worker();
  else if (role == "collector") code = collector();
  else if (role == "service") code = service();
  else if (role == "crashy") code = crashy();
  else std::fprintf(stderr, "topology_actors: unknown role '%s'\n", role.c_str());
  std::fflush(stdout);
  return code;
}
