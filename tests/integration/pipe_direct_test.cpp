// The peer-to-peer path of Pipe (PROTOCOL.md, "Pipes: the direct path"), with real processes: messages skip the
// coordinator once both ends are held by different processes, and nothing is lost, duplicated or reordered when an end
// moves (a Process argument, a Queue, another pipe), when readiness is mirrored (fileno, wait), or when the writer is
// closed or SIGKILLed. No socket file outlives its listener.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include <poll.h>
#include <unistd.h>

#include "runtime/channel.hpp"
#include "runtime/coordinator.hpp"
#include "runtime/runtime.hpp"

using namespace std::chrono_literals;

namespace {

mpx::ProcessOptions helper() { return {"", true, std::nullopt}; }

// Messages the coordinator has handled so far (every relayed send is one; a direct one is none).
std::uint64_t coordinator_messages() {
  auto* c = mpx::runtime::coordinator_if_running();
  REQUIRE(c != nullptr);
  return c->stats().received;
}

// The direct path's socket and control files in the session directory.
std::vector<std::string> direct_files() {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(mpx::runtime::state().session.directory)) {
    const auto name = entry.path().filename().string();
    if (name.rfind("pipe-", 0) == 0) out.push_back(name);
  }
  return out;
}

void send_range(mpx::Connection conn, int from, int count) {
  for (int i = from; i < from + count; ++i) conn.send(i);
}

void send_range_close(mpx::Connection conn, int from, int count) {
  send_range(conn, from, count);
  conn.close();
}

// Receives `count` ints and answers how many were in order from `from`, on `report`.
void receive_range(mpx::Connection conn, int from, int count, mpx::Connection report) {
  int good = 0;
  for (int i = 0; i < count; ++i) good += conn.recv<int>() == from + i;
  report.send(good);
}

// Echoes until -1.
void echo(mpx::Connection conn) {
  for (;;) {
    const int x = conn.recv<int>();
    if (x == -1) break;
    conn.send(x);
  }
}

void send_then_wait(mpx::Connection conn, int count, mpx::Connection hold) {
  send_range(conn, 0, count);
  (void)hold.recv();  // never answered: the test kills this process
}

// Reads `first` messages, then passes its end through a Queue to whoever gets it next.
void read_then_pass(mpx::Connection conn, int first, mpx::Queue<mpx::Connection> q, mpx::Connection report) {
  int good = 0;
  for (int i = 0; i < first; ++i) good += conn.recv<int>() == i;
  q.put(conn);
  report.send(good);
}

void take_and_read(mpx::Queue<mpx::Connection> q, int from, int count, mpx::Connection report) {
  auto conn = q.get();
  receive_range(conn, from, count, report);
}

// Writes `first` messages, then hands its end on through another pipe, and stays until told: a holder that dies
// before the next one has adopted the end releases it, and the reader would rightly see EOF (as on the relay path).
void write_then_pass(mpx::Connection conn, int first, mpx::Connection courier, mpx::Connection done) {
  send_range(conn, 0, first);
  courier.send(conn);
  conn.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  courier.close();
  (void)done.recv();
}

void take_and_write(mpx::Connection courier, int from, int count) {
  auto conn = courier.recv<mpx::Connection>();
  send_range_close(conn, from, count);
}

int read_all_in_order(mpx::Connection& conn, int count) {
  int good = 0;
  for (int i = 0; i < count; ++i) good += conn.recv<int>() == i;
  return good;
}

// ---- the shared-memory ring (shm/pipe_ring.hpp) ----

// Message i of a mixed-size stream: sizes from empty to just under the direct frame limit (64 KiB), with every 97th
// larger than the whole ring (256 KiB), so the ring wraps at every offset and big messages leave it; the bytes
// depend on i, so a message out of place or torn is seen.
std::string mixed_message(int i) {
  std::size_t size = static_cast<std::size_t>((i * 7919) % 9000);
  if (i % 13 == 0) size = 60000 + static_cast<std::size_t>(i % 5000);
  if (i % 97 == 0) size = 300000 + static_cast<std::size_t>(i);
  std::string m(size, '\0');
  for (std::size_t k = 0; k < size; ++k) m[k] = static_cast<char>((static_cast<std::size_t>(i) * 31 + k) & 0xff);
  return m;
}

void send_mixed_close(mpx::Connection conn, int count) {
  for (int i = 0; i < count; ++i) conn.send_bytes(mixed_message(i));
  conn.close();
}

// Sends `count` ints and is killed at once: no close, no exit handlers.
void send_then_die(mpx::Connection conn, int count) {
  send_range(conn, 0, count);
  ::kill(::getpid(), SIGKILL);
}

// Sends `first` messages of 1 KiB (more than the ring holds), says so, waits until the reader has read them, then
// sends `first` more and closes.
void send_in_two_waves(mpx::Connection conn, int first, mpx::Connection said, mpx::Connection go) {
  const std::string pad(1024, 'x');
  for (int i = 0; i < first; ++i) conn.send(std::to_string(i) + pad);
  said.send(0);
  (void)go.recv();
  for (int i = first; i < 2 * first; ++i) conn.send(std::to_string(i) + pad);
  conn.close();
}

// Sends one int each time it is asked, until asked with -1.
void send_when_asked(mpx::Connection conn, mpx::Connection ask) {
  for (;;) {
    const int x = ask.recv<int>();
    if (x < 0) break;
    conn.send(x);
  }
  conn.close();
}

// Reads 2n ints from two writers (0..n-1 from one, n..2n-1 from the other) and answers how many were in each
// writer's order; halfway through the first n/2 it forks a child (fork start method) that does nothing.
void read_forking_midway(mpx::Connection conn, int n, mpx::Connection report) {
  std::vector<int> got;
  for (int i = 0; i < n / 2; ++i) got.push_back(conn.recv<int>());
  mpx::Process idle(mpx::closure, [] {}, mpx::ProcessOptions{"", true, mpx::StartMethod::fork});
  idle.start();
  idle.join();
  for (int i = n / 2; i < 2 * n; ++i) got.push_back(conn.recv<int>());
  int mine = -1, theirs = n - 1, good = 0;
  for (int x : got) good += x < n ? x == ++mine : x == ++theirs;
  report.send(good);
}

}  // namespace

TEST_CASE("a stream between two processes skips the coordinator, in order, then EOF after the last message",
          "[pipe][direct]") {
  constexpr int n = 20000;
  auto [here, there] = mpx::Pipe(false);
  mpx::Process p(helper(), send_range_close, there, 0, n);
  p.start();
  there.close();
  CHECK(here.recv<int>() == 0);  // the first one may be relayed (the reader listens from its first recv)
  const auto before = coordinator_messages();
  int good = 1;
  for (int i = 1; i < n; ++i) good += here.recv<int>() == i;
  const auto through_coordinator = coordinator_messages() - before;
  CHECK(good == n);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  INFO("messages through the coordinator: " << through_coordinator);
  CHECK(through_coordinator < n / 10);
  p.join();
  CHECK(p.exitcode() == 0);
  here.close();
  CHECK(direct_files().empty());
}

TEST_CASE("a duplex ping-pong goes direct both ways", "[pipe][direct]") {
  auto [here, there] = mpx::Pipe();
  mpx::Process p(helper(), echo, there);
  p.start();
  for (int i = 0; i < 50; ++i) {
    here.send(i);
    REQUIRE(here.recv<int>() == i);
  }
  const auto before = coordinator_messages();
  for (int i = 0; i < 1000; ++i) {
    here.send(i);
    REQUIRE(here.recv<int>() == i);
  }
  CHECK(coordinator_messages() - before < 100);
  here.send(-1);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("EOF after SIGKILL of a direct writer, only after every message it sent", "[pipe][direct]") {
  constexpr int n = 3000;
  auto [here, there] = mpx::Pipe(false);
  auto [hold_a, hold_b] = mpx::Pipe();
  (void)here.poll(0ms);  // this process listens before the writer starts
  mpx::Process p(helper(), send_then_wait, there, n, hold_b);
  p.start();
  there.close();
  CHECK(here.recv<int>() == 0);
  int good = 1;
  for (int i = 1; i < n; ++i) good += here.recv<int>() == i;
  CHECK(good == n);
  CHECK_FALSE(here.poll(50ms));
  ::kill(p.pid(), SIGKILL);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  p.join();
  CHECK(p.exitcode() == -SIGKILL);
}

TEST_CASE("a SIGKILLed direct reader leaves no socket file; a new reader gets what was sent after", "[pipe][direct]") {
  auto [here, there] = mpx::Pipe(false);
  auto [report_in, report_out] = mpx::Pipe(false);
  mpx::Process reader(helper(), receive_range, here, 0, 1000000, report_out);
  reader.start();
  here.close();
  send_range(there, 0, 2000);
  // Wait until the reader listens and the stream has gone direct at least once.
  for (int i = 0; i < 200 && direct_files().empty(); ++i) there.send(-5), std::this_thread::sleep_for(5ms);
  CHECK_FALSE(direct_files().empty());
  ::kill(reader.pid(), SIGKILL);
  reader.join();
  for (int i = 0; i < 200 && !direct_files().empty(); ++i) std::this_thread::sleep_for(5ms);  // anti-hang bound
  for (const auto& name : direct_files()) UNSCOPED_INFO("left: " << name << " (the reader was " << reader.pid() << ")");
  CHECK(direct_files().empty());
  // Sends after the death are not lost: they wait for the next reader, as on the relay path, after whatever was
  // relayed before and not read (what was already in the dead reader's socket died with it, as in Python).
  send_range(there, 1000000, 3);
  auto again = mpx::Connection(mpx::adopt, here.hand_over());
  int last = -10, x = 0;
  bool increasing = true;
  while ((x = again.recv<int>()) < 1000000) {
    increasing = increasing && (x == -5 || x > last);
    if (x != -5) last = x;
  }
  CHECK(increasing);
  CHECK(x == 1000000);
  CHECK(again.recv<int>() == 1000001);
  CHECK(again.recv<int>() == 1000002);
}

TEST_CASE("a reading end handed on through a Queue mid-stream: nothing lost, duplicated or reordered",
          "[pipe][direct]") {
  constexpr int n = 6000, first = 2500;
  auto [here, there] = mpx::Pipe(false);
  auto [report_a_in, report_a] = mpx::Pipe(false);
  auto [report_b_in, report_b] = mpx::Pipe(false);
  mpx::Queue<mpx::Connection> q;
  mpx::Process a(helper(), read_then_pass, here, first, q, report_a);
  mpx::Process b(helper(), take_and_read, q, first, n - first, report_b);
  a.start();
  b.start();
  here.close();
  send_range_close(there, 0, n);
  CHECK(report_a_in.recv<int>() == first);
  CHECK(report_b_in.recv<int>() == n - first);
  a.join();
  b.join();
  CHECK(a.exitcode() == 0);
  CHECK(b.exitcode() == 0);
}

TEST_CASE("a writing end handed on through another pipe mid-stream keeps the order", "[pipe][direct]") {
  constexpr int n = 6000, first = 3000;
  auto [here, there] = mpx::Pipe(false);
  auto [courier_in, courier_out] = mpx::Pipe(false);
  auto [done_in, done_out] = mpx::Pipe(false);
  (void)here.poll(0ms);
  mpx::Process a(helper(), write_then_pass, there, first, courier_out, done_in);
  mpx::Process b(helper(), take_and_write, courier_in, first, n - first);
  a.start();
  b.start();
  there.close();
  CHECK(read_all_in_order(here, n) == n);
  b.join();
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  done_out.send(0);
  a.join();
}

TEST_CASE("a direct reader that starts mirroring readiness (fileno, wait) misses nothing", "[pipe][direct]") {
  constexpr int n = 4000;
  auto [here, there] = mpx::Pipe(false);
  (void)here.poll(0ms);
  mpx::Process p(helper(), send_range_close, there, 0, n);
  p.start();
  there.close();
  int good = 0;
  for (int i = 0; i < n / 2; ++i) good += here.recv<int>() == i;
  const int fd = here.fileno();
  for (int i = n / 2; i < n; ++i) {
    pollfd pfd{fd, POLLIN, 0};
    REQUIRE(::poll(&pfd, 1, 10000) == 1);  // anti-hang bound
    REQUIRE_FALSE(mpx::wait(std::vector<mpx::Connection>{here}, std::chrono::duration<double>(10)).empty());
    good += here.recv<int>() == i;
  }
  CHECK(good == n);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  p.join();
}

TEST_CASE("the writer starts before the reader listens, and the reader before the writer connects", "[pipe][direct]") {
  constexpr int n = 5000;
  SECTION("writer first: its early messages are relayed, the rest go direct, in order") {
    auto [here, there] = mpx::Pipe(false);
    mpx::Process p(helper(), send_range_close, there, 0, n);
    p.start();
    there.close();
    p.join();  // everything is sent before this process reads at all
    CHECK(read_all_in_order(here, n) == n);
    CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  }
  SECTION("reader first: it waits in poll while the writer connects") {
    auto [here, there] = mpx::Pipe(false);
    auto [report_in, report_out] = mpx::Pipe(false);
    mpx::Process r(helper(), receive_range, here, 0, n, report_out);
    r.start();
    here.close();
    CHECK_FALSE(report_in.poll(100ms));
    send_range_close(there, 0, n);
    CHECK(report_in.recv<int>() == n);
    r.join();
  }
}

TEST_CASE("messages over the direct frame limit and a slow reader fall back to the relay, in order",
          "[pipe][direct]") {
  auto [here, there] = mpx::Pipe(false);
  (void)here.poll(0ms);
  constexpr int n = 3000;
  // The writer outruns the reader (nobody reads until it is done), so the socket fills and the epoch ends.
  mpx::Process p(helper(), send_range_close, there, 0, n);
  p.start();
  there.close();
  p.join();
  CHECK(read_all_in_order(here, n) == n);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
}

TEST_CASE("switching tracing on in a running session brings direct pipes back through the coordinator",
          "[pipe][direct][trace]") {
  auto [here, there] = mpx::Pipe();
  mpx::Process p(helper(), echo, there);
  p.start();
  const auto round_trips = [&here](int count) {
    const auto before = coordinator_messages();
    for (int i = 0; i < count; ++i) {
      here.send(i);
      REQUIRE(here.recv<int>() == i);
    }
    return coordinator_messages() - before;
  };
  (void)round_trips(50);
  CHECK(round_trips(200) < 50);  // direct
  const auto file = std::filesystem::path(mpx::runtime::state().session.directory) / "switch.mpxt";
  mpx::trace::enable("file:" + file.string());
  (void)round_trips(20);  // each writer sees the revocation before its next message, then relays
  CHECK(round_trips(100) >= 200);  // a pipe_send and a pipe_recv each way: all of them traced
  mpx::trace::disable();
  std::filesystem::remove(file);
  here.send(-1);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("malformed direct-path requests get an error reply, are counted and change nothing", "[pipe][direct]") {
  auto [here, there] = mpx::Pipe(false);
  auto& channel = mpx::runtime::Channel::current();
  const auto malformed = [] { return mpx::runtime::coordinator_if_running()->stats().malformed; };
  const auto before = malformed();
  const auto refused = [&channel](mpx::wire::Envelope e) {
    auto reply = channel.request(std::move(e), 10s);
    return reply.header.kind == mpx::wire::Kind::error;
  };
  // A body where nil is expected, a listen on the write-only end, a connect on the read-only end.
  CHECK(refused(mpx::wire::make(mpx::wire::Kind::pipe_listen, here.hand_over().id, 0, std::make_tuple(1))));
  CHECK(refused(mpx::wire::make(mpx::wire::Kind::pipe_listen, there.hand_over().id, 0, mpx::Object{})));
  CHECK(refused(mpx::wire::make(mpx::wire::Kind::pipe_connect, here.hand_over().id, 0, mpx::Object{})));
  // A given-back frame that ends inside a length, and one that ends inside a message.
  auto torn = mpx::wire::make(mpx::wire::Kind::pipe_direct_end, here.hand_over().id, 0, std::make_tuple(1, true));
  torn.body.emplace_back("\x05\x00", 2);
  CHECK(refused(std::move(torn)));
  auto short_message = mpx::wire::make(mpx::wire::Kind::pipe_direct_end, here.hand_over().id, 0, std::make_tuple(1, true));
  short_message.body.emplace_back("\x05\x00\x00\x00ab", 6);
  CHECK(refused(std::move(short_message)));
  // The wrong shape for pipe_direct_end's body.
  CHECK(refused(mpx::wire::make(mpx::wire::Kind::pipe_direct_end, here.hand_over().id, 0, std::string("x"))));
  CHECK(malformed() - before >= 6);
  // Nothing changed: the pipe still carries messages, and nothing was inserted into its inbox.
  auto reader = mpx::Connection(mpx::adopt, here.hand_over());
  auto writer = mpx::Connection(mpx::adopt, there.hand_over());
  writer.send(std::string("still here"));
  CHECK(reader.recv<std::string>() == "still here");
  CHECK_FALSE(reader.poll(0ms));
}

TEST_CASE("a direct writer SIGKILLed right after its last send loses none of its messages", "[pipe][direct][ring]") {
  SECTION("the reader reads while the writer writes") {
    constexpr int n = 50000;
    auto [here, there] = mpx::Pipe(false);
    (void)here.poll(0ms);  // this process listens before the writer starts
    mpx::Process p(helper(), send_then_die, there, n);
    p.start();
    there.close();
    CHECK(read_all_in_order(here, n) == n);
    CHECK_THROWS_AS(here.recv(), mpx::EOFError);
    p.join();
    CHECK(p.exitcode() == -SIGKILL);
  }
  SECTION("the reader reads only after the writer is dead: every message waited in the ring") {
    // Fewer than the ring holds: a writer that outruns its reader further relays through its ZeroMQ socket, which a
    // SIGKILL may cut short, on the relay path as before.
    constexpr int n = 20000;
    auto [here, there] = mpx::Pipe(false);
    (void)here.poll(0ms);
    mpx::Process p(helper(), send_then_die, there, n);
    p.start();
    there.close();
    p.join();
    CHECK(p.exitcode() == -SIGKILL);
    CHECK(read_all_in_order(here, n) == n);
    CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  }
}

TEST_CASE("the ring wraps around with mixed message sizes, some larger than the ring, in order and intact",
          "[pipe][direct][ring]") {
  constexpr int n = 3000;  // about 30 MB: the ring wraps over a hundred times
  auto [here, there] = mpx::Pipe(false);
  (void)here.poll(0ms);
  mpx::Process p(helper(), send_mixed_close, there, n);
  p.start();
  there.close();
  int good = 0, first_bad = -1;
  for (int i = 0; i < n; ++i) {
    const bool same = here.recv_bytes() == mixed_message(i);
    good += same;
    if (!same && first_bad < 0) first_bad = i;
  }
  INFO("the first message out of place or torn: " << first_bad);
  CHECK(good == n);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("a reader behind a full ring gets the overflow from the connection, then the ring again, in order",
          "[pipe][direct][ring]") {
  constexpr int first = 350;  // 350 KiB: more than the ring holds, less than even a default socket buffer
  auto [here, there] = mpx::Pipe(false);
  auto [said_in, said_out] = mpx::Pipe(false);
  auto [go_in, go_out] = mpx::Pipe(false);
  (void)here.poll(0ms);
  mpx::Process p(helper(), send_in_two_waves, there, first, said_out, go_in);
  p.start();
  there.close();
  const auto expected = [](int i) { return std::to_string(i) + std::string(1024, 'x'); };
  (void)said_in.recv();
  int good = 0;
  for (int i = 0; i < first; ++i) good += here.recv<std::string>() == expected(i);
  go_out.send(0);
  for (int i = first; i < 2 * first; ++i) good += here.recv<std::string>() == expected(i);
  CHECK(good == 2 * first);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("poll() and recv() on a ring reader wake up when the writer stores a message, and time out when none comes",
          "[pipe][direct][ring]") {
  auto [here, there] = mpx::Pipe(false);
  auto [ask_in, ask_out] = mpx::Pipe(false);
  (void)here.poll(0ms);
  mpx::Process p(helper(), send_when_asked, there, ask_in);
  p.start();
  there.close();
  for (int i = 0; i < 200; ++i) {
    ask_out.send(i);
    if (i % 2 == 0) REQUIRE(here.poll(10s));  // anti-hang bound: it is ready long before
    REQUIRE(here.recv<int>() == i);
    if (i % 50 == 0) CHECK_FALSE(here.poll(20ms));  // nothing was asked for: nothing comes
  }
  const auto before = coordinator_messages();
  for (int i = 0; i < 100; ++i) {
    ask_out.send(i);
    REQUIRE(here.poll(10s));
    REQUIRE(here.recv<int>() == i);
  }
  // Each round is a relayed ask (send and recv) and nothing for the pipe under test: its messages went direct.
  CHECK(coordinator_messages() - before < 300);
  ask_out.send(-1);
  CHECK_THROWS_AS(here.recv(), mpx::EOFError);
  p.join();
}

TEST_CASE("fork children of a direct writer and of a direct reader leave their parent's ring alone",
          "[pipe][direct][ring]") {
  constexpr int n = 3000;
  auto [here, there] = mpx::Pipe(false);
  auto [report_in, report_out] = mpx::Pipe(false);
  auto [sent_in, sent_out] = mpx::Pipe(false);
  auto [done_in, done_out] = mpx::Pipe(false);
  // The reader forks a child mid-stream that neither reads nor writes; the writer forks one that writes its own
  // messages on the same end while the writer writes too. Each writer's messages arrive in its order, none lost or
  // doubled. The forked writer stays until this process has written again, so the end is never left without a holder
  // (a reader would rightly see EOF then).
  mpx::Process reader(mpx::ProcessOptions{"", false, mpx::StartMethod::fork}, read_forking_midway, here, n,
                      report_out);  // not daemonic: it has a child
  reader.start();
  here.close();
  send_range(there, 0, n / 2);
  mpx::Process child(mpx::closure,
                     [there, sent_out, done_in]() mutable {
                       send_range(there, n, n);
                       sent_out.send(0);
                       (void)done_in.recv();
                     },
                     mpx::ProcessOptions{"", true, mpx::StartMethod::fork});
  child.start();
  send_range(there, n / 2, n / 4);
  (void)sent_in.recv();
  send_range(there, n / 2 + n / 4, n - n / 2 - n / 4);
  done_out.send(0);
  child.join();
  CHECK(child.exitcode() == 0);
  CHECK(report_in.recv<int>() == 2 * n);
  reader.join();
  CHECK(reader.exitcode() == 0);
}
