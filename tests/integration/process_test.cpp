// mpx::Process with real processes under every start method.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "children.hpp"

#include "runtime/launcher.hpp"
#include "runtime/runtime.hpp"

using namespace std::chrono_literals;

namespace {

void do_nothing() {}
void exit_with(int code) { std::exit(code); }
void throw_runtime(std::string message) { throw std::runtime_error(message); }
void throw_int() { throw 42; }
void sleep_forever() {
  for (;;) ::pause();
}
void sleep_for_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
// Exits with a code that proves the arguments and the identity arrived.
void check_identity(std::string expected_name, bool expected_daemon, int parent_pid) {
  auto me = mpx::current_process();
  auto parent = mpx::parent_process();
  int code = 0;
  if (me.name() != expected_name) code |= 1;
  if (me.daemon() != expected_daemon) code |= 2;
  if (!parent || parent->pid() != parent_pid) code |= 4;
  if (me.pid() != ::getpid()) code |= 8;
  std::exit(code == 0 ? 42 : code);
}

const mpx::StartMethod all_methods[] = {mpx::StartMethod::fork, mpx::StartMethod::forkserver,
                                        mpx::StartMethod::spawn};

mpx::StartMethod pick_method() {
  auto i = GENERATE(0, 1, 2);
  return all_methods[i];
}

}  // namespace

TEST_CASE("exit codes for every kind of ending", "[process]") {
  const auto method = pick_method();
  const mpx::Context ctx(method);
  INFO("start method " << mpx::to_string(method));

  auto normal = ctx.Process(do_nothing);
  normal.start();
  normal.join();
  CHECK(normal.exitcode() == 0);
  CHECK_FALSE(normal.exception().has_value());

  auto exits = ctx.Process(exit_with, 7);
  exits.start();
  exits.join();
  CHECK(exits.exitcode() == 7);

  auto raises = ctx.Process(throw_runtime, "boom");
  raises.start();
  raises.join();
  CHECK(raises.exitcode() == 1);
  auto error = raises.exception();
  REQUIRE(error.has_value());
  CHECK(error->type() == "std::runtime_error");
  CHECK(error->message() == "boom");
  CHECK(error->pid() == raises.pid());

  auto raises_int = ctx.Process(throw_int);
  raises_int.start();
  raises_int.join();
  CHECK(raises_int.exitcode() == 1);
  REQUIRE(raises_int.exception().has_value());
  CHECK(raises_int.exception()->type() == "int");

  auto killed = ctx.Process(sleep_forever);
  killed.start();
  CHECK(killed.is_alive());
  killed.kill();
  killed.join();
  CHECK(killed.exitcode() == -SIGKILL);
  CHECK_FALSE(killed.is_alive());
}

TEST_CASE("join with a timeout on a sleeping child returns, then the child is still alive", "[process]") {
  const mpx::Context ctx(pick_method());
  auto p = ctx.Process(sleep_forever);
  p.start();
  const auto begin = std::chrono::steady_clock::now();
  CHECK_FALSE(p.join(0.2s));
  const auto waited = std::chrono::steady_clock::now() - begin;
  CHECK(waited >= 190ms);
  CHECK(waited < 30s);  // generous: only proves join(timeout) does not hang
  CHECK(p.is_alive());
  CHECK_FALSE(p.exitcode().has_value());
  p.terminate();
  CHECK(p.join(30s));
  CHECK(p.exitcode() == -SIGTERM);
}

TEST_CASE("terminate, kill and interrupt end the child with the matching signal", "[process]") {
  const mpx::Context ctx(pick_method());
  auto t = ctx.Process(sleep_forever);
  auto k = ctx.Process(sleep_forever);
  auto i = ctx.Process(sleep_forever);
  auto s = ctx.Process(sleep_forever);
  t.start();
  k.start();
  i.start();
  s.start();
  t.terminate();
  k.kill();
  i.interrupt();
  s.send_signal(SIGUSR1);
  for (auto* p : {&t, &k, &i, &s}) CHECK(p->join(30s));
  CHECK(t.exitcode() == -SIGTERM);
  CHECK(k.exitcode() == -SIGKILL);
  CHECK(i.exitcode() == -SIGINT);
  CHECK(s.exitcode() == -SIGUSR1);
  for (auto* p : {&t, &k, &i, &s}) CHECK_FALSE(p->is_alive());
  // Signalling a reaped process is a no-op, never a signal to a recycled pid.
  t.kill();
  CHECK(t.exitcode() == -SIGTERM);
}

TEST_CASE("the child knows its name, daemon flag and parent", "[process]") {
  const auto method = pick_method();
  mpx::ProcessOptions options;
  options.name = "worker-x";
  options.daemon = true;
  options.method = method;
  mpx::Process p(options, check_identity, "worker-x", true, static_cast<int>(::getpid()));
  CHECK(p.name() == "worker-x");
  CHECK(p.daemon());
  p.start();
  p.join();
  CHECK(p.exitcode() == 42);
}

TEST_CASE("the sentinel becomes readable when the child ends", "[process]") {
  const mpx::Context ctx(pick_method());
  auto p = ctx.Process(sleep_for_ms, 50);
  CHECK(p.sentinel() == -1);
  p.start();
  pollfd fd{p.sentinel(), POLLIN, 0};
  REQUIRE(fd.fd >= 0);
  CHECK(::poll(&fd, 1, 30000) == 1);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("misuse gets a ProcessError that says what was wrong", "[process]") {
  mpx::Process p(sleep_forever);
  CHECK_THROWS_WITH(p.join(), Catch::Contains("not been started"));
  p.start();
  CHECK_THROWS_WITH(p.start(), Catch::Contains("twice"));
  CHECK_THROWS_WITH(p.set_daemon(true), Catch::Contains("active process"));
  CHECK_THROWS_WITH(p.close(), Catch::Contains("still running"));
  p.kill();
  p.join();
  p.close();
  CHECK_THROWS_WITH(p.is_alive(), Catch::Contains("closed"));
  CHECK_THROWS_WITH(mpx::current_process().join(), Catch::Contains("current process"));
  CHECK_THROWS_AS(mpx::get_context("threads"), std::invalid_argument);
  CHECK_THROWS_WITH(mpx::set_start_method("vfork"), Catch::Contains("'vfork'"));
}

TEST_CASE("set_start_method refuses a second call unless forced", "[process]") {
  const auto before = mpx::get_start_method();
  mpx::set_start_method(mpx::StartMethod::spawn, true);
  CHECK(mpx::get_start_method() == mpx::StartMethod::spawn);
  CHECK_THROWS_WITH(mpx::set_start_method(mpx::StartMethod::fork), Catch::Contains("already been set"));
  mpx::Process p(exit_with, 5);
  CHECK(p.start_method() == mpx::StartMethod::spawn);
  p.start();
  p.join();
  CHECK(p.exitcode() == 5);
  mpx::set_start_method(before, true);
  const auto all = mpx::get_all_start_methods();
  CHECK(all.size() == 3);
}

TEST_CASE("a closure that captures state runs under fork and is refused elsewhere", "[process]") {
  int captured = 17;
  mpx::ProcessOptions fork_options;
  fork_options.method = mpx::StartMethod::fork;
  mpx::Process p(mpx::closure, [captured] { std::exit(captured); }, fork_options);
  p.start();
  p.join();
  CHECK(p.exitcode() == 17);

  mpx::ProcessOptions spawn_options;
  spawn_options.method = mpx::StartMethod::spawn;
  mpx::Process q(mpx::closure, [captured] { std::exit(captured); }, spawn_options);
  CHECK_THROWS_WITH(q.start(), Catch::Contains("only the fork start method"));
}

namespace {
struct Squarer : mpx::ProcessClass<Squarer> {
  Squarer() = default;
  explicit Squarer(int value) : value(value) {}
  int value = 0;
  void run() override {
    // The exit code proves the member arrived and the base knows who it is.
    const bool named = name().rfind("Squarer-", 0) == 0 && pid() == ::getpid();
    std::exit(named ? value * value : 1);
  }
  MSGPACK_DEFINE(value);
};
}  // namespace

TEST_CASE("a ProcessClass subclass overriding run() works under every start method", "[process]") {
  const auto method = pick_method();
  INFO("start method " << mpx::to_string(method));
  mpx::set_start_method(method, true);
  std::vector<Squarer> squarers;
  for (int i = 2; i <= 4; ++i) squarers.emplace_back(i);
  for (auto& s : squarers) s.start();
  for (auto& s : squarers) s.join();
  CHECK(squarers[0].exitcode() == 4);
  CHECK(squarers[1].exitcode() == 9);
  CHECK(squarers[2].exitcode() == 16);
  CHECK(squarers[0].name().rfind("Squarer-", 0) == 0);
  mpx::set_start_method(mpx::StartMethod::forkserver, true);
}

TEST_CASE("active_children lists live children and reaps the ended ones", "[process]") {
  const mpx::Context ctx(pick_method());
  auto alive = ctx.Process(sleep_forever);
  auto quick = ctx.Process(do_nothing);
  alive.start();
  quick.start();
  // quick ends by itself; wait for it through its sentinel, without joining.
  pollfd fd{quick.sentinel(), POLLIN, 0};
  REQUIRE(::poll(&fd, 1, 30000) == 1);
  auto children = mpx::active_children();
  REQUIRE(children.size() == 1);
  CHECK(children[0].pid() == alive.pid());
  CHECK(quick.exitcode() == 0);
  children[0].kill();
  alive.join();
  CHECK(alive.exitcode() == -SIGKILL);
  CHECK(mpx::active_children().empty());
}

TEST_CASE("cpu_count and current_process in the main process", "[process]") {
  CHECK(mpx::cpu_count() >= 1);
  CHECK(mpx::current_process().name() == "MainProcess");
  CHECK(mpx::current_process().is_alive());
  CHECK_FALSE(mpx::parent_process().has_value());
}

// ---- negative timeouts, the forkserver's life, inherited start methods, exit handlers ----

namespace {

// Waits up to `limit` for process `pid` to end (its pidfd turns readable); true if it ended.
bool ends_within(pid_t pid, std::chrono::milliseconds limit) {
  const int fd = mpx::runtime::pidfd_open(pid);
  if (fd < 0) return true;  // already gone
  pollfd p{fd, POLLIN, 0};
  const bool ended = ::poll(&p, 1, static_cast<int>(limit.count())) == 1;
  ::close(fd);
  return ended;
}

int twice(int x) { return 2 * x; }

// What a freshly started process and a Pool can do, under forkserver.
void check_forkserver_works() {
  auto p = mpx::get_context("forkserver").Process(exit_with, 5);
  REQUIRE_NOTHROW(p.start());
  REQUIRE(p.join(60s));
  CHECK(p.exitcode() == 5);
  mpx::Pool pool(2);
  CHECK(pool.map(twice, std::vector<int>{1, 2, 3}) == std::vector<int>{2, 4, 6});
}

void report_own_method_only(mpx::Queue<std::string> out) {
  out.put(std::string(mpx::to_string(mpx::get_start_method())));
}

void report_methods(mpx::Queue<std::string> out) {
  out.put(std::string(mpx::to_string(mpx::get_start_method())));
  mpx::Process grandchild(report_own_method_only, out);
  out.put(std::string(mpx::to_string(grandchild.start_method())));
  grandchild.start();
  grandchild.join();
  if (grandchild.exitcode() != 0) std::exit(3);
}

std::string exit_marker_path(pid_t parent) {
  return (std::filesystem::temp_directory_path() / ("mpx-process-test-atexit-" + std::to_string(parent))).string();
}

void append_to(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::app) << text << "\n";
}

pid_t inherited_handler_owner = 0;
void inherited_handler() {
  // Registered by the test process: it must never run in a child (its own exit writes nothing).
  if (::getpid() != inherited_handler_owner) append_to(exit_marker_path(inherited_handler_owner), "inherited");
}
void child_handler() { append_to(exit_marker_path(mpx::parent_process()->pid()), "child"); }
void register_exit_handler() { std::atexit(&child_handler); }

std::vector<std::string> read_lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("zero and negative timeouts do not wait: join", "[process][timeout]") {
  const mpx::Context ctx(pick_method());
  auto p = ctx.Process(sleep_forever);
  p.start();
  for (const auto timeout : {-1.0, -0.001, 0.0}) {
    const auto begin = std::chrono::steady_clock::now();
    CHECK_FALSE(p.join(std::chrono::duration<double>(timeout)));
    CHECK(std::chrono::steady_clock::now() - begin < 5s);  // before the fix a negative timeout waited forever
  }
  CHECK(p.is_alive());
  p.kill();
  CHECK(p.join(30s));
  CHECK(p.exitcode() == -SIGKILL);
}

TEST_CASE("the forkserver ignores SIGINT: a terminal Ctrl-C leaves it serving", "[process][forkserver]") {
  const pid_t forkserver = mpx::runtime::state().zygote_pid;
  REQUIRE(forkserver > 0);
  REQUIRE(::kill(forkserver, SIGINT) == 0);
  CHECK_FALSE(ends_within(forkserver, 300ms));
  check_forkserver_works();
}

TEST_CASE("a forkserver killed by SIGKILL is replaced by the next start", "[process][forkserver]") {
  for (int round = 0; round < 2; ++round) {
    const pid_t forkserver = mpx::runtime::state().zygote_pid;
    REQUIRE(forkserver > 0);
    REQUIRE(::kill(forkserver, SIGKILL) == 0);
    REQUIRE(ends_within(forkserver, 30s));
    check_forkserver_works();
    CHECK(mpx::runtime::state().zygote_pid != forkserver);
  }
  // The new forkserver ignores SIGINT too.
  const pid_t replacement = mpx::runtime::state().zygote_pid;
  REQUIRE(::kill(replacement, SIGINT) == 0);
  CHECK_FALSE(ends_within(replacement, 300ms));
  check_forkserver_works();
}

TEST_CASE("a child's start method is the one that started it, and its children inherit it", "[process]") {
  const auto method = pick_method();
  INFO("start method " << mpx::to_string(method));
  mpx::Queue<std::string> out;
  auto child = mpx::Context(method).Process(report_methods, out);
  child.start();
  const std::string name(mpx::to_string(method));
  CHECK(out.get(true, 60s) == name);  // the child's get_start_method()
  CHECK(out.get(true, 60s) == name);  // the grandchild's start_method(), before it starts
  CHECK(out.get(true, 60s) == name);  // the grandchild's own get_start_method()
  REQUIRE(child.join(60s));
  CHECK(child.exitcode() == 0);
}

TEST_CASE("a child that returns runs the atexit handlers it registered, not the ones inherited", "[process][atexit]") {
  const auto method = pick_method();
  INFO("start method " << mpx::to_string(method));
  const std::string path = exit_marker_path(::getpid());
  std::filesystem::remove(path);
  static const bool registered = [] {
    inherited_handler_owner = ::getpid();
    std::atexit(&inherited_handler);
    return true;
  }();
  (void)registered;
  auto child = mpx::Context(method).Process(register_exit_handler);
  child.start();
  REQUIRE(child.join(60s));
  CHECK(child.exitcode() == 0);
  CHECK(read_lines_of(path) == std::vector<std::string>{"child"});
  std::filesystem::remove(path);
}

namespace {

void started_then_sleep(mpx::Event started) {
  started.set();
  std::this_thread::sleep_for(30s);
}

}  // namespace

// The helper, run only by name as its own root session in its own process group: a Pool map that the test interrupts
// with a SIGINT to the whole group (a terminal's Ctrl-C), then a forkserver start and a new Pool.
TEST_CASE("process ctrl-c session helper", "[.]") {
  const char* fd_text = std::getenv("MPX_CTRLC_HELPER_FD");
  if (fd_text == nullptr) return;
  const int fd = std::atoi(fd_text);
  mpx::Event started;
  std::thread report_started([&] {
    if (started.wait(60s)) (void)!::write(fd, "m", 1);
  });
  {
    mpx::Pool pool(2);
    std::vector<std::tuple<mpx::Event>> args(4, {started});
    CHECK_THROWS_AS(pool.starmap(started_then_sleep, args), mpx::Interrupted);
  }
  report_started.join();
  check_forkserver_works();
  ::close(fd);
}

TEST_CASE("after a Ctrl-C to the process group interrupts a Pool, Process::start and a Pool still work",
          "[process][forkserver]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t session = mpx_test::spawn_session("process ctrl-c session helper",
                                                {"MPX_CTRLC_HELPER_FD=" + std::to_string(fds[1])}, fds[0], true);
  ::close(fds[1]);
  pollfd readable{fds[0], POLLIN, 0};
  const bool map_running = ::poll(&readable, 1, 60000) == 1;
  char byte = 0;
  const bool told = map_running && ::read(fds[0], &byte, 1) == 1 && byte == 'm';
  ::close(fds[0]);
  CHECK(told);
  ::kill(-session, SIGINT);  // as a terminal does: the session's root, its forkserver and its workers
  const bool ended = ends_within(session, 120s);
  if (!ended) ::kill(-session, SIGKILL);
  int status = 0;
  ::waitpid(session, &status, 0);
  REQUIRE(ended);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // the helper's checks passed
}
