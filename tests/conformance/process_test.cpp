// Conformance: the behaviours CPython's own tests check (Lib/test/_test_multiprocessing.py, test_concurrent_futures),
// through mpx's public API only. One TEST_CASE per CPython test, named after it.
//
// This file: Process and its helpers (_TestProcess, _TestSubclassingProcess, TestStartMethod, TestCloseFds,
// TestStdinBadfiledescriptor, _TestAtExit, TestInitializers).
#include <catch2/catch.hpp>
#include <mpx/mpx.hpp>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.hpp"

using namespace std::chrono_literals;
using conformance::Stopwatch;
using conformance::wait_until;
using conformance::with;

namespace {

// Sets the start method for one test and puts the previous one back, on failure paths too.
class StartMethodScope {
 public:
  explicit StartMethodScope(mpx::StartMethod method) : previous_(mpx::get_start_method()) {
    mpx::set_start_method(method, true);
  }
  ~StartMethodScope() { mpx::set_start_method(previous_, true); }
  StartMethodScope(const StartMethodScope&) = delete;
  StartMethodScope& operator=(const StartMethodScope&) = delete;

 private:
  mpx::StartMethod previous_;
};

bool in_active_children(const mpx::Process& p) {
  const auto children = mpx::active_children();
  return std::any_of(children.begin(), children.end(), [&](const mpx::Process& c) { return c.pid() == p.pid(); });
}

// A file name no other test run uses; the caller removes it.
std::string scratch_path(const std::string& what) {
  static int counter = 0;
  return (std::filesystem::temp_directory_path() /
          ("mpx-conformance-" + what + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter)))
      .string();
}

void do_nothing() {}
void exit_with(int code) { std::exit(code); }
void sleep_forever() {
  for (;;) ::pause();
}
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
void set_event(mpx::Event event) { event.set(); }
void wait_event(mpx::Event event) { (void)event.wait(); }

void echo_arg(mpx::Queue<mpx::Object> q, mpx::Object arg) { q.put(arg); }

// _TestProcess._test: what the child knows about its arguments and itself.
void report_identity(mpx::Queue<mpx::Object> q, mpx::Object args, mpx::Object kwargs) {
  auto me = mpx::current_process();
  q.put(args);
  q.put(kwargs);
  q.put(me.name());
  q.put(static_cast<std::int64_t>(me.pid()));
}

void send_parent(mpx::Connection w) {
  auto parent = mpx::parent_process();
  if (parent) w.send(mpx::Object::list({static_cast<std::int64_t>(parent->pid()), parent->name()}));
  else w.send(mpx::Object());
}

void report_parent_status(mpx::Connection w) {
  auto parent = mpx::parent_process();
  w.send(mpx::Object::list({parent && parent->is_alive() ? "alive" : "not alive", static_cast<std::int64_t>(::getpid())}));
  if (parent) (void)parent->join(60s);
  w.send(mpx::Object::list({parent && parent->is_alive() ? "alive" : "not alive", static_cast<std::int64_t>(::getpid())}));
}

// Start methods travel as ints: the enum has no msgpack adaptor.
mpx::StartMethod method_of(int method) { return static_cast<mpx::StartMethod>(method); }

void create_grandchild(mpx::Connection w, int method) {
  mpx::Process p(with(method_of(method)), report_parent_status, w);
  p.start();
  sleep_forever();
}

void put_main_thread_id(mpx::Queue<std::int64_t> q) { q.put(static_cast<std::int64_t>(::gettid())); }

void set_event_then_sleep(mpx::Event event) {
  event.set();
  sleep_forever();
}

void set_event_then_sleep_no_int_handler(mpx::Event event) {
  std::signal(SIGINT, SIG_DFL);
  set_event_then_sleep(event);
}

// _TestProcess._kill_process: starts `target`, checks the waits that must not wait, ends it with `end`, and returns
// its exit code.
int kill_process(void (*end)(mpx::Process&), void (*target)(mpx::Event), mpx::StartMethod method) {
  mpx::Event event;
  mpx::Process p(with(method, true), target, event);
  p.start();
  CHECK(p.is_alive());
  CHECK(in_active_children(p));
  CHECK_FALSE(p.exitcode().has_value());

  Stopwatch join;
  CHECK_FALSE(p.join(0s));
  CHECK(join.seconds() < 5);  // generous: "returns at once" on a loaded machine
  CHECK(p.is_alive());

  join.restart();
  CHECK_FALSE(p.join(-1s));
  CHECK(join.seconds() < 5);
  CHECK(p.is_alive());

  if (!event.wait(60s)) {
    p.kill();
    p.join();
    FAIL("event not signaled in 60 seconds");
  }
  end(p);
  REQUIRE(p.join(30s));  // Python guards this join with alarm(10)
  CHECK_FALSE(p.is_alive());
  CHECK_FALSE(in_active_children(p));
  p.join();
  return p.exitcode().value_or(999);
}

void recurse(mpx::Connection w, std::vector<int> id, int method) {
  w.send(id);
  if (id.size() < 2) {
    for (int i = 0; i < 2; ++i) {
      auto next = id;
      next.push_back(i);
      mpx::Process p(with(method_of(method)), recurse, w, next, method);
      p.start();
      p.join();
    }
  }
}

void wait_event_10s(mpx::Event event) { (void)event.wait(10s); }

void get_then_exit(mpx::Queue<int> q, int code) {
  (void)q.get();
  std::exit(code);
}

int open_fd_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

void report_fd_count(mpx::Event event, mpx::Queue<int> q) {
  q.put(open_fd_count());
  (void)event.wait();
}

// Points `fd` at a stream whose writes fail: a pipe nobody reads (EPIPE) or /dev/full (ENOSPC).
enum class Broken { closed_pipe, full_device };
int broken_stream(Broken how) {
  if (how == Broken::full_device) return ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) return -1;
  ::close(ends[0]);
  return ends[1];
}

void break_own_stream_then_set(mpx::Event event, int fd, bool remove) {
  if (remove) {
    ::close(fd);
  } else {
    const int broken = broken_stream(Broken::closed_pipe);
    ::dup2(broken, fd);
    ::close(broken);
  }
  event.set();
}

void set_event_after(mpx::Event event, int delay_ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  event.set();
}

// The forkserver zygote of this process: mpx names it "mpx-forkserver".
std::optional<pid_t> forkserver_pid() {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isdigit(c); })) {
      continue;
    }
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    if (line.substr(open + 1, close - open - 1) != "mpx-forkserver") continue;
    std::istringstream rest(line.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == ::getpid() && state != 'Z') return static_cast<pid_t>(std::stoi(name));
  }
  return std::nullopt;
}

// Whether `signum` is still pending for `pid` (for the process or any of its threads' shared set).
bool signal_pending(pid_t pid, int signum) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  const std::uint64_t bit = std::uint64_t{1} << (signum - 1);
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("SigPnd:") || line.starts_with("ShdPnd:")) {
      if (std::stoull(line.substr(7), nullptr, 16) & bit) return true;
    }
  }
  return false;
}

void check_forkserver_death(int signum) {
  const StartMethodScope scope(mpx::StartMethod::forkserver);
  // Python's _forkserver.ensure_running(): a process started through it proves it serves (and has named itself).
  mpx::Process first(do_nothing);
  first.start();
  REQUIRE(first.join(60s));
  const auto zygote = forkserver_pid();
  REQUIRE(zygote.has_value());

  mpx::Event event;
  mpx::Process proc(set_event_after, event, 500);
  proc.start();

  REQUIRE(::kill(*zygote, signum) == 0);
  // Python sleeps "to give the forkserver time to die". It may also survive a catchable signal (Python's ignores
  // SIGINT): wait until the signal was dealt with, one way or the other.
  REQUIRE(wait_until([&] { return conformance::pid_gone(*zygote) || !signal_pending(*zygote, signum); }));
  if (signum == SIGKILL) REQUIRE(wait_until([&] { return conformance::pid_gone(*zygote); }));

  mpx::Event event2;
  mpx::Process proc2(set_event_after, event2, 0);
  proc2.start();
  REQUIRE(proc2.join(60s));
  CHECK(event2.is_set());
  CHECK(proc2.exitcode() == 0);

  REQUIRE(proc.join(60s));
  CHECK(event.is_set());
  const int code = proc.exitcode().value_or(-999);
  CHECK((code == 0 || code == 255));
}

// _UpperCaser: a Process subclass that owns both ends of a pipe.
struct UpperCaser : mpx::ProcessClass<UpperCaser> {
  UpperCaser() = default;  // what spawn and forkserver rebuild in the child, before reading the members
  static UpperCaser with_pipe() {
    UpperCaser u;
    auto [child, parent] = mpx::Pipe();
    u.child_conn = child;
    u.parent_conn = parent;
    return u;
  }

  void run() override {
    parent_conn->close();
    for (;;) {
      auto s = child_conn->recv();
      if (s.is_none()) break;
      std::string upper = s.as_string();
      std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
      child_conn->send(upper);
    }
    child_conn->close();
  }

  std::string submit(const std::string& s) {
    parent_conn->send(s);
    return parent_conn->recv<std::string>();
  }

  void stop() {
    parent_conn->send(mpx::Object());
    parent_conn->close();
    child_conn->close();
  }

  std::optional<mpx::Connection> child_conn;
  std::optional<mpx::Connection> parent_conn;
  MSGPACK_DEFINE(child_conn, parent_conn);
};

void throw_with_stderr_in(std::string path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) std::exit(3);
  ::dup2(fd, 2);
  throw std::runtime_error("division by zero # MARKER");
}

void send_start_method(mpx::Connection w) { w.send(std::string(mpx::to_string(mpx::get_start_method()))); }

// TestStartMethod.check_context: a child started by `p` reports the start method it sees.
void check_context(mpx::Process p, mpx::Connection r, const std::string& expected) {
  p.start();
  const auto child_method = r.recv<std::string>();
  r.close();
  p.join();
  CHECK(child_method == expected);
}

void put_and_close(mpx::Queue<int> q) {
  q.put(1);
  q.close();
}

void put_one(mpx::Queue<int> q) { q.put(1); }

void put_two_and_nest_once(mpx::Queue<int> q) {
  q.put(2);
  mpx::Process p(put_one, q);
  p.start();
  p.join();
}

void report_fd_state(mpx::Connection conn, int fd) {
  struct stat st {};
  conn.send(::fstat(fd, &st) == 0 ? 0 : errno);
}

// A socket whose descriptor is at least 50, so that a fresh child has nothing that high of its own.
int high_socket_fd() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);  // inheritable, as C++ descriptors are by default
  std::vector<int> to_close;
  while (fd >= 0 && fd < 50) {
    to_close.push_back(fd);
    fd = ::dup(fd);
  }
  for (int x : to_close) ::close(x);
  return fd;
}

void get_nowait_ignoring_empty(mpx::Queue<int> q) {
  try {
    (void)q.get(false);
  } catch (const mpx::Empty&) {
  }
}

void queue_in_process() {
  mpx::Queue<int> q;
  mpx::Process sub(mpx::ProcessOptions{"", true, std::nullopt}, get_nowait_ignoring_empty, q);
  sub.start();
  sub.join();
  if (sub.exitcode() != 0) std::exit(3);
}

int square(int x) { return x * x; }

void pool_in_process() {
  mpx::Pool pool(2);
  const auto x = pool.map(square, std::vector<int>{1, 2, 3, 4, 5, 6, 7});
  pool.close();
  pool.join();
  if (x != std::vector<int>{1, 4, 9, 16, 25, 36, 49}) std::exit(3);
}

void write_file_at_exit(std::string path) {
  static std::string where;
  where = std::move(path);
  std::atexit([] { std::ofstream(where) << "deadbeef"; });
}

// TestForkAwareThreadLock.child: a chain of n generations; the last reports how many descriptors it has.
void fd_count_at_generation(int n, mpx::Connection conn, int method) {
  if (n > 1) {
    mpx::Process p(with(method_of(method)), fd_count_at_generation, n - 1, conn, method);
    p.start();
    conn.close();
    p.join();
  } else {
    conn.send(open_fd_count());
  }
  conn.close();
}

int fd_count_after_generations(int n, mpx::StartMethod method) {
  auto [r, w] = mpx::Pipe(false);
  mpx::Process p(with(method), fd_count_at_generation, n, w, static_cast<int>(method));
  p.start();
  w.close();
  const int count = r.recv<int>();
  REQUIRE(p.join(60s));
  return count;
}

void increment_test(mpx::NamespaceProxy ns) { ns.set("test", ns.get("test").as_int() + 1); }

}  // namespace

// ---- _TestProcess ----

TEST_CASE("_TestProcess.test_current", "[conformance][process]") {
  auto current = mpx::current_process();
  // mpx differs: a process has no authkey (the coordinator's sockets live in a 0700 session directory).
  CHECK(current.is_alive());
  CHECK_FALSE(current.daemon());
  CHECK(current.pid() == ::getpid());
  CHECK_FALSE(current.exitcode().has_value());
}

TEST_CASE("_TestProcess.test_set_executable", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const auto executable = mpx::get_executable();
  mpx::set_executable(executable);
  CHECK(mpx::get_executable() == executable);
  mpx::Process p(with(method), do_nothing);
  p.start();
  REQUIRE(p.join(60s));
  CHECK(p.exitcode() == 0);
}

TEST_CASE("_TestProcess.test_args_argument", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  // Python's list-or-tuple *args* distinction does not exist in C++: the arguments are a typed pack.
  for (const auto& arg : {mpx::Object(1), mpx::Object("str"), mpx::Object::list({1})}) {
    mpx::Queue<mpx::Object> q(1);
    mpx::Process p(with(method, true), echo_arg, q, arg);
    p.start();
    CHECK(q.get(true, 60s) == arg);
    REQUIRE(p.join(60s));
  }
}

TEST_CASE("_TestProcess.test_daemon_argument", "[conformance][process]") {
  mpx::Process proc0(do_nothing);
  CHECK(proc0.daemon() == mpx::current_process().daemon());
  mpx::Process proc1(mpx::ProcessOptions{"", true, std::nullopt}, do_nothing);
  CHECK(proc1.daemon());
  mpx::Process proc2(mpx::ProcessOptions{"", false, std::nullopt}, do_nothing);
  CHECK_FALSE(proc2.daemon());
}

TEST_CASE("_TestProcess.test_parent_process_attributes", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  CHECK_FALSE(mpx::parent_process().has_value());
  auto [rconn, wconn] = mpx::Pipe(false);
  mpx::Process p(with(method), send_parent, wconn);
  p.start();
  REQUIRE(p.join(60s));
  const auto got = rconn.recv();
  REQUIRE(got.type() == mpx::Object::Type::array);
  CHECK(got[0].as_int() == mpx::current_process().pid());
  CHECK(got[0].as_int() == ::getpid());
  CHECK(got[1].as_string() == mpx::current_process().name());
}

TEST_CASE("_TestProcess.test_parent_process", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [rconn, wconn] = mpx::Pipe(false);
  mpx::Process p(with(method), create_grandchild, wconn, static_cast<int>(method));
  p.start();
  REQUIRE(rconn.poll(60s));
  const auto status = rconn.recv();
  CHECK(status[0].as_string() == "alive");
  const auto grandchild = static_cast<pid_t>(status[1].as_int());

  p.terminate();
  p.join();
  // mpx differs: a child dies with its parent (PR_SET_PDEATHSIG, docs/process.md "No orphans"), so the grandchild
  // cannot outlive the child to report "not alive": it is gone instead.
  CHECK(wait_until([&] { return conformance::pid_gone(grandchild); }, 60s));
}

TEST_CASE("_TestProcess.test_process", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Queue<mpx::Object> q(1);
  const auto args = mpx::Object::list({1, 2});
  const auto kwargs = mpx::Object::dict({{"hello", 23}, {"bye", 2.54}});
  mpx::Process p(with(method, std::nullopt, "SomeProcess"), report_identity, q, args, kwargs);
  p.set_daemon(true);

  CHECK_FALSE(p.is_alive());
  CHECK(p.daemon());
  CHECK_FALSE(in_active_children(p));
  CHECK_FALSE(p.exitcode().has_value());

  p.start();

  CHECK_FALSE(p.exitcode().has_value());
  CHECK(p.is_alive());
  CHECK(in_active_children(p));

  CHECK(q.get(true, 60s) == args);
  CHECK(q.get(true, 60s) == kwargs);
  CHECK(q.get(true, 60s).as_string() == p.name());
  CHECK(q.get(true, 60s).as_int() == p.pid());

  REQUIRE(p.join(60s));
  CHECK(p.exitcode() == 0);
  CHECK_FALSE(p.is_alive());
  CHECK_FALSE(in_active_children(p));
}

TEST_CASE("_TestProcess.test_process_mainthread_native_id", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const auto current_mainthread_native_id = static_cast<std::int64_t>(::gettid());
  mpx::Queue<std::int64_t> q(1);
  mpx::Process p(with(method), put_main_thread_id, q);
  p.start();
  const auto child_mainthread_native_id = q.get(true, 60s);
  REQUIRE(p.join(60s));
  CHECK(current_mainthread_native_id != child_mainthread_native_id);
}

TEST_CASE("_TestProcess.test_interrupt", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const int exitcode = kill_process([](mpx::Process& p) { p.interrupt(); }, set_event_then_sleep, method);
  // mpx differs: a C++ child has no KeyboardInterrupt to turn SIGINT into exit code 1; it starts with the default
  // handler (docs/process.md, start methods), so SIGINT ends it as in test_interrupt_no_handler.
  CHECK(exitcode == -SIGINT);
}

TEST_CASE("_TestProcess.test_interrupt_no_handler", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const int exitcode =
      kill_process([](mpx::Process& p) { p.interrupt(); }, set_event_then_sleep_no_int_handler, method);
  CHECK(exitcode == -SIGINT);
}

TEST_CASE("_TestProcess.test_terminate", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const int exitcode = kill_process([](mpx::Process& p) { p.terminate(); }, set_event_then_sleep, method);
  CHECK(exitcode == -SIGTERM);
}

TEST_CASE("_TestProcess.test_kill", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const int exitcode = kill_process([](mpx::Process& p) { p.kill(); }, set_event_then_sleep, method);
  CHECK(exitcode == -SIGKILL);
}

TEST_CASE("_TestProcess.test_cpu_count", "[conformance][process]") {
  const int cpus = mpx::cpu_count();
  CHECK(cpus >= 1);
}

TEST_CASE("_TestProcess.test_active_children", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Event event;
  mpx::Process p(with(method), wait_event, event);
  CHECK_FALSE(in_active_children(p));
  p.set_daemon(true);
  p.start();
  CHECK(in_active_children(p));
  event.set();
  REQUIRE(p.join(60s));
  CHECK_FALSE(in_active_children(p));
}

TEST_CASE("_TestProcess.test_recursion", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [rconn, wconn] = mpx::Pipe(false);
  recurse(wconn, {}, static_cast<int>(method));

  std::vector<std::vector<int>> result;
  // Python sleeps DELTA (0.1 s) first, then polls without waiting; a poll that waits as long does the same.
  while (rconn.poll(0.1s)) result.push_back(rconn.recv<std::vector<int>>());

  const std::vector<std::vector<int>> expected{{}, {0}, {0, 0}, {0, 1}, {1}, {1, 0}, {1, 1}};
  CHECK(result == expected);
}

TEST_CASE("_TestProcess.test_sentinel", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Event event;
  mpx::Process p(with(method), wait_event_10s, event);
  // mpx differs: the sentinel of a process not started yet is -1 (process.hpp); Python raises ValueError.
  CHECK(p.sentinel() == -1);
  p.start();
  const int sentinel = p.sentinel();
  CHECK(sentinel >= 0);
  pollfd fd{sentinel, POLLIN, 0};
  CHECK(::poll(&fd, 1, 0) == 0);
  CHECK(mpx::wait({mpx::Waitable(p)}, 0s).empty());
  event.set();
  CHECK(::poll(&fd, 1, 60000) == 1);
  p.join();
  CHECK(mpx::wait({mpx::Waitable(p)}, 1s).size() == 1);
}

TEST_CASE("_TestProcess.test_close", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Queue<int> q;
  mpx::Process p(with(method, true), get_then_exit, q, 0);
  p.start();
  CHECK(p.is_alive());
  // Still running, cannot close (Python's ValueError is mpx::ProcessError for a misused process).
  CHECK_THROWS_AS(p.close(), mpx::ProcessError);

  q.put(0);
  REQUIRE(p.join(60s));
  CHECK_FALSE(p.is_alive());
  CHECK(p.exitcode() == 0);
  p.close();
  CHECK_THROWS_AS(p.is_alive(), mpx::ProcessError);
  CHECK_THROWS_AS(p.join(), mpx::ProcessError);
  CHECK_THROWS_AS(p.terminate(), mpx::ProcessError);
  p.close();
}

TEST_CASE("_TestProcess.test_many_processes", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const int n = method == mpx::StartMethod::spawn ? 5 : 20;  // Python: 5 under spawn, 100 otherwise

  std::vector<mpx::Process> procs;
  for (int i = 0; i < n; ++i) procs.emplace_back(with(method), sleep_ms, 10);
  for (auto& p : procs) p.start();
  for (auto& p : procs) REQUIRE(p.join(60s));
  for (auto& p : procs) CHECK(p.exitcode() == 0);

  procs.clear();
  for (int i = 0; i < n; ++i) procs.emplace_back(with(method), sleep_forever);
  for (auto& p : procs) p.start();
  for (auto& p : procs) p.terminate();
  for (auto& p : procs) REQUIRE(p.join(60s));
  for (auto& p : procs) CHECK(p.exitcode() == -SIGTERM);
}

TEST_CASE("_TestProcess.test_child_fd_inflation", "[conformance][process]") {
  // Under fork the children inherit every descriptor by design, as Python says: only forkserver and spawn.
  auto method = GENERATE(mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  constexpr int n = 5;
  mpx::Event event;
  mpx::Queue<int> q;
  std::vector<mpx::Process> procs;
  for (int i = 0; i < n; ++i) procs.emplace_back(with(method), report_fd_count, event, q);
  for (auto& p : procs) p.start();
  std::vector<int> fd_counts;
  for (int i = 0; i < n; ++i) fd_counts.push_back(q.get(true, 60s));
  event.set();
  for (auto& p : procs) REQUIRE(p.join(60s));
  INFO("descriptor counts of the children: " << Catch::Detail::stringify(fd_counts));
  CHECK(std::set<int>(fd_counts.begin(), fd_counts.end()).size() == 1);
}

TEST_CASE("_TestProcess.test_error_on_stdio_flush_1", "[conformance][process]") {
  // Python sets sys.stdout/stderr to a closed StringIO or None while starting a child. The C++ twin: the parent's
  // descriptor 1 or 2 points at a stream whose writes fail. (Closing it outright would let another thread's next
  // socket take its number.)
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  for (int stream : {1, 2}) {
    for (auto how : {Broken::closed_pipe, Broken::full_device}) {
      const int saved = ::dup(stream);
      REQUIRE(saved >= 0);
      const int broken = broken_stream(how);
      REQUIRE(broken >= 0);
      const auto old_sigpipe = std::signal(SIGPIPE, SIG_IGN);  // this process writes nothing meanwhile either way
      ::dup2(broken, stream);
      ::close(broken);
      mpx::Event event;
      mpx::Process proc(with(method), set_event, event);
      bool started = false, joined = false;
      std::string error;
      try {
        proc.start();
        started = true;
        joined = proc.join(60s);
      } catch (const std::exception& e) {
        error = e.what();  // reported once the streams are back
      }
      ::dup2(saved, stream);
      ::close(saved);
      std::signal(SIGPIPE, old_sigpipe);
      INFO("stream " << stream << (how == Broken::closed_pipe ? ", a pipe nobody reads" : ", /dev/full"));
      INFO("error: " << error);
      REQUIRE(started);
      REQUIRE(joined);
      CHECK(event.is_set());
      CHECK(proc.exitcode() == 0);
    }
  }
}

TEST_CASE("_TestProcess.test_error_on_stdio_flush_2", "[conformance][process]") {
  // The same, but the child breaks its own standard streams: 'close' (writes fail) and 'remove' (closed outright).
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  for (int stream : {1, 2}) {
    for (bool remove : {false, true}) {
      mpx::Event event;
      mpx::Process proc(with(method), break_own_stream_then_set, event, stream, remove);
      proc.start();
      REQUIRE(proc.join(60s));
      INFO("stream " << stream << (remove ? ", removed" : ", closed"));
      CHECK(event.is_set());
      CHECK(proc.exitcode() == 0);
    }
  }
}

// ---- _TestSubclassingProcess ----

TEST_CASE("_TestSubclassingProcess.test_subclassing", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const StartMethodScope scope(method);
  auto uppercaser = UpperCaser::with_pipe();
  uppercaser.set_daemon(true);
  uppercaser.start();
  CHECK(uppercaser.submit("hello") == "HELLO");
  CHECK(uppercaser.submit("world") == "WORLD");
  uppercaser.stop();
  CHECK(uppercaser.join(60s));
  CHECK(uppercaser.exitcode() == 0);
}

TEST_CASE("_TestSubclassingProcess.test_stderr_flush", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const auto testfn = scratch_path("stderr");
  mpx::Process proc(with(method), throw_with_stderr_in, testfn);
  proc.start();
  REQUIRE(proc.join(60s));
  std::ifstream file(testfn);
  const std::string err((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::filesystem::remove(testfn);
  // Python checks the whole traceback; a C++ child reports the exception's type and message.
  CHECK(proc.exitcode() == 1);
  CHECK_THAT(err, Catch::Contains("std::runtime_error"));
  CHECK_THAT(err, Catch::Contains("division by zero # MARKER"));
}

TEST_CASE("_TestSubclassingProcess.test_sys_exit", "[conformance][process]") {
  // sys.exit(reason) with a non-integer reason (printed, exit code 1) has no C++ twin: std::exit takes an int.
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  for (auto [code, expected] : {std::pair{1, 1}, std::pair{0, 0}, std::pair{8, 8}}) {
    mpx::Process p(with(method, true), exit_with, code);
    p.start();
    REQUIRE(p.join(60s));
    CHECK(p.exitcode() == expected);
  }
  mpx::Process returns(with(method, true), do_nothing);  // Python's sys.exit() with no argument
  returns.start();
  REQUIRE(returns.join(60s));
  CHECK(returns.exitcode() == 0);
}

// ---- TestStartMethod ----

TEST_CASE("TestStartMethod.test_context", "[conformance][process]") {
  for (const std::string method : {"fork", "spawn", "forkserver"}) {
    const auto ctx = mpx::get_context(method);
    CHECK(mpx::to_string(ctx.get_start_method()) == method);
    auto [r, w] = mpx::Pipe(false);
    auto p = ctx.Process(send_start_method, w);
    w.close();
    INFO("context " << method);
    check_context(p, r, method);
  }
}

TEST_CASE("TestStartMethod.test_set_get", "[conformance][process]") {
  const StartMethodScope restore(mpx::get_start_method());
  int count = 0;
  for (const std::string method : {"fork", "spawn", "forkserver"}) {
    mpx::set_start_method(method, true);
    CHECK(mpx::to_string(mpx::get_start_method()) == method);
    CHECK(mpx::to_string(mpx::get_context().get_start_method()) == method);
    auto [r, w] = mpx::Pipe(false);
    mpx::Process p(send_start_method, w);
    w.close();
    INFO("start method " << method);
    check_context(p, r, method);
    ++count;
  }
  CHECK(count >= 1);
}

TEST_CASE("TestStartMethod.test_get_all_start_methods", "[conformance][process]") {
  const auto methods = mpx::get_all_start_methods();
  REQUIRE_FALSE(methods.empty());
  CHECK(std::count(methods.begin(), methods.end(), "spawn") == 1);
  CHECK(std::count(methods.begin(), methods.end(), "fork") == 1);
  for (const auto& m : methods) CHECK((m == "fork" || m == "spawn" || m == "forkserver"));
  // The default comes first, and since 3.14 it is not fork.
  CHECK((methods[0] == "forkserver" || methods[0] == "spawn"));
  CHECK(methods[0] == mpx::to_string(mpx::get_start_method()));
}

TEST_CASE("TestStartMethod.test_mixed_startmethod", "[conformance][process]") {
  // mpx differs: a Queue is a coordinator object with no start method of its own, so a queue made before any child
  // works in children of every start method (Python refuses a fork context's queue in a spawn or forkserver child).
  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn}) {
    mpx::Queue<int> queue;
    mpx::Process p(with(method), put_and_close, queue);
    p.start();
    REQUIRE(p.join(60s));
    CHECK(p.exitcode() == 0);
    CHECK(queue.get(true, 60s) == 1);
  }
}

TEST_CASE("TestStartMethod.test_nested_startmethod", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Queue<int> queue;
  mpx::Process process(with(method), put_two_and_nest_once, queue);
  process.start();
  REQUIRE(process.join(60s));
  CHECK(process.exitcode() == 0);
  std::set<int> results;
  while (!queue.empty()) results.insert(queue.get());
  CHECK(results == std::set<int>{1, 2});
}

// ---- TestCloseFds ----

TEST_CASE("TestCloseFds.test_closefd", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [reader, writer] = mpx::Pipe();
  const int fd = high_socket_fd();
  REQUIRE(fd >= 50);
  mpx::Process p(with(method), report_fd_state, writer, fd);
  p.start();
  writer.close();
  const int error = reader.recv<int>();
  REQUIRE(p.join(60s));
  ::close(fd);
  INFO("start method " << mpx::to_string(method));
  if (method == mpx::StartMethod::fork) {
    CHECK(error == 0);
  } else {
    CHECK(error == EBADF);
  }
}

// ---- TestStdinBadfiledescriptor ----

TEST_CASE("TestStdinBadfiledescriptor.test_queue_in_process", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Process proc(with(method), queue_in_process);
  proc.start();
  REQUIRE(proc.join(60s));
  CHECK(proc.exitcode() == 0);
}

TEST_CASE("TestStdinBadfiledescriptor.test_pool_in_process", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Process p(with(method), pool_in_process);
  p.start();
  REQUIRE(p.join(60s));
  CHECK(p.exitcode() == 0);
}

// ---- _TestAtExit ----

TEST_CASE("_TestAtExit.test_atexit", "[conformance][process]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const auto output_path = scratch_path("atexit");
  mpx::Process p(with(method), write_file_at_exit, output_path);
  p.start();
  REQUIRE(p.join(60s));
  std::ifstream file(output_path);
  std::string content;
  std::getline(file, content);
  std::filesystem::remove(output_path);
  CHECK(content == "deadbeef");
}

// ---- TestForkAwareThreadLock ----

TEST_CASE("TestForkAwareThreadLock.test_lock", "[conformance][process]") {
  // Python checks that its after-fork registry does not grow with each generation of processes (issue #17555). The
  // state an mpx process carries into its children is its descriptors: five generations down, a process has no more
  // than the first one. Not under fork, which inherits every descriptor by design (as test_child_fd_inflation says).
  auto method = GENERATE(mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  const int first = fd_count_after_generations(1, method);
  const int fifth = fd_count_after_generations(5, method);
  INFO("start method " << mpx::to_string(method) << ": " << first << " descriptors in the first generation, " << fifth
                       << " in the fifth");
  CHECK(fifth <= first);
}

// ---- TestInitializers ----

TEST_CASE("TestInitializers.test_pool_initializer", "[conformance][process]") {
  // Python's Pool(initializer=1) TypeError is a compile-time error here.
  mpx::Manager mgr;
  auto ns = mgr.Namespace();
  ns.set("test", 0);
  mpx::Pool p(1, increment_test, std::make_tuple(ns));
  p.close();
  p.join();
  CHECK(ns.get("test").as_int() == 1);
}

// ---- forkserver death: last, since they kill this binary's forkserver ----

TEST_CASE("_TestProcess.test_forkserver_sigint", "[conformance][process]") {
  check_forkserver_death(SIGINT);
}

TEST_CASE("_TestProcess.test_forkserver_sigkill", "[conformance][process]") {
  check_forkserver_death(SIGKILL);
}
