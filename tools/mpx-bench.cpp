// mpx-bench: mpx measured side by side with Python's multiprocessing and a raw C floor, in the same run.
//
// Every workload is measured three ways on this machine, now: through mpx, through a Python snippet run as a script
// file, and through the cheapest raw C that does the same job. The ratio python/mpx is checked against a target, and
// mpx's share of the raw floor against another; a workload may have either target or both (a Python number with no
// Python target is shown for reference). A new workload is one more Workload{...} in workloads(); the measuring
// shapes that several workloads share (a child streaming to this process, a round trip, a batch of tasks) are written
// once, for mpx and for Python, under "shared shapes" below.
#include <mpx/mpx.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <memory>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <malloc.h>
#include <new>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <zmq.hpp>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns_hosts.hpp"

extern char** environ;

namespace {

// The raw spawn floor re-executes this binary with this variable set; it exits before main (and so before
// mpx::init), which measures exec + dynamic loading of the very binary mpx's spawn runs, and nothing more.
constexpr const char* raw_exec_variable = "MPX_BENCH_RAW_EXEC";
[[maybe_unused]] const bool raw_exec_child = [] {
  if (std::getenv(raw_exec_variable) != nullptr) _exit(0);
  return false;
}();

using Clock = std::chrono::steady_clock;

// The mean is the headline; the median (--median) resists a machine that is busy with something else.
bool use_median = false;

double median_of(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  const std::size_t mid = samples.size() / 2;
  return samples.size() % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
}

double mean_or_median(std::vector<double> samples) {
  if (use_median) return median_of(std::move(samples));
  double sum = 0;
  for (double x : samples) sum += x;
  return sum / static_cast<double>(samples.size());
}

// One untimed call to warm up (first forkserver connection, coordinator start, page faults), then `n` timed calls.
template <class F>
double measure_ms(int n, F&& once) {
  once();
  std::vector<double> times;
  times.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    once();
    times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return mean_or_median(std::move(times));
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Every field has a default, so that a workload names only what it has (designated initializers, in this order).
struct Workload {
  std::string name{};  // "group/variant"; --only matches the whole name or either part
  std::string unit{};  // of the mpx, python and raw numbers; a throughput's ends in "/s"
  double target = 0;   // python/mpx must reach at least this; 0: no Python target (Python, if measured, is a reference)
  std::optional<double> raw_target{};  // the fraction of the raw floor's performance mpx must reach, if any
  int iterations = 0;                  // timed mpx and raw calls
  int python_iterations = 0;
  std::function<double(int n)> mpx{};
  // The body of a Python function of `n` that returns its statistic in `unit`. It may call _measure_ms(n, once),
  // which warms up once like measure_ms above; `os`, `time` and `multiprocessing` are imported. Empty: no Python side.
  std::string python{};
  std::function<double(int n)> raw{};  // empty when there is no meaningful floor
  std::string raw_label{};             // what the raw column measured, for the legend
  std::string note{};                  // printed under the table when the workload ran: what exactly is compared

  // Throughput (items/s) rather than latency (ms, us) or memory (bytes/item).
  bool higher_is_better() const { return unit.ends_with("/s"); }
};

// ---- shared shapes: each measured the same way in mpx and in Python ----

std::string indent(const std::string& body) {
  std::istringstream in(body);
  std::string line, out;
  while (std::getline(in, line)) out += "    " + line + "\n";
  return out;
}

// A child process runs send(end, n) and this process takes n items with take(): items per second from the child's
// start to the last take. The first 1000 items are sent and taken here, untimed (coordinator, channel, allocator).
template <class Send, class End, class Take>
double child_to_parent_rate(int n, Send send, const End& end, Take take) {
  send(end, 1000);
  for (int i = 0; i < 1000; ++i) take();
  const auto t0 = Clock::now();
  mpx::Process p(send, end, n);
  p.start();
  for (int i = 0; i < n; ++i) take();
  const double seconds = seconds_since(t0);
  p.join();
  return n / seconds;
}

// Python's child_to_parent_rate: after `setup`, a Process(target=`target_args`) started with the clock, and `take`
// n times in this process.
std::string python_child_to_parent_rate(const std::string& setup, const std::string& target_args,
                                        const std::string& take) {
  return setup +
         "p = multiprocessing.Process(target=" + target_args + ")\n"
         "t0 = time.perf_counter()\n"
         "p.start()\n"
         "for _ in range(n):\n"
         "    " + take + "\n"
         "seconds = time.perf_counter() - t0\n"
         "p.join()\n"
         "return n / seconds\n";
}

constexpr int round_trip_warmup = 1000;

// A short call timed one call at a time after round_trip_warmup untimed ones: microseconds per call.
template <class F>
double round_trip_us(int n, F&& once) {
  for (int k = 0; k < round_trip_warmup; ++k) once();
  return measure_ms(n, once) * 1000.0;
}

// Python's round_trip_us, timed as one loop: a per-call perf_counter() would cost Python about as much as a fast
// call. `body` (which may use i) runs 1000 times untimed, then n times; `teardown` runs after the clock stopped.
std::string python_loop_us(const std::string& setup, const std::string& body, const std::string& teardown = "") {
  return setup + "for i in range(1000):\n" + indent(body) +
         "t0 = time.perf_counter()\n"
         "for i in range(n):\n" + indent(body) +
         "us = (time.perf_counter() - t0) * 1e6 / n\n" + teardown + "return us\n";
}

// n tasks submitted with submit(i), then every result collected with collect(): tasks per second. The caller warms
// its pool up first.
template <class Submit, class Collect>
double batch_rate(int n, Submit submit, Collect collect) {
  const auto t0 = Clock::now();
  std::vector<decltype(submit(0))> pending;
  pending.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) pending.push_back(submit(i));
  long long sum = 0;
  for (auto& r : pending) sum += collect(r);
  const double seconds = seconds_since(t0);
  if (sum < 0) throw std::runtime_error("batch of tasks: wrong result");
  return n / seconds;
}

// Python's pool workloads: inside `with OPEN as pool:`, one untimed `warm_up` call, then `work` timed; tasks per
// second.
std::string python_pool_rate(const std::string& open, const std::string& warm_up, const std::string& work) {
  return "with " + open + " as pool:\n"
         "    " + warm_up + "\n"
         "    t0 = time.perf_counter()\n" + indent(work) +
         "    seconds = time.perf_counter() - t0\n"
         "return n / seconds\n";
}

// ---- processes ----

void trivial() {}

void fork_exit_wait() {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) _exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

void spawn_self_wait() {
  static const std::vector<std::string> environment = [] {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.push_back(std::string(raw_exec_variable) + "=1");
    return env;
  }();
  std::vector<char*> envp;
  for (const auto& e : environment) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  char program[] = "/proc/self/exe";
  char* argv[] = {program, nullptr};
  pid_t pid = 0;
  if (::posix_spawn(&pid, program, nullptr, nullptr, argv, envp.data()) != 0)
    throw std::runtime_error("posix_spawn failed");
  int status = 0;
  ::waitpid(pid, &status, 0);
}

Workload process_start_join(mpx::StartMethod method, double target, int iterations, int python_iterations) {
  const std::string m(mpx::to_string(method));
  const bool spawn = method == mpx::StartMethod::spawn;
  return {
      .name = "process/" + m,
      .unit = "ms",
      .target = target,
      .iterations = iterations,
      .python_iterations = python_iterations,
      .mpx =
          [method](int n) {
            const mpx::Context ctx(method);
            return measure_ms(n, [&] {
              mpx::Process p = ctx.Process(trivial);
              p.start();
              p.join();
            });
          },
      // os.getpid is Python's trivial target: under `python3 -c` a function defined in __main__ cannot be found by
      // a spawned or forkserved child, while a builtin pickles by reference under every start method.
      .python = "ctx = multiprocessing.get_context('" + m + "')\n"
                "def once():\n"
                "    p = ctx.Process(target=os.getpid)\n"
                "    p.start()\n"
                "    p.join()\n"
                "return _measure_ms(n, once)\n",
      .raw = [spawn](int n) { return measure_ms(n, spawn ? spawn_self_wait : fork_exit_wait); },
      .raw_label = spawn ? "posix_spawn(/proc/self/exe) exiting before main + waitpid" : "fork() + _exit(0) + waitpid",
  };
}

// ---- queues ----

constexpr int queue_item_bytes = 64;

void queue_producer(mpx::Queue<std::string> q, int n) {
  const std::string item(queue_item_bytes, 'x');
  for (int i = 0; i < n; ++i) q.put(item);
}

// One producer process, the consumer here. A JoinableQueue goes to the producer as the Queue it is.
template <class Q = mpx::Queue<std::string>>
double mpx_queue_throughput(int n) {
  Q q;
  return child_to_parent_rate(n, queue_producer, q, [&] { (void)q.get(); });
}

// The floor: a forked PUSH to a PULL over ipc, 64-byte messages, nothing else. The PULL binds before the fork, on a
// path of its own per call, so the child never connects to a path that is not (or no longer) listening; a receive
// timeout turns a lost message into an error instead of a hang.
double zmq_push_pull_throughput(int n) {
  static int calls = 0;
  const std::string path = std::filesystem::temp_directory_path().string() + "/mpx-bench-" +
                           std::to_string(::getpid()) + "-" + std::to_string(++calls);
  const std::string endpoint = "ipc://" + path;
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::rcvtimeo, 60000);
  pull.bind(endpoint);
  const auto t0 = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    zmq::context_t child_ctx;  // never the parent's context: its threads did not survive the fork
    zmq::socket_t push(child_ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, -1);
    push.connect(endpoint);
    const std::string item(queue_item_bytes, 'x');
    for (int i = 0; i < n; ++i) push.send(zmq::buffer(item), zmq::send_flags::none);
    push.close();
    child_ctx.close();
    _exit(0);
  }
  zmq::message_t m;
  int received = 0;
  while (received < n && pull.recv(m)) ++received;
  const double seconds = seconds_since(t0);
  pull.close();
  ::waitpid(pid, nullptr, 0);
  std::filesystem::remove(path);
  if (received < n)
    throw std::runtime_error("raw PUSH/PULL baseline: " + std::to_string(n - received) + " of " +
                             std::to_string(n) + " messages did not arrive within 60 s");
  return n / seconds;
}

const char* const push_pull_label = "ZeroMQ PUSH -> PULL over ipc, 64-byte messages";

// queue/1to1 and queue/joinable: the same producer and consumer on a Queue of the given kind, mpx and Python alike.
std::string python_queue_one_to_one(const std::string& kind) {
  return python_child_to_parent_rate("q = multiprocessing." + kind + "()\n", "_queue_producer, args=(q, n)",
                                     "q.get()");
}

// ---- round trips: the raw floor for pipes, locks and events ----

std::string ipc_endpoint(const char* what) {
  return "ipc://" + std::filesystem::temp_directory_path().string() + "/mpx-bench-" + what + "-" +
         std::to_string(::getpid());
}

// The floor for one request and its answer between two processes: this process's ROUTER (as mpx's coordinator is)
// and a forked DEALER with its own context that echoes every message, 8 bytes over ipc. Microseconds per round trip.
double zmq_round_trip_us(int n) {
  const std::string endpoint = ipc_endpoint("rtt");
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.bind(endpoint);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    zmq::context_t child_ctx;
    zmq::socket_t dealer(child_ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint);
    dealer.send(zmq::str_buffer("hello"), zmq::send_flags::none);
    zmq::message_t m;
    for (;;) {
      if (!dealer.recv(m) || m.size() == 0) break;
      dealer.send(m, zmq::send_flags::none);
    }
    dealer.close();
    child_ctx.close();
    _exit(0);
  }
  zmq::message_t peer;
  zmq::message_t m;
  (void)router.recv(peer);  // the child's routing id, then its hello
  (void)router.recv(m);
  const std::string payload(8, 'x');
  const double us = round_trip_us(n, [&] {
    router.send(zmq::buffer(peer.data(), peer.size()), zmq::send_flags::sndmore);
    router.send(zmq::buffer(payload), zmq::send_flags::none);
    (void)router.recv(m);  // routing id
    (void)router.recv(m);
  });
  router.send(zmq::buffer(peer.data(), peer.size()), zmq::send_flags::sndmore);
  router.send(zmq::message_t(), zmq::send_flags::none);  // empty: stop
  ::waitpid(pid, nullptr, 0);
  router.close();
  ctx.close();
  std::filesystem::remove(endpoint.substr(6));
  return us;
}

const char* const round_trip_label =
    "ZeroMQ ROUTER <-> DEALER round trip over ipc between two processes, 8-byte messages (us per round trip)";

// A latency whose floor is one raw ZeroMQ round trip, measured in this run: mpx must stay within `within` times it.
Workload versus_round_trip(Workload w, double within) {
  w.raw_target = 1.0 / within;
  w.raw = zmq_round_trip_us;
  w.raw_label = round_trip_label;
  return w;
}

// ---- pipes ----

// Echoes every int until it gets a negative one.
void pipe_echo(mpx::Connection conn) {
  for (;;) {
    const int x = conn.recv<int>();
    if (x < 0) break;
    conn.send(x);
  }
}

double mpx_pipe_round_trip_us(int n) {
  auto [here, there] = mpx::Pipe();
  mpx::Process p(pipe_echo, there);
  p.start();
  int i = 0;
  const double us = round_trip_us(n, [&] {
    here.send(i);
    if (here.recv<int>() != i) throw std::runtime_error("pipe echo: wrong answer");
    ++i;
  });
  here.send(-1);
  p.join();
  return us;
}

void pipe_sender(mpx::Connection conn, int n) {
  for (int i = 0; i < n; ++i) conn.send(i);
}

// A child sends n ints, this process receives them (the warm-up's 1000 go through both ends held here, until the
// child adopts one).
double mpx_pipe_throughput(int n) {
  auto ends = mpx::Pipe();
  return child_to_parent_rate(n, pipe_sender, ends.second, [&] { (void)ends.first.recv<int>(); });
}

// ---- sync ----

double mpx_lock_uncontended_us(int n) {
  mpx::Lock lock;
  return round_trip_us(n, [&] {
    lock.acquire();
    lock.release();
  });
}

// Event wake-up latency: from the moment one process calls set() to the moment wait() returns in another. Both read
// CLOCK_MONOTONIC (steady_clock; Python's time.monotonic_ns), which is one clock for every process on a host, so the
// waiter reports when it woke and the setter subtracts when it set.
std::int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void event_waiter(mpx::Event go, mpx::Queue<std::int64_t> woke, int count) {
  for (int i = 0; i < count; ++i) {
    go.wait();
    const std::int64_t t = monotonic_ns();
    go.clear();  // before reporting, so that the next set() finds it clear
    woke.put(t);
  }
}

double mpx_event_wakeup_us(int n) {
  mpx::Event go;
  mpx::Queue<std::int64_t> woke;
  constexpr int warmup = 200;
  mpx::Process p(event_waiter, go, woke, warmup + n);
  p.start();
  std::vector<double> samples;
  for (int k = 0; k < warmup + n; ++k) {
    const std::int64_t t0 = monotonic_ns();
    go.set();
    const std::int64_t t1 = woke.get();
    if (k >= warmup) samples.push_back(static_cast<double>(t1 - t0) / 1000.0);
  }
  p.join();
  return mean_or_median(std::move(samples));
}

// ---- queues with many producers and consumers ----

constexpr int many_to_many = 8;

void queue_producer_at(mpx::Barrier start, mpx::Queue<std::string> q, int n) {
  (void)start.wait();
  queue_producer(q, n);
}

void queue_consumer_at(mpx::Barrier start, mpx::Queue<std::string> q, int n) {
  (void)start.wait();
  for (int i = 0; i < n; ++i) (void)q.get();
}

// 8 producer and 8 consumer processes on one Queue, released together by a Barrier once all have started: items per
// second from the release to the last consumer joined.
double mpx_queue_many_to_many(int n) {
  const int per = n / many_to_many;
  mpx::Queue<std::string> q;
  mpx::Barrier start(2 * many_to_many + 1);
  std::vector<mpx::Process> producers;
  std::vector<mpx::Process> consumers;
  for (int i = 0; i < many_to_many; ++i) {
    producers.emplace_back(queue_producer_at, start, q, per);
    consumers.emplace_back(queue_consumer_at, start, q, per);
  }
  for (auto& p : producers) p.start();
  for (auto& p : consumers) p.start();
  (void)start.wait();
  const auto t0 = Clock::now();
  for (auto& p : consumers) p.join();
  const double seconds = seconds_since(t0);
  for (auto& p : producers) p.join();
  return per * many_to_many / seconds;
}

// ---- queue memory ----

std::size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0;
  std::size_t resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

constexpr double queue_memory_limit = 160.0;  // bytes per queued item, the issue's budget

// n 64-byte items put into one Queue by this process; the coordinator is a thread of this process, so its growth is
// this process's RSS growth. Bytes per item. Every item is got back afterwards, so the queue is left empty.
double mpx_queue_memory(int n) {
  mpx::Queue<std::string> q;
  const std::string item(queue_item_bytes, 'x');
  for (int i = 0; i < 1000; ++i) q.put(item);  // warm-up: coordinator, channel, the queue's first blocks
  for (int i = 0; i < 1000; ++i) (void)q.get();
  // Hand free heap pages back to the kernel first: memory freed by earlier workloads would otherwise be reused
  // without growing RSS, and the figure would depend on what ran before.
  ::malloc_trim(0);
  const std::size_t before = rss_bytes();
  for (int i = 0; i < n; ++i) {
    q.put(item);
    // Puts are posted without a reply; a size request every so often keeps what is in flight in the sockets (and
    // would otherwise be counted) small next to what the queue holds.
    if ((i + 1) % 10000 == 0) (void)q.qsize();
  }
  if (q.qsize() != static_cast<std::size_t>(n)) throw std::runtime_error("queue/memory: items missing");
  const std::size_t after = rss_bytes();
  for (int i = 0; i < n; ++i) (void)q.get();
  return static_cast<double>(after - before) / n;
}

// ---- manager ----

double mpx_manager_dict_us(int n) {
  mpx::Manager manager;
  auto d = manager.dict();
  std::int64_t i = 0;
  return round_trip_us(n, [&] {
    d.set("k", i);
    if (d.get("k").as_int() != i) throw std::runtime_error("manager dict: wrong value");
    ++i;
  });
}

// ---- tracing ----

// Runs `measure(n)` with tracing on to a file sink, and says on stderr what the trace cost in records and drops.
double traced(int n, double (*measure)(int)) {
  if (!mpx::trace::compiled_in()) return NAN;  // a -Dtracing=false build: nothing to measure
  const auto path =
      std::filesystem::temp_directory_path() / ("mpx-bench-trace-" + std::to_string(::getpid()) + ".mpxt");
  mpx::trace::enable("file:" + path.string());
  const double rate = measure(n);
  const auto status = mpx::trace::status();
  mpx::trace::disable();
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  std::filesystem::remove(path, ec);
  // A sink that fell behind drops records, which would flatter the figure: say how many.
  std::cerr << " (trace: " << status.recorded << " records, " << status.dropped << " dropped, " << bytes / 1024
            << " KiB)";
  return rate;
}

// A workload traced to a file whose raw column is the same workload untraced, measured by this same binary in this
// run: "of raw" is what turning tracing on costs. One run of each is at the mercy of how two cores happen to schedule
// producer, consumer and sink (single runs of queue/1to1 alone range 1.4M-4.4M items/s here), so the two are measured
// in alternation, three times each, and each column is the median of its three.
Workload traced_workload(std::string name, int iterations, double raw_target, double (*untraced)(int),
                         std::string untraced_name, std::string share, std::string note) {
  constexpr int pairs = 3;
  auto untraced_rates = std::make_shared<std::vector<double>>();
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {
      .name = std::move(name),
      .unit = "items/s",
      .raw_target = raw_target,
      .iterations = iterations,
      .mpx =
          [untraced, untraced_rates, median](int n) {
            untraced_rates->clear();
            if (!mpx::trace::compiled_in()) return double(NAN);  // a -Dtracing=false build: nothing to measure
            std::vector<double> traced_rates;
            for (int i = 0; i < pairs; ++i) {
              untraced_rates->push_back(untraced(n));
              traced_rates.push_back(traced(n, untraced));
            }
            return median(traced_rates);
          },
      // The untraced runs were made alongside the traced ones, above.
      .raw = [untraced_rates, median](int) { return untraced_rates->empty() ? NAN : median(*untraced_rates); },
      .raw_label = "not a raw floor: mpx " + untraced_name + " with tracing off, measured in this run in alternation "
                   "with the traced runs, median of 3 each (target: " + share + ")",
      .note = std::move(note),
  };
}

// ---- shared memory: Value.fetch_add and the locked increment, 2 processes ----

// Both children wait at the barrier with the parent, so the clock starts when all three are there.
void shared_fetch_add(mpx::Barrier start, mpx::Value<long> v, int n) {
  start.wait();
  for (int i = 0; i < n; ++i) v.fetch_add(1);
}

void shared_locked_add(mpx::Barrier start, mpx::Value<long> v, int n) {
  start.wait();
  for (int i = 0; i < n; ++i) {
    std::scoped_lock guard(v.get_lock());  // Python's `with v.get_lock(): v.value += 1`
    v.set(v.value() + 1);
  }
}

// Increments per second, all processes together: n per process, 2 processes.
template <void (*Child)(mpx::Barrier, mpx::Value<long>, int)>
double mpx_shared_ops(int n) {
  mpx::Value<long> v(0);
  mpx::Barrier start(3);
  mpx::Process a(Child, start, v, n), b(Child, start, v, n);
  a.start();
  b.start();
  start.wait();
  const auto t0 = Clock::now();
  a.join();
  b.join();
  const double seconds = seconds_since(t0);
  if (v.value() != 2L * n) throw std::runtime_error("shared: increments were lost");
  return 2.0 * n / seconds;
}

// The floors: two forked processes on an anonymous MAP_SHARED page, started by a spinning flag.
struct RawShared {
  std::atomic<long> counter{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  pthread_mutex_t mutex;
};

template <class Body>
double raw_shared_ops(int n, Body body) {
  void* page = ::mmap(nullptr, sizeof(RawShared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) throw std::runtime_error("mmap failed");
  auto* shared = new (page) RawShared;
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutex_init(&shared->mutex, &attr);
  pid_t pids[2];
  for (auto& pid : pids) {
    pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      shared->ready.fetch_add(1);
      while (!shared->go.load()) {
      }
      for (int i = 0; i < n; ++i) body(*shared);
      _exit(0);
    }
  }
  while (shared->ready.load() < 2) {
  }
  const auto t0 = Clock::now();
  shared->go.store(true);
  for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
  const double seconds = seconds_since(t0);
  ::munmap(page, sizeof(RawShared));
  return 2.0 * n / seconds;
}

double raw_fetch_add_ops(int n) {
  return raw_shared_ops(n, [](RawShared& s) { s.counter.fetch_add(1); });
}

double raw_locked_ops(int n) {
  return raw_shared_ops(n, [](RawShared& s) {
    ::pthread_mutex_lock(&s.mutex);
    s.counter.store(s.counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    ::pthread_mutex_unlock(&s.mutex);
  });
}

const char* python_locked_increment =
    "v = multiprocessing.Value('q', 0)\n"
    "start = multiprocessing.Barrier(3)\n"
    "ps = [multiprocessing.Process(target=_shared_locked_add, args=(start, v, n)) for _ in range(2)]\n"
    "for p in ps:\n"
    "    p.start()\n"
    "start.wait()\n"
    "t0 = time.perf_counter()\n"
    "for p in ps:\n"
    "    p.join()\n"
    "return 2 * n / (time.perf_counter() - t0)\n";

// ---- topologies ----

// The task actor of the topology workloads: it only has to be ready, and it stops on SIGTERM. Registered by a static
// initializer, so that it exists before mpx::init runs in the copy of mpx-bench that the topology starts.
void bench_idle_actor() {
  for (;;) ::pause();
}
const bool bench_actor_registered = (mpx::register_actor("bench_idle", bench_idle_actor), true);

std::string idle_topology(int actors) {
  return "[coordinator]\nshutdown_timeout = 5\n[[actors]]\nname = \"idle\"\ntask = \"bench_idle\"\nreplicas = " +
         std::to_string(actors) + "\n";
}

// Milliseconds from start() to every actor ready (start) or from stop() to every actor reaped (stop), averaged.
double topology_ms(int actors, bool measure_stop, int n) {
  double total = 0;
  for (int i = 0; i < n; ++i) {
    auto t = mpx::Topology::parse(idle_topology(actors), "bench");
    const auto t0 = std::chrono::steady_clock::now();
    t.start();
    const auto t1 = std::chrono::steady_clock::now();
    if (t.stop() != mpx::TopologyExit::ok) throw std::runtime_error("topology: stop did not go cleanly");
    const auto t2 = std::chrono::steady_clock::now();
    total += std::chrono::duration<double, std::milli>(measure_stop ? t2 - t1 : t1 - t0).count();
  }
  return total / n;
}

// topology/startN (stop = false) or topology/stopN: an mpx-only workload.
Workload topology_start_stop(int actors, bool stop, int iterations) {
  const std::string name = (stop ? "topology/stop" : "topology/start") + std::to_string(actors);
  Workload w{
      .name = name,
      .unit = "ms",
      .iterations = iterations,
      .mpx = [actors, stop](int n) { return topology_ms(actors, stop, n); },
      .note = stop ? name + ": stop() of " + std::to_string(actors) +
                         " ready actors, one by one in reverse start order (SIGTERM, reaped)"
                   : name + ": mpx::Topology start() of " + std::to_string(actors) +
                         " task actors (this program started again, each joining the session and answering the "
                         "coordinator) until every one is ready",
  };
  if (!stop && actors == 200) {
    // Not a raw floor: start time must grow at most linearly; the issue's bound is 25 x start10 for 200 actors,
    // measured here, now.
    w.raw = [](int n) { return 25.0 * topology_ms(10, false, n); };
    w.raw_label = "not a raw floor: the bound, 25 x topology/start10 measured in this run";
    w.raw_target = 1.0;
  }
  return w;
}

// The pipeline example (examples/topologies/pipeline.toml) with n items: producer -> bounded queue (256) -> 4
// workers -> sink. Items/s from start() to the end of the run, actors' start included.
double topology_pipeline(int n) {
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) throw std::runtime_error("topology/pipeline: cannot find this program");
  const std::string actors =
      (std::filesystem::path(std::string(self, static_cast<std::size_t>(len))).parent_path().parent_path() /
       "examples" / "topology_actors").string();
  const std::string items = std::to_string(n);
  auto actor = [&](const std::string& name, const std::string& extra) {
    return "[[actors]]\nname = \"" + name + "\"\nexec = [\"" + actors + "\", \"" + name + "\"]\nrestart = \"transient\"\n" +
           extra;
  };
  const std::string text =
      "[objects.jobs]\ntype = \"queue\"\nmaxsize = 256\n[objects.results]\ntype = \"queue\"\n" +
      actor("sink", "objects = [\"results\"]\nargs = { workers = 4, items = " + items + " }\n") +
      actor("worker", "replicas = 4\nobjects = [\"jobs\", \"results\"]\nafter = [\"sink\"]\n") +
      actor("producer", "objects = [\"jobs\"]\nafter = [\"worker\"]\nargs = { workers = 4, items = " + items + " }\n");
  // The actors print their lines; keep the benchmark's table readable.
  std::fflush(stdout);
  const int saved = ::dup(STDOUT_FILENO);
  const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ::dup2(null, STDOUT_FILENO);
  auto t = mpx::Topology::parse(text, "pipeline");
  const auto t0 = std::chrono::steady_clock::now();
  t.start();
  const auto status = t.wait();
  const double seconds = seconds_since(t0);
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(null);
  if (status != mpx::TopologyExit::ok) throw std::runtime_error("topology/pipeline: the pipeline failed");
  return n / seconds;
}

// ---- pool ----

int pool_square(int x) { return x * x; }

// Seconds that pool.map(square, range(n), chunksize) takes once every worker has connected (an untimed map first).
double timed_square_map(mpx::Pool& pool, int n, std::optional<std::size_t> chunksize) {
  std::vector<int> xs(static_cast<std::size_t>(n));
  std::iota(xs.begin(), xs.end(), 0);
  (void)pool.map(pool_square, std::vector<int>{1, 2, 3, 4}, 1);
  const auto t0 = Clock::now();
  const auto ys = pool.map(pool_square, xs, chunksize);
  const double seconds = seconds_since(t0);
  if (ys.size() != xs.size() || ys.back() != xs.back() * xs.back()) throw std::runtime_error("pool map: wrong result");
  return seconds;
}

// Tasks per second through Pool(workers).map of a trivial function, pool started before the clock.
double mpx_pool_map(int n, int workers, std::optional<std::size_t> chunksize) {
  mpx::Pool pool(workers);
  return n / timed_square_map(pool, n, chunksize);
}

std::string python_map(const char* chunk) {
  return python_pool_rate("multiprocessing.Pool(2)", "pool.map(_square, [1, 2, 3, 4], 1)",
                          "pool.map(_square, range(n), " + std::string(chunk) + ")");
}

// n apply_async calls, then every get(): tasks per second.
double mpx_pool_apply_batch(int n) {
  mpx::Pool pool(2);
  (void)pool.apply(pool_square, 1);
  return batch_rate(n, [&](int i) { return pool.apply_async(pool_square, i); }, [](auto& r) { return r.get(); });
}

double mpx_pool_apply_serial_us(int n) {
  mpx::Pool pool(2);
  int i = 0;
  return round_trip_us(n, [&] {
    if (pool.apply_async(pool_square, i).get() != i * i) throw std::runtime_error("apply: wrong result");
    ++i;
  });
}

// Per-task overhead with 64 workers on this machine's cores, against the same map with 2 workers.
double pool_map_us_per_task(int n, int workers) { return 1e6 / mpx_pool_map(n, workers, 1); }

// n submit() calls on ProcessPoolExecutor(2), then result() on each: tasks per second.
double mpx_executor_submit(int n) {
  mpx::ProcessPoolExecutor executor(2);
  (void)executor.submit(pool_square, 1).result();
  return batch_rate(n, [&](int i) { return executor.submit(pool_square, i); }, [](auto& f) { return f.result(); });
}

// A topology pool used from an actor: one task actor maps square over n numbers (chunksize 1) on the topology's
// Pool(2), through its attached handle, and reports the seconds the map took (the actor's and the pool's start
// excluded). Registered by a static initializer, like bench_idle, for the copy of mpx-bench the topology starts.
void bench_pool_mapper() {
  const auto& me = mpx::this_actor();
  auto pool = me.pool("p");
  const double seconds = timed_square_map(pool, static_cast<int>(me.args()["n"].as_int()), 1);
  me.queue<double>("seconds").put(seconds);
}
const bool bench_pool_mapper_registered = (mpx::register_actor("bench_pool_mapper", bench_pool_mapper), true);

double topology_pool_map(int n) {
  auto t = mpx::Topology::parse("[objects.p]\ntype = \"pool\"\nprocesses = 2\n[objects.seconds]\ntype = \"queue\"\n"
                                "[[actors]]\nname = \"mapper\"\ntask = \"bench_pool_mapper\"\nrestart = \"transient\"\n"
                                "objects = [\"p\", \"seconds\"]\nargs = { n = " +
                                    std::to_string(n) + " }\n",
                                "bench");
  t.start();
  const double seconds = t.objects().queue<double>("seconds").get(true, std::chrono::seconds(120));
  if (t.wait() != mpx::TopologyExit::ok) throw std::runtime_error("topology/poolmap: the actor failed");
  return n / seconds;
}

// ---- nodes: many hosts ----
//
// Each node workload runs in a fresh copy of this program (`mpx-bench --nodes-workload NAME N DIR`): this process's
// coordinator listens on ipc and a coordinator's endpoint cannot change once it started. The copy makes keys in DIR
// (a private temporary directory this process made, and removes when the copy has ended), listens on tcp with CURVE,
// starts its node agents (this program again, with --mpx-node: mpx::init makes each an agent), measures, writes its
// figures to DIR/figures and exits.
//
// Where they run: as root, on hosts of their own (tools/netns_hosts.hpp): the copy in network namespace h0, listening
// on its address, and agent i in namespace h<i>, joined by a bridge, with no added delay. Otherwise (or if the
// namespaces cannot be made) all on this host's loopback.

constexpr const char* nodes_workload_flag = "--nodes-workload";
// What the copy learns of the hosts: the namespaces of its agents (comma-separated `ip netns` names), and its address.
constexpr const char* nodes_netns_variable = "MPX_BENCH_NETNS";
constexpr const char* nodes_address_variable = "MPX_BENCH_ADDRESS";
const std::string nodes_note_suffix =
    " (as root: the coordinator and each agent in a network namespace of its own, joined by a bridge; else all on "
    "loopback; tcp with CURVE, no added delay)";

// The agents the copy started. Leaked, so that it outlives every static object and is still there when
// reap_agents_at_exit runs.
std::vector<pid_t>& started_agents() {
  static auto* agents = new std::vector<pid_t>;
  return *agents;
}

// Reaps an agent: it has `grace` to end by itself (it was told node_shutdown, or it was SIGKILLed), then it is
// SIGKILLed. A zombie is still ours until reaped, so the pid cannot name another process meanwhile.
void reap_agent(pid_t pid, std::chrono::milliseconds grace) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, static_cast<int>(grace.count())) < 0 && errno == EINTR) {
    }
    ::close(fd);
  }
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  auto& agents = started_agents();
  agents.erase(std::remove(agents.begin(), agents.end(), pid), agents.end());
}

// Registered before main, so it runs after mpx's own exit hook, which stopped the coordinator: that told every live
// agent to stop its processes and exit (node_shutdown), so they end by themselves here.
void reap_agents_at_exit() {
  while (!started_agents().empty()) reap_agent(started_agents().back(), std::chrono::seconds(3));
}
[[maybe_unused]] const bool agents_reaped_at_exit = (std::atexit(reap_agents_at_exit), true);

// The copy's session: keys for nodes h1..hN in `dir`, and the coordinator on loopback tcp.
struct NodeCluster {
  std::string keys;
  std::string endpoint;

  std::vector<std::string> agent_namespaces;  // agent i's is [i - 1]; none: loopback

  NodeCluster(const std::string& dir, int node_keys) : keys(dir + "/keys") {
    mpx::make_keys(keys);
    for (int i = 1; i <= node_keys; ++i) mpx::make_node_keys(keys, "h" + std::to_string(i));
    mpx::set_keys(keys);
    const char* address = std::getenv(nodes_address_variable);
    if (const char* names = std::getenv(nodes_netns_variable); names != nullptr && *names != '\0') {
      std::stringstream list(names);
      for (std::string name; std::getline(list, name, ',');) agent_namespaces.push_back(name);
    }
    if (agent_namespaces.size() < static_cast<std::size_t>(node_keys)) agent_namespaces.clear();
    mpx::set_coordinator_endpoint(std::string("tcp://") +
                                  (address != nullptr && !agent_namespaces.empty() ? address : "127.0.0.1") + ":*");
    (void)mpx::nodes();  // starts the coordinator
    endpoint = mpx::trace::coordinator_endpoint();
  }

  // Starts this program as the agent of node h<i>. It dies with this process should this process die first
  // (PR_SET_PDEATHSIG); its stdout is this process's stderr, so that only this process writes the figures.
  pid_t start_agent(int i) const {
    static const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string node_keys = keys + "/nodes/h" + std::to_string(i);
    std::vector<std::string> args{self, "--mpx-node", endpoint, "--mpx-keys", node_keys};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int netns = -1;  // the agent's host, if it has one of its own
    if (!agent_namespaces.empty()) {
      const std::string path = "/run/netns/" + agent_namespaces.at(static_cast<std::size_t>(i - 1));
      netns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (netns < 0) throw std::runtime_error("cannot open " + path);
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (netns >= 0 && ::setns(netns, CLONE_NEWNET) != 0) ::_exit(126);
      ::dup2(STDERR_FILENO, STDOUT_FILENO);
      ::execv(self.c_str(), argv.data());
      ::_exit(127);
    }
    if (netns >= 0) ::close(netns);
    started_agents().push_back(pid);
    return pid;
  }
};

std::vector<std::uint32_t> alive_node_ids(const std::vector<mpx::NodeInfo>& nodes) {
  std::vector<std::uint32_t> ids;
  for (const auto& node : nodes)
    if (node.id != 0 && node.state == "alive") ids.push_back(node.id);
  return ids;
}

// Waits (mpx::wait_for_nodes) until `count` nodes are alive, and returns their ids.
std::vector<std::uint32_t> wait_for_alive_nodes(std::size_t count) {
  auto ids = alive_node_ids(mpx::wait_for_nodes(count, std::chrono::seconds(30)));
  if (ids.size() < count) throw std::runtime_error("fewer nodes alive than waited for");
  return ids;
}

// A daemon: should a workload fail half-way, the exit stops its processes instead of waiting for them.
mpx::ProcessOptions on_node(std::uint32_t node) {
  mpx::ProcessOptions options;
  options.node = node;
  options.daemon = true;
  return options;
}

// nodes/pool_tcp: microseconds per task of map(square, range(n), chunksize=1) on 2 workers pinned to one node.
double nodes_pool_tcp_us(const NodeCluster& cluster, int n) {
  cluster.start_agent(1);
  mpx::PoolOptions options;
  options.placement = mpx::Placement::pinned;
  options.nodes = {wait_for_alive_nodes(1).front()};
  options.processes = 2;
  mpx::Pool pool(options);
  return timed_square_map(pool, n, 1) * 1e6 / n;
}

// nodes/queue: a producer on one node puts 1000 items (untimed), waits for `go`, then puts n; a consumer on another
// node gets the 1000, sets `go` and times the n gets. Items per second, as the consumer measured them.
void node_queue_producer(mpx::Queue<std::string> q, mpx::Event go, int n) {
  queue_producer(q, 1000);
  go.wait();
  queue_producer(q, n);
}

void node_queue_consumer(mpx::Queue<std::string> q, mpx::Event go, mpx::Queue<double> rate, int n) {
  for (int i = 0; i < 1000; ++i) (void)q.get();
  go.set();
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) (void)q.get();
  rate.put(n / seconds_since(t0));
}

double nodes_queue_rate(const NodeCluster& cluster, int n) {
  cluster.start_agent(1);
  cluster.start_agent(2);
  const auto ids = wait_for_alive_nodes(2);
  mpx::Queue<std::string> q;
  mpx::Event go;
  mpx::Queue<double> rate;
  mpx::Process producer(on_node(ids[0]), node_queue_producer, q, go, n);
  mpx::Process consumer(on_node(ids[1]), node_queue_consumer, q, go, rate, n);
  producer.start();
  consumer.start();
  const double items_per_second = rate.get(true, std::chrono::seconds(300));
  if (!producer.join(std::chrono::seconds(60)) || !consumer.join(std::chrono::seconds(60)))
    throw std::runtime_error("nodes/queue: the producer or the consumer did not end");
  return items_per_second;
}

// nodes/loss: `trials` times, an agent joins, a process starts on its node and says so, the agent is SIGKILLed (at a
// moment that moves across one heartbeat period from trial to trial), and the time until that process's join()
// returns is taken. The median and the p99 (nearest rank: of 20 trials, the largest) in ms.
void node_idle(mpx::Event started, mpx::Event never) {
  started.set();
  (void)never.wait(std::chrono::seconds(120));
}

std::vector<double> nodes_loss_ms(const NodeCluster& cluster, int trials) {
  std::vector<double> ms;
  for (int t = 0; t < trials; ++t) {
    const pid_t agent = cluster.start_agent(1);  // the previous trial's node is lost: its key is free again
    const auto ids = wait_for_alive_nodes(1);
    if (ids.size() != 1) throw std::runtime_error("nodes/loss: more than one node alive");
    mpx::Event started, never;
    mpx::Process p(on_node(ids.front()), node_idle, started, never);
    p.start();
    if (!started.wait(std::chrono::seconds(30))) throw std::runtime_error("nodes/loss: the process did not start");
    // Not a wait for anything: the moment of the kill. An agent beats every 250 ms, and a new node's beats and the
    // coordinator's checks of them both count from its hello, so a kill right after the start would always fall at
    // the same point of a beat (nearly the latest detection). Trial t kills t/trials of a beat later, so that the
    // trials cover the whole beat, as kills at random moments would.
    std::this_thread::sleep_for(std::chrono::milliseconds(250) * t / trials);
    const auto t0 = Clock::now();
    ::kill(agent, SIGKILL);
    if (!p.join(std::chrono::seconds(10))) throw std::runtime_error("nodes/loss: no loss within 10 s");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (p.exitcode() != mpx::node_lost_exitcode) throw std::runtime_error("nodes/loss: not ended as lost");
    reap_agent(agent, std::chrono::milliseconds(0));
  }
  std::sort(ms.begin(), ms.end());
  const auto rank = static_cast<std::size_t>(std::ceil(0.99 * static_cast<double>(ms.size())));
  return {median_of(ms), ms[std::max<std::size_t>(rank, 1) - 1]};
}

// nodes/bringup: ms from starting 3 agents to the first result of a Pool of 6 workers pinned to their 3 nodes.
double nodes_bringup_ms(const NodeCluster& cluster) {
  const auto t0 = Clock::now();
  for (int i = 1; i <= 3; ++i) cluster.start_agent(i);
  mpx::PoolOptions options;
  options.placement = mpx::Placement::pinned;
  options.nodes = wait_for_alive_nodes(3);
  options.processes = 6;
  mpx::Pool pool(options);
  if (pool.apply(pool_square, 3) != 9) throw std::runtime_error("nodes/bringup: wrong result");
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The copy's main: `mpx-bench --nodes-workload NAME N DIR` writes its figures to DIR/figures and exits; its agents
// are gone when it has exited (reap_agents_at_exit).
int nodes_workload_main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: mpx-bench " << nodes_workload_flag << " pool_tcp|queue|loss|bringup N DIR\n";
    return 2;
  }
  const std::string name = argv[2];
  const std::string dir = argv[4];
  try {
    const int n = std::stoi(argv[3]);
    std::vector<double> figures;
    if (name == "pool_tcp") {
      figures = {nodes_pool_tcp_us(NodeCluster(dir, 1), n)};
    } else if (name == "queue") {
      figures = {nodes_queue_rate(NodeCluster(dir, 2), n)};
    } else if (name == "loss") {
      figures = nodes_loss_ms(NodeCluster(dir, 1), n);
    } else if (name == "bringup") {
      figures = {nodes_bringup_ms(NodeCluster(dir, 3))};
    } else {
      throw std::runtime_error("no such node workload");
    }
    std::ofstream out(dir + "/figures");
    out.precision(9);
    for (double f : figures) out << f << "\n";
    out.close();
    return out ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "mpx-bench " << nodes_workload_flag << " " << name << ": " << e.what() << "\n";
    return 1;
  }
}

// The hosts of the node workloads, made on first use and kept for the run (nullptr: loopback). Only root can make
// network namespaces; if making them fails, the reason is said once and the workloads run on loopback.
mpx_netns::NetnsHosts* node_hosts() {
  static std::unique_ptr<mpx_netns::NetnsHosts> hosts = []() -> std::unique_ptr<mpx_netns::NetnsHosts> {
    if (::geteuid() != 0) return nullptr;
    try {
      return std::make_unique<mpx_netns::NetnsHosts>(4);  // the copy's, and three agents'
    } catch (const std::exception& e) {
      std::cerr << "(node workloads on loopback: " << e.what() << ") ";
      return nullptr;
    }
  }();
  return hosts.get();
}

// Runs `mpx-bench --nodes-workload NAME N DIR` with a temporary DIR, which it removes once the copy has ended, and
// returns the copy's figures; empty (said on stderr) if it failed. The copy gets this environment without its MPX_
// variables (a session of its own, with mpx's defaults), and, as root, runs in host 0 of node_hosts().
std::vector<double> run_nodes_workload(const std::string& name, int n) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string dir = (std::filesystem::temp_directory_path() / "mpx-bench-nodes-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) throw std::runtime_error("cannot make a temporary directory");
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::string_view(*e).substr(0, 4) != "MPX_") env.emplace_back(*e);
  std::vector<std::string> args{self, nodes_workload_flag, name, std::to_string(n), dir};
  std::fflush(nullptr);
  std::optional<int> code;
  if (auto* hosts = node_hosts()) {
    // Through env(1): spawn() adds to this process's environment, and the copy must not see its MPX_ variables.
    std::vector<std::string> command{"env", "-i"};
    command.insert(command.end(), env.begin(), env.end());
    command.push_back(std::string(nodes_netns_variable) + "=" + hosts->name(1) + "," + hosts->name(2) + "," +
                      hosts->name(3));
    command.push_back(std::string(nodes_address_variable) + "=" + hosts->address(0));
    command.insert(command.end(), args.begin(), args.end());
    const pid_t pid = hosts->spawn(0, command);
    code = hosts->wait(pid, std::chrono::minutes(10));
    if (!code) {
      ::kill(pid, SIGKILL);
      (void)hosts->wait(pid, std::chrono::seconds(10));
    }
  } else {
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& v : env) envp.push_back(v.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()) == 0) {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (WIFEXITED(status)) code = WEXITSTATUS(status);
    }
  }
  std::vector<double> figures;
  if (code == 0) {
    std::ifstream in(dir + "/figures");
    for (double f = 0; in >> f;) figures.push_back(f);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (figures.empty()) std::cerr << " (" << nodes_workload_flag << " " << name << " failed)";
  return figures;
}

double first_figure(const std::vector<double>& figures, std::size_t i = 0) {
  return figures.size() > i ? figures[i] : NAN;
}

// nodes/bringup, one fresh copy per sample: the mean or median of n, after one untimed.
double nodes_bringup(int n) {
  std::vector<double> samples;
  for (int i = -1; i < n; ++i) {
    const double ms = first_figure(run_nodes_workload("bringup", 1));
    if (std::isnan(ms)) return NAN;
    if (i >= 0) samples.push_back(ms);
  }
  return mean_or_median(std::move(samples));
}

// The reference: a local Pool(6) from its construction to its first result, in this process; the pool ends untimed.
double local_pool_first_result_ms(int n) {
  std::vector<double> samples;
  for (int i = -1; i < n; ++i) {
    const auto t0 = Clock::now();
    mpx::Pool pool(6);
    if (pool.apply(pool_square, 3) != 9) throw std::runtime_error("pool: wrong result");
    if (i >= 0) samples.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return mean_or_median(std::move(samples));
}

// nodes/pool_tcp against the same map on a local Pool(2) in this process (over ipc and the side door). Two cores
// schedule either of them well or badly from run to run, so the two are measured in alternation, three times each,
// and each column is the median of its three (as traced_workload does).
Workload nodes_pool_tcp() {
  constexpr int pairs = 3;
  auto local = std::make_shared<std::vector<double>>();
  return {
      .name = "nodes/pool_tcp",
      .unit = "us/task",
      .raw_target = 1.0 / 1.3,
      .iterations = 200000,
      .mpx =
          [local](int n) {
            local->clear();
            std::vector<double> remote;
            for (int i = 0; i < pairs; ++i) {
              local->push_back(pool_map_us_per_task(n, 2));
              remote.push_back(first_figure(run_nodes_workload("pool_tcp", n)));
              if (std::isnan(remote.back())) return double(NAN);
            }
            return median_of(remote);
          },
      // The local runs were made alongside the remote ones, above.
      .raw = [local](int) { return local->empty() ? NAN : median_of(*local); },
      .raw_label = "not a raw floor: mpx itself, the same map on a local Pool(2) over ipc (pool/map1, per task), "
                   "measured in alternation with the remote runs, median of 3 each",
      .note = "nodes/pool_tcp: map(square, range(n), chunksize=1) on a Pool of 2 workers pinned to another node, "
              "per-task time, median of 3 runs; must stay within 1.3x of a local Pool(2)'s" + nodes_note_suffix,
  };
}

// nodes/loss_median and nodes/loss_p99 show two statistics of one measurement: the first of them to run makes it.
struct NodeLoss {
  int trials = 0;
  std::vector<double> figures;  // median, p99
};

Workload nodes_loss(const std::shared_ptr<NodeLoss>& loss, bool p99) {
  const std::string name = p99 ? "nodes/loss_p99" : "nodes/loss_median";
  return {
      .name = name,
      .unit = "ms",
      .raw_target = 1.0,  // raw is the bound itself: mpx must stay at or under it
      .iterations = 20,
      .mpx =
          [loss, p99](int n) {
            if (loss->trials != n) {  // measured once for both, even if it failed
              loss->trials = n;
              loss->figures = run_nodes_workload("loss", n);
            }
            return first_figure(loss->figures, p99 ? 1 : 0);
          },
      .raw = [](int) { return 3000.0; },
      .raw_label = "not measured: the bound, 3000 ms from the agent's SIGKILL to join() returning",
      .note = p99 ? name + ": the same trials as nodes/loss_median; p99 by nearest rank (of 20 trials, the slowest)"
                  : name + ": n trials (--iterations) of: an agent joins, a process starts on its node, the agent is "
                           "SIGKILLed (the moment moves across one 250 ms heartbeat from trial to trial); ms until "
                           "that process's join() returns (exitcode node_lost_exitcode). The median of the trials" +
                               nodes_note_suffix,
  };
}

// ---- the workloads, in the order they run ----

std::vector<Workload> workloads() {
  const auto loss = std::make_shared<NodeLoss>();
  return {
      process_start_join(mpx::StartMethod::fork, 5.0, 200, 100),
      process_start_join(mpx::StartMethod::forkserver, 10.0, 200, 100),
      process_start_join(mpx::StartMethod::spawn, 20.0, 50, 30),
      {.name = "queue/1to1", .unit = "items/s", .target = 10.0, .raw_target = 0.4, .iterations = 200000,
       .python_iterations = 50000, .mpx = mpx_queue_throughput<>, .python = python_queue_one_to_one("Queue"),
       .raw = zmq_push_pull_throughput, .raw_label = push_pull_label},
      // A JoinableQueue's puts go into its lane's ring, but every get crosses the coordinator (which lends a sole
      // consumer batches), so that it knows who took what.
      {.name = "queue/joinable", .unit = "items/s", .target = 5.0, .iterations = 200000, .python_iterations = 50000,
       .mpx = mpx_queue_throughput<mpx::JoinableQueue<std::string>>,
       .python = python_queue_one_to_one("JoinableQueue"),
       .note = "queue/joinable: queue/1to1's producer process and consumer on a JoinableQueue (put + get, no "
               "task_done)"},
      {.name = "queue/8to8", .unit = "items/s", .raw_target = 0.5,
       .iterations = 160000,  // every get is a coordinator round trip here (no lending with several consumers)
       .python_iterations = 160000, .mpx = mpx_queue_many_to_many,
       .python = "q = multiprocessing.Queue()\n"
                 "start = multiprocessing.Barrier(17)\n"
                 "per = n // 8\n"
                 "producers = [multiprocessing.Process(target=_queue_producer_at, args=(start, q, per)) for _ in "
                 "range(8)]\n"
                 "consumers = [multiprocessing.Process(target=_queue_consumer_at, args=(start, q, per)) for _ in "
                 "range(8)]\n"
                 "for p in producers + consumers:\n"
                 "    p.start()\n"
                 "start.wait()\n"
                 "t0 = time.perf_counter()\n"
                 "for p in consumers:\n"
                 "    p.join()\n"
                 "seconds = time.perf_counter() - t0\n"
                 "for p in producers:\n"
                 "    p.join()\n"
                 "return per * 8 / seconds\n",
       // Not a raw floor: the issue's target is half of mpx's own 1to1 throughput, so measure that here, now.
       .raw = mpx_queue_throughput<>,
       .raw_label = "not a raw floor: mpx queue/1to1 with as many items, measured in this run (target: half of it)",
       .note = "queue/8to8: 8 producer and 8 consumer processes on one Queue, 64-byte items, started together by a "
               "Barrier; timed from the release to the last consumer joined"},
      // Python's Pipe is a reference: a bare socketpair between two processes, no service in between.
      versus_round_trip(
          {.name = "pipe/roundtrip", .unit = "us", .iterations = 20000,
           .python_iterations = 20000, .mpx = mpx_pipe_round_trip_us,
           .python = "return _pipe_round_trip_us(n)\n",
           .note = "pipe/roundtrip: parent send(int) + recv() on a Pipe end, a child echoing on the other end"},
          1.2),
      {.name = "pipe/throughput", .unit = "msgs/s", .target = 10.0, .iterations = 100000,
       .python_iterations = 100000, .mpx = mpx_pipe_throughput,
       .python = python_child_to_parent_rate("a, b = multiprocessing.Pipe()\n", "_pipe_sender, args=(b, n)",
                                             "a.recv()"),
       .raw = zmq_push_pull_throughput, .raw_label = push_pull_label,
       .note = "pipe/throughput: a child sends n ints on a Pipe end, the parent receives them (pipelined)"},
      // Python's Lock is a futex-backed POSIX semaphore in shared memory: a reference, not a target.
      versus_round_trip(
          {.name = "lock/uncontended", .unit = "us", .iterations = 20000,
           .python_iterations = 1000000, .mpx = mpx_lock_uncontended_us,
           .python = python_loop_us("lock = multiprocessing.Lock()\n", "lock.acquire()\nlock.release()\n"),
           .note = "lock/uncontended: acquire() + release() of one Lock in one process, nobody else using it"},
          1.5),
      versus_round_trip(
          {.name = "event/wakeup", .unit = "us", .iterations = 10000,
           .python_iterations = 10000, .mpx = mpx_event_wakeup_us,
           .python = "return _event_wakeup_us(n)\n",
           .note = "event/wakeup: us from set() in one process to wait() returning in another (both read "
                   "CLOCK_MONOTONIC), compared with one raw round trip: a wake-up is two messages, set -> coordinator "
                   "-> waiter, as a round trip is two"},
          1.5),
      {.name = "manager/dict", .unit = "us", .target = 3.0, .iterations = 20000, .python_iterations = 20000,
       .mpx = mpx_manager_dict_us,
       .python = python_loop_us("m = multiprocessing.Manager()\nd = m.dict()\n", "d['k'] = i\nd['k']\n",
                                "m.shutdown()\n"),
       .raw = [](int n) { return 2 * zmq_round_trip_us(n); },
       .raw_label = "two ZeroMQ ROUTER <-> DEALER round trips over ipc between two processes (us)",
       .note = "manager/dict: d['k'] = i then d['k'] on a manager dict, from the parent to its manager process"},
      traced_workload("trace/file", 200000, 0.5, mpx_queue_throughput<>, "queue/1to1", "half of it",
                      "trace/file: queue/1to1 with MPX_TRACE-style tracing on to a file sink. Tracing compiled in "
                      "but off vs a -Dtracing=false build (target >= 97%) needs two builds: tools/trace-overhead.sh "
                      "compares them"),
      {.name = "shared/fetch_add", .unit = "ops/s", .target = 100.0, .raw_target = 0.5, .iterations = 5000000,
       .python_iterations = 200000, .mpx = mpx_shared_ops<shared_fetch_add>,
       .python = python_locked_increment,  // Python has no atomic increment: its right way is the lock
       .raw = raw_fetch_add_ops,
       .raw_label = "std::atomic<long>::fetch_add on a MAP_SHARED page, 2 forked processes",
       .note = "shared/fetch_add: 2 processes incrementing one Value<long> (n each); Python: `with v.get_lock(): "
               "v.value += 1`, its only correct increment"},
      {.name = "shared/locked", .unit = "ops/s", .target = 20.0, .iterations = 1000000, .python_iterations = 200000,
       .mpx = mpx_shared_ops<shared_locked_add>, .python = python_locked_increment, .raw = raw_locked_ops,
       .raw_label = "a plain (not robust, not recursive) process-shared pthread mutex, 2 forked processes",
       .note = "shared/locked: 2 processes doing `scoped_lock(v.get_lock()); v.set(v.value() + 1)` (n each) on a "
               "Value<long>, against Python's `with v.get_lock(): v.value += 1`"},
      topology_start_stop(10, false, 5),
      topology_start_stop(100, false, 3),
      topology_start_stop(200, false, 3),
      topology_start_stop(10, true, 5),
      topology_start_stop(100, true, 3),
      topology_start_stop(200, true, 3),
      {.name = "topology/pipeline", .unit = "items/s", .iterations = 20000, .python_iterations = 20000,
       .mpx = topology_pipeline,
       .python = "jobs = multiprocessing.Queue(256)\n"
                 "results = multiprocessing.Queue()\n"
                 "t0 = time.perf_counter()\n"
                 "sink = multiprocessing.Process(target=_pipeline_sink, args=(results, 4, n))\n"
                 "workers = [multiprocessing.Process(target=_pipeline_worker, args=(jobs, results)) for _ in "
                 "range(4)]\n"
                 "producer = multiprocessing.Process(target=_pipeline_producer, args=(jobs, 4, n))\n"
                 "for p in [sink] + workers + [producer]:\n"
                 "    p.start()\n"
                 "for p in [producer] + workers + [sink]:\n"
                 "    p.join()\n"
                 "return n / (time.perf_counter() - t0)\n",
       .note = "topology/pipeline: examples/topologies/pipeline.toml with n items (producer -> Queue(256) -> 4 "
               "workers -> sink), from start to the end of the run; Python: the same five multiprocessing.Process"},
      // The actors' queue operations are recorded where they happen.
      traced_workload("trace/pipeline", 20000, 0.25, topology_pipeline, "topology/pipeline", "a quarter",
                      "trace/pipeline: topology/pipeline with tracing on to a file sink"),
      {.name = "topology/poolmap", .unit = "tasks/s", .iterations = 200000, .mpx = topology_pool_map,
       .raw = [](int n) { return mpx_pool_map(n, 2, 1); },
       .raw_label = "not a raw floor: the same map on a Pool(2) owned by the calling process (pool/map1)",
       .note = "topology/poolmap: a task actor's map(square, range(n), chunksize=1) on the topology's pool of 2 "
               "workers, through its attached handle (results routed to the actor)"},
      {.name = "pool/map1", .unit = "tasks/s", .target = 10.0, .iterations = 200000, .python_iterations = 50000,
       .mpx = [](int n) { return mpx_pool_map(n, 2, 1); }, .python = python_map("1"),
       .note = "pool/map1: Pool(2).map(square, range(n), chunksize=1), the pool already started"},
      {.name = "pool/map", .unit = "tasks/s", .target = 2.0, .iterations = 2000000, .python_iterations = 2000000,
       .mpx = [](int n) { return mpx_pool_map(n, 2, std::nullopt); }, .python = python_map("None"),
       .note = "pool/map: Pool(2).map(square, range(n)) with the default chunksize ceil(n / (4 x workers))"},
      {.name = "pool/apply_async", .unit = "tasks/s", .target = 15.0, .iterations = 200000,
       .python_iterations = 30000, .mpx = mpx_pool_apply_batch,
       .python = python_pool_rate("multiprocessing.Pool(2)", "pool.apply(_square, (1,))",
                                  "rs = [pool.apply_async(_square, (i,)) for i in range(n)]\n"
                                  "for r in rs:\n"
                                  "    r.get()\n"),
       .note = "pool/apply_async: n apply_async(square, i) on Pool(2), then get() on each"},
      versus_round_trip(
          {.name = "pool/apply_serial", .unit = "us", .iterations = 20000,
           .python_iterations = 5000, .mpx = mpx_pool_apply_serial_us,
           .python = "with multiprocessing.Pool(2) as pool:\n"
                     "    for i in range(200):\n"
                     "        pool.apply_async(_square, (i,)).get()\n"
                     "    us = _measure_ms(n, lambda: pool.apply_async(_square, (3,)).get()) * 1000.0\n"
                     "return us\n",
           .note = "pool/apply_serial: one apply_async(square, i).get() at a time on Pool(2) (us each)"},
          1.5),
      {.name = "pool/64workers", .unit = "us/task", .raw_target = 1.0 / 1.5, .iterations = 100000,
       .mpx = [](int n) { return pool_map_us_per_task(n, 64); },
       .raw = [](int n) { return pool_map_us_per_task(n, 2); },
       .raw_label = "mpx itself with 2 workers: the same map(square, range(n), chunksize=1)",
       .note = "pool/64workers: map(square, range(n), chunksize=1) on Pool(64), per-task time; must stay within "
               "1.5x of Pool(2)'s"},
      {.name = "executor/submit", .unit = "tasks/s", .target = 30.0, .iterations = 200000,
       .python_iterations = 20000, .mpx = mpx_executor_submit,
       .python = "import concurrent.futures\n" +
                 python_pool_rate("concurrent.futures.ProcessPoolExecutor(2)", "pool.submit(_square, 1).result()",
                                  "fs = [pool.submit(_square, i) for i in range(n)]\n"
                                  "for f in fs:\n"
                                  "    f.result()\n"),
       .note = "executor/submit: n submit(square, i) on ProcessPoolExecutor(2), then result() on each"},
      // Many hosts: each runs in a fresh copy of this program, with its agents (above, "nodes").
      nodes_pool_tcp(),
      {.name = "nodes/queue", .unit = "items/s", .target = 10.0, .iterations = 20000, .python_iterations = 5000,
       .mpx = [](int n) { return first_figure(run_nodes_workload("queue", n)); },
       .python = "m = _QueueManager(address=('127.0.0.1', 0), authkey=b'mpx-bench')\n"
                 "m.start()\n"
                 "go = multiprocessing.Event()\n"
                 "rate = multiprocessing.Queue()\n"
                 "producer = multiprocessing.Process(target=_remote_producer, args=(m.address, go, n))\n"
                 "consumer = multiprocessing.Process(target=_remote_consumer, args=(m.address, go, rate, n))\n"
                 "producer.start()\n"
                 "consumer.start()\n"
                 "items_per_second = rate.get()\n"
                 "producer.join()\n"
                 "consumer.join()\n"
                 "m.shutdown()\n"
                 "return items_per_second\n",
       .note = "nodes/queue: a producer process on one node puts n 64-byte items on a Queue, a consumer process on "
               "another gets them (the coordinator on a third); items/s timed by the consumer, after 1000 untimed. "
               "Python: a multiprocessing.managers BaseManager serving a queue.Queue on 127.0.0.1, a producer and a "
               "consumer process connect()ed to it" + nodes_note_suffix},
      nodes_loss(loss, false),
      nodes_loss(loss, true),
      {.name = "nodes/bringup", .unit = "ms", .iterations = 5, .mpx = nodes_bringup,
       .raw = local_pool_first_result_ms,
       .raw_label = "not a raw floor: a local Pool(6) from its construction to its first result, in this process",
       .note = "nodes/bringup: ms from starting 3 agents (the coordinator already listening) to the first result of a "
               "Pool of 6 workers pinned to their 3 nodes; one fresh program per sample" + nodes_note_suffix},
      // Last: it leaves this process's heap grown.
      {.name = "queue/memory", .unit = "bytes/item",
       .raw_target = 1.0,  // raw is the limit itself: mpx must stay at or under it
       .iterations = 1000000, .mpx = mpx_queue_memory, .raw = [](int) { return queue_memory_limit; },
       .raw_label = "not measured: the fixed budget of 160 bytes per queued item",
       .note = "queue/memory: RSS growth of this process (the coordinator is a thread in it) with n 64-byte items "
               "queued, per item (n = --iterations; far below the default 1000000 pages dominate the figure)"},
  };
}

bool selected(const Workload& w, const std::vector<std::string>& only) {
  if (only.empty()) return true;
  const auto slash = w.name.find('/');
  for (const auto& o : only) {
    if (o == w.name) return true;
    if (slash != std::string::npos && (o == w.name.substr(0, slash) || o == w.name.substr(slash + 1))) return true;
  }
  return false;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string python_script(const std::vector<const Workload*>& list) {
  std::string script =
      "import json, os, statistics, sys, time, multiprocessing\n"
      "\n"
      "def _queue_producer(q, n):\n"
      "    item = b'x' * 64\n"
      "    for _ in range(n):\n"
      "        q.put(item)\n"
      "\n"
      "def _queue_producer_at(start, q, n):\n"
      "    start.wait()\n"
      "    _queue_producer(q, n)\n"
      "\n"
      "def _queue_consumer_at(start, q, n):\n"
      "    start.wait()\n"
      "    for _ in range(n):\n"
      "        q.get()\n"
      "\n"
      "def _pipe_echo(conn):\n"
      "    while True:\n"
      "        x = conn.recv()\n"
      "        if x is None:\n"
      "            break\n"
      "        conn.send(x)\n"
      "\n"
      "def _pipe_round_trip_us(n):\n"
      "    a, b = multiprocessing.Pipe()\n"
      "    p = multiprocessing.Process(target=_pipe_echo, args=(b,))\n"
      "    p.start()\n"
      "    for i in range(1000):\n"
      "        a.send(i)\n"
      "        a.recv()\n"
      "    def once():\n"
      "        a.send(1)\n"
      "        a.recv()\n"
      "    us = _measure_ms(n, once) * 1000.0\n"
      "    a.send(None)\n"
      "    p.join()\n"
      "    return us\n"
      "\n"
      "def _pipe_sender(conn, n):\n"
      "    for i in range(n):\n"
      "        conn.send(i)\n"
      "\n"
      "def _event_waiter(go, woke, count):\n"
      "    for _ in range(count):\n"
      "        go.wait()\n"
      "        t = time.monotonic_ns()\n"
      "        go.clear()\n"
      "        woke.put(t)\n"
      "\n"
      "def _event_wakeup_us(n):\n"
      "    go = multiprocessing.Event()\n"
      "    woke = multiprocessing.Queue()\n"
      "    p = multiprocessing.Process(target=_event_waiter, args=(go, woke, 200 + n))\n"
      "    p.start()\n"
      "    samples = []\n"
      "    for k in range(200 + n):\n"
      "        t0 = time.monotonic_ns()\n"
      "        go.set()\n"
      "        t1 = woke.get()\n"
      "        if k >= 200:\n"
      "            samples.append((t1 - t0) / 1000.0)\n"
      "    p.join()\n"
      "    return _summary(samples)\n"
      "\n"
      "def _pipeline_producer(jobs, workers, n):\n"
      "    for i in range(n):\n"
      "        jobs.put(i)\n"
      "    for _ in range(workers):\n"
      "        jobs.put(-1)\n"
      "\n"
      "def _pipeline_worker(jobs, results):\n"
      "    while True:\n"
      "        x = jobs.get()\n"
      "        if x == -1:\n"
      "            break\n"
      "        results.put(x * x)\n"
      "    results.put(-1)\n"
      "\n"
      "def _pipeline_sink(results, workers, n):\n"
      "    stops = 0\n"
      "    while stops < workers:\n"
      "        if results.get() == -1:\n"
      "            stops += 1\n"
      "\n"
      "def _summary(samples):\n"
      "    return statistics." + std::string(use_median ? "median" : "fmean") + "(samples)\n"
      "\n"
      "def _square(x):\n"
      "    return x * x\n"
      "\n"
      "def _measure_ms(n, once):\n"
      "    once()\n"
      "    times = []\n"
      "    for _ in range(n):\n"
      "        t0 = time.perf_counter()\n"
      "        once()\n"
      "        times.append((time.perf_counter() - t0) * 1000.0)\n"
      "    return _summary(times)\n"
      "\n"
      "def _shared_locked_add(start, v, n):\n"
      "    start.wait()\n"
      "    for _ in range(n):\n"
      "        with v.get_lock():\n"
      "            v.value += 1\n"
      "\n"
      "import multiprocessing.managers, queue\n"
      "\n"
      "_served = []\n"
      "\n"
      "def _served_queue():\n"
      "    if not _served:\n"
      "        _served.append(queue.Queue())\n"
      "    return _served[0]\n"
      "\n"
      "class _QueueManager(multiprocessing.managers.BaseManager):\n"
      "    pass\n"
      "\n"
      "_QueueManager.register('queue', callable=_served_queue)\n"
      "\n"
      "def _remote_queue(address):\n"
      "    m = _QueueManager(address=address, authkey=b'mpx-bench')\n"
      "    m.connect()\n"
      "    return m.queue()\n"
      "\n"
      "def _remote_producer(address, go, n):\n"
      "    q = _remote_queue(address)\n"
      "    item = b'x' * 64\n"
      "    for _ in range(1000):\n"
      "        q.put(item)\n"
      "    go.wait()\n"
      "    for _ in range(n):\n"
      "        q.put(item)\n"
      "\n"
      "def _remote_consumer(address, go, rate, n):\n"
      "    q = _remote_queue(address)\n"
      "    for _ in range(1000):\n"
      "        q.get()\n"
      "    go.set()\n"
      "    t0 = time.perf_counter()\n"
      "    for _ in range(n):\n"
      "        q.get()\n"
      "    rate.put(n / (time.perf_counter() - t0))\n";
  for (std::size_t i = 0; i < list.size(); ++i)
    script += "\ndef _w" + std::to_string(i) + "(n):\n" + indent(list[i]->python);
  script += "\nif __name__ == '__main__':\n    _results = {}\n";
  for (std::size_t i = 0; i < list.size(); ++i)
    script += "    _results['" + list[i]->name + "'] = _w" + std::to_string(i) + "(" +
              std::to_string(list[i]->python_iterations) + ")\n";
  script += "    print(json.dumps(_results))\n";
  return script;
}

// Runs every Python snippet in one interpreter and returns name -> value; empty if Python is missing or failed
// (its stderr reaches the terminal).
//
// `from_file` (the default) runs it as a script file, the way a user's program runs; `python3 -c` would flatter
// Python, because forkserver and spawn children would have no main script to re-import.
std::map<std::string, double> run_python(const std::string& python, const std::vector<const Workload*>& chosen,
                                         bool from_file) {
  std::map<std::string, double> results;
  std::vector<const Workload*> list;
  for (const Workload* w : chosen)
    if (!w->python.empty()) list.push_back(w);
  if (list.empty()) return results;
  const std::string script = python_script(list);
  std::string command = python + " -c " + shell_quote(script);
  std::string path;
  if (from_file) {
    path = (std::filesystem::temp_directory_path() / "mpx-bench-XXXXXX.py").string();
    const int fd = ::mkstemps(path.data(), 3);
    if (fd < 0 || ::write(fd, script.data(), script.size()) != static_cast<ssize_t>(script.size())) {
      std::cerr << "mpx-bench: cannot write the Python script to " << path << "\n";
      if (fd >= 0) ::close(fd);
      return results;
    }
    ::close(fd);
    command = python + " " + shell_quote(path);
  }
  std::fflush(nullptr);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return results;
  std::string output;
  char buffer[4096];
  std::size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
  const int status = ::pclose(pipe);
  if (!path.empty()) ::unlink(path.c_str());
  if (status != 0) {
    std::cerr << "mpx-bench: " << python << " failed (status " << status << "); python column left empty\n";
    return results;
  }
  // The output is one flat JSON object of name -> number.
  static const std::regex entry(R"re("([^"]+)"\s*:\s*([-+0-9.eE]+))re");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), entry); it != std::sregex_iterator(); ++it)
    results[(*it)[1].str()] = std::stod((*it)[2].str());
  return results;
}

struct Result {
  const Workload* workload = nullptr;
  double mpx = NAN;
  std::optional<double> python;
  std::optional<double> raw;

  // How many times better than Python mpx is (>1 is faster), whatever the unit.
  std::optional<double> ratio() const {
    if (!python || !(mpx > 0) || !(*python > 0)) return std::nullopt;
    return workload->higher_is_better() ? mpx / *python : *python / mpx;
  }
  // mpx's performance as a fraction of the raw floor's (1 is as fast as raw).
  std::optional<double> raw_fraction() const {
    if (!raw || !(mpx > 0) || !(*raw > 0)) return std::nullopt;
    return workload->higher_is_better() ? mpx / *raw : *raw / mpx;
  }
  bool has_python_target() const { return workload->target > 0; }
  bool pass() const {
    const bool python_ok = !has_python_target() || (ratio() && *ratio() >= workload->target);
    const bool raw_ok = !workload->raw_target || (raw_fraction() && *raw_fraction() >= *workload->raw_target);
    return python_ok && raw_ok;
  }
};

std::string number(std::optional<double> v, int precision = 3) {
  if (!v || std::isnan(*v)) return "n/a";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", precision, *v);
  return buffer;
}

std::string json_number(std::optional<double> v) {
  if (!v || !std::isfinite(*v)) return "null";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", *v);
  return buffer;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void print_json(const std::vector<Result>& results) {
  std::cout << "[\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    std::cout << "  {\"name\": " << json_string(r.workload->name) << ", \"unit\": " << json_string(r.workload->unit)
              << ", \"mpx\": " << json_number(r.mpx) << ", \"python\": " << json_number(r.python)
              << ", \"raw\": " << json_number(r.raw) << ", \"limit\": "
              << json_number(r.has_python_target() ? std::optional<double>(r.workload->target) : std::nullopt)
              << ", \"ratio\": " << json_number(r.ratio()) << ", \"raw_fraction\": " << json_number(r.raw_fraction())
              << ", \"raw_limit\": " << json_number(r.workload->raw_target)
              << ", \"higher_is_better\": " << (r.workload->higher_is_better() ? "true" : "false")
              << ", \"pass\": " << (r.pass() ? "true" : "false")
              << "}" << (i + 1 < results.size() ? "," : "") << "\n";
  }
  std::cout << "]\n";
}

void print_table(const std::vector<Result>& results) {
  std::string unit = results.empty() ? "ms" : results.front().workload->unit;
  for (const auto& r : results)
    if (r.workload->unit != unit) unit.clear();
  const auto head = [&](const char* column) {
    return unit.empty() ? std::string(column) : std::string(column) + " (" + unit + ")";
  };
  const auto cell = [&](const Result& r, std::optional<double> v) {
    return unit.empty() && v ? number(v) + " " + r.workload->unit : number(v);
  };
  std::printf("%-20s %16s %16s %16s %9s %7s %8s %7s  %s\n", "workload", head("mpx").c_str(), head("python").c_str(),
              head("raw").c_str(), "vs python", "target", "of raw", "target", "result");
  for (const auto& r : results) {
    const std::string raw_fraction = r.raw_fraction() ? number(*r.raw_fraction() * 100.0, 0) + "%" : "-";
    const std::string raw_target = r.workload->raw_target ? ">=" + number(*r.workload->raw_target * 100.0, 0) + "%" : "-";
    const std::string vs_python = r.ratio() ? number(r.ratio(), 1) + "x" : "-";
    const std::string python_target = r.has_python_target() ? ">=" + number(r.workload->target, 0) + "x" : "-";
    const std::string python = r.python ? cell(r, r.python) : r.workload->python.empty() ? "-" : "n/a";
    std::printf("%-20s %16s %16s %16s %9s %7s %8s %7s  %s\n", r.workload->name.c_str(), cell(r, r.mpx).c_str(),
                python.c_str(), cell(r, r.raw).c_str(), vs_python.c_str(), python_target.c_str(), raw_fraction.c_str(),
                raw_target.c_str(), r.has_python_target() && !r.python ? "SKIP (no python)" : r.pass() ? "PASS" : "MISS");
  }
  std::printf("vs python: how many times better than Python mpx is (target \"-\": Python is a reference only); of raw: "
              "mpx's performance as a share of the raw column's (for latency and memory: raw/mpx)\n");
  std::map<std::string, std::vector<std::string>> legend;
  for (const auto& r : results)
    if (r.raw) legend[r.workload->raw_label].push_back(r.workload->name);
  for (const auto& [label, names] : legend) {
    std::string joined;
    for (const auto& n : names) joined += (joined.empty() ? "" : ", ") + n;
    std::printf("raw for %s: %s\n", joined.c_str(), label.c_str());
  }
  for (const auto& r : results)
    if (!r.workload->note.empty()) std::printf("%s\n", r.workload->note.c_str());
  std::printf("each number is the %s of the timed iterations, after one warm-up\n", use_median ? "median" : "mean");
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  // A fresh copy that runs one node workload (run_nodes_workload).
  if (argc > 1 && std::string_view(argv[1]) == nodes_workload_flag) return nodes_workload_main(argc, argv);

  CLI::App app{"mpx-bench: mpx against Python's multiprocessing and raw C, measured in the same run"};
  app.set_version_flag("--version", "mpx-bench (mpx) " + std::string(mpx::version()));
  std::optional<int> iterations;
  std::optional<int> python_iterations;
  std::vector<std::string> only;
  bool json = false;
  bool list = false;
  bool check = false;
  std::string python = "python3";
  bool python_inline = false;
  app.add_option("--iterations,-n", iterations, "timed mpx and raw iterations per workload (default: per workload)")
      ->check(CLI::PositiveNumber);
  app.add_option("--python-iterations", python_iterations,
                 "timed Python iterations per workload (default: per workload, at most --iterations)")
      ->check(CLI::PositiveNumber);
  app.add_option("--only", only, "run only this workload: a full name (process/fork), a group (process) or a "
                                 "variant (fork); repeatable");
  app.add_flag("--json", json,
               "print results as a JSON array of {name, unit, mpx, python, raw, limit, ratio, raw_fraction, "
               "raw_limit, higher_is_better, pass}. mpx, python, raw: the three measurements in `unit` (null when not "
               "measured). raw is the raw floor measured in this run, except for queue/8to8 (mpx's own queue/1to1 "
               "throughput measured in this run; the target is half of it) and queue/memory (not a measurement: the "
               "fixed budget, 160 bytes per item). limit: the python/mpx target, null when Python is only a "
               "reference. ratio: how many times better than Python mpx is (python/mpx for latency, mpx/python for "
               "throughput). raw_fraction: mpx's performance as a share of raw's (raw/mpx for latency and memory, "
               "mpx/raw for throughput); raw_limit: the share it must reach, null when none. higher_is_better: "
               "whether the unit is a throughput. pass: every target that is set is met");
  app.add_flag("--list", list, "list the workloads and exit");
  app.add_flag("--median", use_median, "report the median of the timed iterations instead of the mean");
  app.add_flag("--check", check, "exit with status 1 if a workload misses its target");
  app.add_option("--python", python, "the Python interpreter to compare with");
  app.add_flag("--python-inline", python_inline,
               "run the Python side with `python3 -c` instead of as a script file. A script file is the default "
               "because that is how a user's program runs (forkserver and spawn children re-import it); -c flatters "
               "Python");
  CLI11_PARSE(app, argc, argv);

  std::vector<Workload> all = workloads();
  if (list) {
    for (const auto& w : all)
      std::printf("%-20s target python/mpx %s, of raw %s, %d iterations (python %s)\n", w.name.c_str(),
                  w.target > 0 ? (">= " + number(w.target, 1) + "x").c_str() : "-",
                  w.raw_target ? (">= " + number(*w.raw_target * 100.0, 0) + "%").c_str() : "-", w.iterations,
                  w.python.empty() ? "-" : std::to_string(w.python_iterations).c_str());
    return 0;
  }

  std::vector<const Workload*> chosen;
  for (auto& w : all) {
    if (!selected(w, only)) continue;
    if (iterations) {
      w.iterations = *iterations;
      w.python_iterations = std::min(w.python_iterations, *iterations);
    }
    if (python_iterations) w.python_iterations = *python_iterations;
    chosen.push_back(&w);
  }
  if (chosen.empty()) {
    std::cerr << "mpx-bench: no workload matches --only; see --list\n";
    return 2;
  }

  std::vector<Result> results;
  for (const Workload* w : chosen) {
    std::cerr << "measuring " << w->name << ": mpx x" << w->iterations << std::flush;
    Result r;
    r.workload = w;
    r.mpx = w->mpx(w->iterations);
    if (w->raw) {
      std::cerr << ", raw x" << w->iterations << std::flush;
      r.raw = w->raw(w->iterations);
    }
    std::cerr << "\n";
    results.push_back(r);
  }
  std::cerr << "measuring python (" << python << (python_inline ? " -c script" : " script.py")
            << ", one interpreter for all workloads)\n";
  const auto python_results = run_python(python, chosen, !python_inline);
  for (auto& r : results) {
    const auto it = python_results.find(r.workload->name);
    if (it != python_results.end()) r.python = it->second;
  }

  if (json)
    print_json(results);
  else
    print_table(results);

  if (check)
    for (const auto& r : results)
      if (!r.pass()) return 1;
  return 0;
}
