// Pipes and connections with real processes: send/recv, bytes with offsets, BufferTooShort, poll timeouts, EOF on
// close and on SIGKILL, simplex direction errors, ordering, every start method, wait(), Listener/Client with keys.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include "children.hpp"

#include <array>
#include <chrono>
#include <csignal>
#include <future>
#include <optional>
#include <thread>

#include <poll.h>
#include <unistd.h>

#include "children.hpp"

using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;
using mpx_test::ScopedEnv;

mpx::ProcessOptions with(mpx::StartMethod method, bool daemon = true) { return {"", daemon, method}; }
mpx::ProcessOptions helper() { return {"", true, std::nullopt}; }

bool readable_fd(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

// The seed's f(conn).
void send_hello(mpx::Connection conn) {
  conn.send(mpx::Object::list({42, nullptr, "hello"}));
  conn.close();
}

// Doubles every number until it gets -1.
void doubler(mpx::Connection conn) {
  for (;;) {
    const int x = conn.recv<int>();
    if (x == -1) break;
    conn.send(2 * x);
  }
}

void send_then_close(mpx::Connection conn, int count) {
  for (int i = 0; i < count; ++i) conn.send(i);
  conn.close();
}

void send_then_exit(mpx::Connection conn) { conn.send(std::string("last words")); }

void ready_then_block(mpx::Connection conn) {
  conn.send(std::string("ready"));
  (void)conn.recv();  // never answered: the test kills this process
}

void send_many(mpx::Connection conn, int count) {
  for (int i = 0; i < count; ++i) conn.send(i);
}

// Receives `count` numbers and answers how many arrived in order.
void check_order(mpx::Connection conn, int count) {
  int in_order = 0;
  for (int i = 0; i < count; ++i) {
    if (conn.recv<int>() == i) ++in_order;
  }
  conn.send(in_order);
}

// Receives `count` numbers that should run from `first`, and answers how many did.
void check_order_from(mpx::Connection conn, int first, int count) {
  int in_order = 0;
  for (int i = 0; i < count; ++i) {
    if (conn.recv<int>() == first + i) ++in_order;
  }
  conn.send(in_order);
}

void send_after(mpx::Connection conn, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  conn.send(std::string("late"));
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

void do_nothing(mpx::Connection) {}

void from_queue(mpx::Queue<mpx::Connection> q) {
  auto conn = q.get();
  conn.send(std::string("via a queue"));
}

void client_echo(std::string address, std::string key) {
  auto conn = mpx::Client(address, key);
  conn.send_bytes(std::string_view("ping"));
  conn.send(conn.recv<int>() + 1);
  conn.close();
}

void client_report(std::string address, std::string key, mpx::Queue<std::string> report) {
  try {
    auto conn = mpx::Client(address, key);
    report.put("connected");
  } catch (const mpx::AuthenticationError& e) {
    report.put(std::string("AuthenticationError: ") + e.what());
  }
}

void client_no_key(std::string address) {
  auto conn = mpx::Client(address);
  conn.send(std::string("plain"));
  try {
    (void)conn.recv<std::string>();  // until the listener closes
  } catch (const mpx::EOFError&) {
  }
}

// Sends `first` ints from `from`, says so, sends `rest` more once told to, and exits without closing its end.
void send_wait_send(mpx::Connection conn, int from, int first, int rest, mpx::Connection said, mpx::Connection go) {
  for (int i = from; i < from + first; ++i) conn.send(i);
  said.send(0);
  (void)go.recv();
  for (int i = from + first; i < from + first + rest; ++i) conn.send(i);
}

// Python's idiom in the child: close the copy of the parent's end it was given (the parent still holds that end, so
// this is no EOF here), say whether EOF is ready, then double every number it receives until -1, and exit.
void close_parents_copy_then_double(mpx::Connection parent_end, mpx::Connection own_end, mpx::Connection said) {
  parent_end.close();
  said.send(own_end.poll(0s));
  for (;;) {
    const int x = own_end.recv<int>();
    if (x < 0) break;
    own_end.send(2 * x);
  }
}

// Polls its reading end until a message is there (so that, on the direct path, it has taken messages from the
// writer's ring), says so, and exits without reading.
void poll_then_exit(mpx::Connection conn, mpx::Connection listening, mpx::Connection said) {
  (void)conn.poll();  // from here on this process is the end's reader (it listens, on the direct path)
  listening.send(0);
  const bool ready = conn.poll(30s);
  said.send(ready);
}

// Receives one message (which takes a batch from the coordinator), says which, and exits.
void recv_one_then_exit(mpx::Connection conn, mpx::Connection said) { said.send(conn.recv<int>()); }

// Receives one message, closes its copy of the end, says which, and stays until told to go.
void recv_one_then_close(mpx::Connection conn, mpx::Connection said, mpx::Connection go) {
  const int x = conn.recv<int>();
  conn.close();
  said.send(x);
  (void)go.recv();
}

}  // namespace

TEST_CASE("send and recv in one process: objects, bytes with offset and size, maxlength, recv_bytes_into", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  CHECK(a.readable());
  CHECK(a.writable());
  a.send(mpx::Object::list({42, nullptr, "hello"}));
  CHECK(b.recv().repr() == "[42, None, 'hello']");
  b.send(std::string("back"));
  CHECK(a.recv<std::string>() == "back");

  a.send_bytes(std::string_view("abcdefgh"), 2, 3);
  CHECK(b.recv_bytes() == "cde");
  a.send_bytes(std::string_view("abcdefgh"), 5);
  CHECK(b.recv_bytes() == "fgh");
  const std::array<std::byte, 4> raw{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  a.send_bytes(std::span<const std::byte>(raw), 1, 2);
  CHECK(b.recv_bytes() == std::string("\x02\x03", 2));
  a.send_bytes(std::string_view(""));
  CHECK(b.recv_bytes().empty());
  CHECK_THROWS_AS(a.send_bytes(std::string_view("abc"), 4), mpx::ValueError);
  CHECK_THROWS_AS(a.send_bytes(std::string_view("abc"), 1, 3), mpx::ValueError);

  // maxlength: the long message is discarded, the connection stays usable.
  a.send_bytes(std::string_view("0123456789"));
  a.send_bytes(std::string_view("ok"));
  CHECK_THROWS_WITH(b.recv_bytes(5), Catch::Contains("longer than maxlength 5"));
  CHECK(b.recv_bytes(5) == "ok");

  std::array<std::byte, 8> buffer{};
  a.send_bytes(std::string_view("hello"));
  CHECK(b.recv_bytes_into(buffer) == 5);
  CHECK(std::string(reinterpret_cast<const char*>(buffer.data()), 5) == "hello");
  a.send_bytes(std::string_view("world"));
  CHECK(b.recv_bytes_into(buffer, 3) == 5);
  CHECK(std::string(reinterpret_cast<const char*>(buffer.data()) + 3, 5) == "world");
  a.send_bytes(std::string_view("too long"));
  try {
    (void)b.recv_bytes_into(buffer, 4);
    FAIL("BufferTooShort expected");
  } catch (const mpx::BufferTooShort& e) {
    CHECK(e.data() == "too long");
  }
  CHECK_FALSE(b.poll());  // consumed either way
  CHECK_THROWS_AS(b.recv_bytes_into(buffer, 9), mpx::ValueError);

  // A message that is not the type asked for.
  a.send(std::string("text"));
  CHECK_THROWS_AS(b.recv<int>(), mpx::SerializationError);
}

TEST_CASE("poll: no wait, timeouts, forever, and a message from another process wakes it", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  CHECK_FALSE(b.poll());
  CHECK_FALSE(b.poll(0s));
  auto begin = Clock::now();
  CHECK_FALSE(b.poll(0.1s));
  CHECK(Clock::now() - begin >= 90ms);
  a.send(1);
  CHECK(b.poll());
  CHECK(b.poll(std::nullopt));
  CHECK(b.recv<int>() == 1);

  mpx::Process p(helper(), send_after, a, 200);
  p.start();
  begin = Clock::now();
  CHECK(b.poll(30s));
  CHECK(Clock::now() - begin < 20s);
  CHECK(b.recv<std::string>() == "late");
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("close: closed(), operations on a closed connection, double close", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  CHECK_FALSE(a.closed());
  a.close();
  CHECK(a.closed());
  a.close();
  CHECK_THROWS_WITH(a.send(1), Catch::Contains("closed"));
  CHECK_THROWS_AS(a.recv(), mpx::ValueError);
  CHECK_THROWS_AS(a.poll(), mpx::ValueError);
  CHECK_THROWS_AS(a.fileno(), mpx::ValueError);
  // The other end sees EOF, and poll() says recv will not block.
  CHECK(b.poll());
  CHECK_THROWS_AS(b.recv(), mpx::EOFError);
}

TEST_CASE("simplex pipe: a read-only and a write-only end; the wrong direction is a ValueError", "[pipe]") {
  auto [r, w] = mpx::Pipe(false);
  CHECK(r.readable());
  CHECK_FALSE(r.writable());
  CHECK(w.writable());
  CHECK_FALSE(w.readable());
  CHECK_THROWS_WITH(w.recv(), Catch::Contains("connection is write-only"));
  CHECK_THROWS_AS(w.recv_bytes(), mpx::ValueError);
  CHECK_THROWS_WITH(w.poll(), Catch::Contains("connection is write-only"));
  CHECK_THROWS_WITH(r.send(1), Catch::Contains("connection is read-only"));
  CHECK_THROWS_AS(r.send_bytes(std::string_view("x")), mpx::ValueError);
  w.send(7);
  CHECK(r.recv<int>() == 7);

  // The direction travels with the end.
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  mpx::Process p(with(method), send_then_close, w, 3);
  p.start();
  w.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  for (int i = 0; i < 3; ++i) CHECK(r.recv<int>() == i);
  CHECK_THROWS_AS(r.recv(), mpx::EOFError);
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("the seed's one-way pipe under every start method: f(conn) sends [42, None, 'hello']", "[pipe]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process p(with(method, false), send_hello, child_conn);
  p.start();
  CHECK(parent_conn.recv().repr() == "[42, None, 'hello']");
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("a Connection passed under every start method works both ways", "[pipe]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [a, b] = mpx::Pipe();
  mpx::Process p(with(method), doubler, b);
  p.start();
  b.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  for (int i = 0; i < 50; ++i) {
    a.send(i);
    CHECK(a.recv<int>() == 2 * i);
  }
  a.send(-1);
  p.join();
  CHECK(p.exitcode() == 0);
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);  // the child ended: its end was released
}

TEST_CASE("a Connection captured by a fork closure attaches on first use", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  mpx::Process p(mpx::closure, [b]() mutable { b.send(std::string("from a closure")); },
                 mpx::ProcessOptions{"", true, mpx::StartMethod::fork});
  p.start();
  CHECK(a.recv<std::string>() == "from a closure");
  b.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  p.join();
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);
}

TEST_CASE("the seed's two-way example: a writer process, then a reader that answers, then the parent", "[pipe]") {
  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process pw(
      +[](mpx::Connection conn) { conn.send(std::vector<std::string>{"h1 reader~"}); }, parent_conn);
  mpx::Process pr(
      +[](mpx::Connection conn) {
        auto value = conn.recv<std::vector<std::string>>();
        conn.send(std::string(value.at(0) == "h1 reader~" ? "hi writer~~" : "wrong"));
      },
      child_conn);
  pw.start();
  pw.join();  // the writer is gone before anyone reads: its message waits in the pipe
  pr.start();
  pr.join();
  CHECK(parent_conn.recv<std::string>() == "hi writer~~");
  CHECK(pw.exitcode() == 0);
  CHECK(pr.exitcode() == 0);
}

TEST_CASE("EOF when the other end is closed, after the messages it sent", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  mpx::Process p(helper(), send_then_close, b, 5);
  p.start();
  b.close();  // Python's idiom: close the parent's copy; the child's end stays open
  for (int i = 0; i < 5; ++i) CHECK(a.recv<int>() == i);
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);
  CHECK(a.poll());  // at EOF, poll says recv will not block
  p.join();
}

TEST_CASE("closing the parent's copy after handing an end to a child does not cut the child off", "[pipe]") {
  auto method = GENERATE(mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [a, b] = mpx::Pipe();
  mpx::Process p(with(method), send_after, b, 100);
  p.start();
  b.close();  // before the child has even adopted it
  CHECK(a.recv<std::string>() == "late");
  p.join();
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);
}

TEST_CASE("EOF when the process holding the other end exits without closing it; poll() sees it right after join()",
          "[pipe]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [a, b] = mpx::Pipe();
  mpx::Process p(with(method), send_then_exit, b);
  p.start();
  b.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  p.join();
  CHECK(a.recv<std::string>() == "last words");
  CHECK(a.poll());  // no wait: the coordinator checks that the holder is gone
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);
}

TEST_CASE("EOF when the process holding the other end is SIGKILLed while the parent is blocked in recv", "[pipe]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [a, b] = mpx::Pipe();
  mpx::Process p(with(method), ready_then_block, b);
  p.start();
  b.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  CHECK(a.recv<std::string>() == "ready");
  std::thread killer([p]() mutable {
    std::this_thread::sleep_for(100ms);
    p.kill();
  });
  const auto begin = Clock::now();
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);
  CHECK(Clock::now() - begin >= 90ms);
  killer.join();
  p.join();
  CHECK(p.exitcode() == -SIGKILL);
  CHECK(a.poll());
}

TEST_CASE("a pipe whose ends were both released is gone: EOF for every later use", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  mpx::Process pa(helper(), do_nothing, a);
  mpx::Process pb(helper(), do_nothing, b);
  pa.start();
  pb.start();
  b.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  pa.join();
  pb.join();
  CHECK(a.poll(30s));  // b's holder died: EOF is ready (and this process holds a again, by using it)
  a.close();           // now nobody holds either end and nothing waits: the pipe is gone
  mpx::Connection b_again(mpx::adopt, b.ref());  // a copy of b, as a process decoding it later would get
  CHECK(b_again.poll());
  CHECK_THROWS_AS(b_again.recv(), mpx::EOFError);
  CHECK_THROWS_AS(b_again.send(1), mpx::EOFError);
}

TEST_CASE("10k messages arrive in order, in both directions", "[pipe]") {
  constexpr int count = 10'000;
  auto [a, b] = mpx::Pipe();
  mpx::Process sender(helper(), send_many, b, count);
  sender.start();
  int in_order = 0;
  for (int i = 0; i < count; ++i) {
    if (a.recv<int>() == i) ++in_order;
  }
  CHECK(in_order == count);
  sender.join();

  auto [c, d] = mpx::Pipe();
  mpx::Process checker(helper(), check_order, d, count);
  checker.start();
  for (int i = 0; i < count; ++i) c.send(i);
  CHECK(c.recv<int>() == count);
  checker.join();
  CHECK(checker.exitcode() == 0);
}

TEST_CASE("a Connection travels through a Queue", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  mpx::Queue<mpx::Connection> q;
  mpx::Process p(helper(), from_queue, q);
  p.start();
  q.put(b);
  b.close();  // Python semantics: EOF only after every copy is closed (issue 14)
  CHECK(a.recv<std::string>() == "via a queue");
  p.join();
  CHECK_THROWS_AS(a.recv(), mpx::EOFError);
}

TEST_CASE("fileno: readable while a message or EOF waits, not after it was received", "[pipe]") {
  auto [a, b] = mpx::Pipe();
  const int fd = b.fileno();
  CHECK(fd >= 0);
  CHECK(b.fileno() == fd);
  CHECK_FALSE(readable_fd(fd, 0));
  a.send(1);
  CHECK(readable_fd(fd, 30000));
  CHECK(b.poll());
  CHECK(b.recv<int>() == 1);
  CHECK_FALSE(readable_fd(fd, 0));  // the recv reply updated the mirror at once

  mpx::Process p(helper(), send_after, a, 100);
  p.start();
  CHECK(readable_fd(fd, 30000));
  CHECK(b.recv<std::string>() == "late");
  p.join();
  a.close();
  CHECK(readable_fd(fd, 30000));  // EOF is ready too
  CHECK_THROWS_AS(b.recv(), mpx::EOFError);
}

TEST_CASE("wait: connections and processes, timeouts, the ready ones in order", "[pipe]") {
  auto [x1, y1] = mpx::Pipe();
  auto [x2, y2] = mpx::Pipe();
  using Conns = std::vector<mpx::Connection>;

  auto begin = Clock::now();
  CHECK(mpx::wait(Conns{x1, x2}, 0.1s).empty());
  CHECK(Clock::now() - begin >= 90ms);
  CHECK(mpx::wait(Conns{x1, x2}, 0s).empty());

  // A message from another process.
  {
    auto [a, b] = mpx::Pipe();
    mpx::Process p(helper(), send_after, b, 100);
    p.start();
    auto ready = mpx::wait(Conns{x1, a, x2}, 30s);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].id() == a.id());
    CHECK(a.recv<std::string>() == "late");
    p.join();
  }

  // Several ready: all of them, in the order given.
  y2.send(2);
  y1.send(1);
  auto ready = mpx::wait(Conns{x1, x2});
  REQUIRE(ready.size() == 2);
  CHECK(ready[0].id() == x1.id());
  CHECK(ready[1].id() == x2.id());
  CHECK(x1.recv<int>() == 1);
  CHECK(x2.recv<int>() == 2);

  // A process is ready when it ends, and stays ready once reaped.
  mpx::Process sleeper(helper(), sleep_ms, 150);
  sleeper.start();
  auto mixed = mpx::wait({mpx::Waitable(x1), mpx::Waitable(sleeper)}, 30s);
  REQUIRE(mixed.size() == 1);
  REQUIRE(std::holds_alternative<mpx::Process>(mixed[0]));
  CHECK(std::get<mpx::Process>(mixed[0]).pid() == sleeper.pid());
  sleeper.join();
  CHECK(mpx::wait({mpx::Waitable(x1), mpx::Waitable(sleeper)}, 0s).size() == 1);

  // A connection and a live process together.
  mpx::Process long_sleeper(helper(), sleep_ms, 60'000);
  long_sleeper.start();
  y2.send(3);
  auto some = mpx::wait({mpx::Waitable(long_sleeper), mpx::Waitable(x2)}, 30s);
  REQUIRE(some.size() == 1);
  REQUIRE(std::holds_alternative<mpx::Connection>(some[0]));
  CHECK(std::get<mpx::Connection>(some[0]).recv<int>() == 3);
  long_sleeper.kill();
  some = mpx::wait({mpx::Waitable(long_sleeper), mpx::Waitable(x2)}, 30s);
  REQUIRE(some.size() == 1);
  CHECK(std::holds_alternative<mpx::Process>(some[0]));
  long_sleeper.join();

  // EOF makes a connection ready.
  y1.close();
  CHECK(mpx::wait(Conns{x1, x2}, 30s).size() == 1);
}

TEST_CASE("Listener and Client with the right key: send, recv, poll, EOF", "[pipe][listener]") {
  auto address = GENERATE(std::string("tcp://127.0.0.1:*"), std::string());
  mpx::Listener listener(address, std::string("secret key"));
  CHECK((listener.address().starts_with("tcp://127.0.0.1:") || listener.address().starts_with("ipc://")));
  CHECK_FALSE(listener.address().ends_with(":0"));
  mpx::Process p(helper(), client_echo, listener.address(), std::string("secret key"));
  p.start();
  auto conn = listener.accept();
  CHECK(listener.last_accepted().has_value());
  CHECK(conn.poll(30s));
  std::array<std::byte, 16> buffer{};
  CHECK(conn.recv_bytes_into(buffer, 2) == 4);
  CHECK(std::string(reinterpret_cast<const char*>(buffer.data()) + 2, 4) == "ping");
  CHECK(conn.fileno() >= 0);
  conn.send(41);
  CHECK(mpx::wait(std::vector<mpx::Connection>{conn}, 30s).size() == 1);
  CHECK(conn.recv<int>() == 42);
  CHECK_THROWS_AS(conn.recv(), mpx::EOFError);
  p.join();
  CHECK(p.exitcode() == 0);
  conn.close();
  CHECK(conn.closed());
  // A direct connection is a socket of this process: it cannot travel as an argument.
  CHECK_THROWS_AS(mpx::Process(helper(), do_nothing, conn), mpx::SerializationError);
}

TEST_CASE("Listener and Client with a wrong key: AuthenticationError on both sides", "[pipe][listener]") {
  mpx::Listener listener("tcp://127.0.0.1:0", std::string("right"));
  mpx::Queue<std::string> report;
  mpx::Process p(helper(), client_report, listener.address(), std::string("wrong"), report);
  p.start();
  CHECK_THROWS_WITH(listener.accept(), Catch::Contains("digest received was wrong"));
  const auto client_side = report.get(true, 30s);
  CHECK_THAT(client_side, Catch::StartsWith("AuthenticationError") && Catch::Contains("digest was rejected"));
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("Listener: a silent client and one claiming a huge handshake message delay no other client",
          "[pipe][listener]") {
  mpx::Listener listener("tcp://127.0.0.1:*", std::string("key"));
  const int silent = mpx_test::raw_connect(listener.address());
  const int huge = mpx_test::raw_connect(listener.address());
  const unsigned char claim[4] = {0x10, 0, 0, 0};  // "a handshake message of 256 MiB follows"
  REQUIRE(::write(huge, claim, sizeof claim) == sizeof claim);
  std::promise<std::string> received;
  auto got = received.get_future();
  std::thread acceptor([&] {
    for (int attempt = 0; attempt < 3; ++attempt) {  // the huge one may be refused first
      try {
        auto conn = listener.accept();
        received.set_value(conn.recv_bytes());
        return;
      } catch (const std::exception&) {
      }
    }
    received.set_value("nothing accepted");
  });
  std::thread client([&] {
    try {
      auto conn = mpx::Client(listener.address(), std::string("key"));
      conn.send_bytes(std::string_view("hello"));
    } catch (const std::exception&) {
    }
  });
  const bool prompt = got.wait_for(5s) == std::future_status::ready;
  CHECK(prompt);
  CHECK(mpx_test::eof_within(huge, 5000ms));  // refused at its length: closed, not read for 256 MiB
  ::close(silent);  // (without the fix, this lets the blocked accept go on)
  ::close(huge);
  client.join();
  acceptor.join();
  CHECK(got.get() == "hello");
}

TEST_CASE("Listener and Client: a peer silent through the handshake timeout is dropped", "[pipe][listener]") {
  ScopedEnv short_timeout("MPX_HANDSHAKE_TIMEOUT_MS", "1000");
  mpx::Listener listener("tcp://127.0.0.1:*", std::string("key"));
  const int silent = mpx_test::raw_connect(listener.address());
  const auto begin = std::chrono::steady_clock::now();
  std::promise<std::string> outcome;
  auto result = outcome.get_future();
  std::thread acceptor([&] {
    try {
      (void)listener.accept();
      outcome.set_value("accepted");
    } catch (const mpx::AuthenticationError& e) {
      outcome.set_value(e.what());
    } catch (const std::exception& e) {
      outcome.set_value(std::string("not an AuthenticationError: ") + e.what());
    }
  });
  const bool dropped = result.wait_for(10s) == std::future_status::ready;
  CHECK(dropped);
  CHECK(mpx_test::eof_within(silent, 1000ms));
  ::close(silent);
  acceptor.join();
  CHECK(std::chrono::steady_clock::now() - begin >= 900ms);
  CHECK_THAT(result.get(), Catch::Contains("did not complete the handshake within 1000 ms"));

  // The other way round: a listener that never sends its challenge (this one has no key).
  mpx::Listener mute("tcp://127.0.0.1:*");
  std::promise<std::string> client_outcome;
  auto client_result = client_outcome.get_future();
  std::thread client([&] {
    try {
      (void)mpx::Client(mute.address(), std::string("key"));
      client_outcome.set_value("connected");
    } catch (const mpx::AuthenticationError& e) {
      client_outcome.set_value(e.what());
    } catch (const std::exception& e) {
      client_outcome.set_value(std::string("not an AuthenticationError: ") + e.what());
    }
  });
  auto server_side = mute.accept();
  const bool gave_up = client_result.wait_for(10s) == std::future_status::ready;
  CHECK(gave_up);
  server_side.close();  // (without the fix, this ends the client's wait)
  client.join();
  CHECK_THAT(client_result.get(), Catch::Contains("did not answer within the handshake timeout"));
}

TEST_CASE("Listener without a key, a big message, and recv_bytes maxlength on a socket", "[pipe][listener]") {
  mpx::Listener listener("ipc:///tmp/mpx-pipe-test-" + std::to_string(::getpid()));
  mpx::Process p(helper(), client_no_key, listener.address());
  p.start();
  auto conn = listener.accept();
  CHECK(conn.recv<std::string>() == "plain");
  conn.close();
  p.join();
  CHECK(p.exitcode() == 0);

  auto [a, b] = mpx::Pipe();
  std::string big(1 << 20, 'x');
  a.send_bytes(big);
  CHECK(b.recv_bytes() == big);

  mpx::Listener local("tcp://127.0.0.1:*");
  auto client = mpx::Client(local.address());
  auto server = local.accept();
  client.send_bytes(big);
  client.send_bytes(std::string_view("small"));
  CHECK_THROWS_AS(server.recv_bytes(1000), mpx::ValueError);
  CHECK(server.recv_bytes(1000) == "small");
  CHECK_FALSE(server.poll(0.05s));
  client.close();
  CHECK(server.poll(30s));
  CHECK_THROWS_AS(server.recv_bytes(), mpx::EOFError);
}

TEST_CASE("messages a reader took in a batch but has not read go on with the end, in order", "[pipe]") {
  constexpr int count = 200;  // more than one batch
  auto [a, b] = mpx::Pipe();
  for (int i = 0; i < count; ++i) b.send(i);
  CHECK(a.recv<int>() == 0);  // takes a batch; the rest of it waits in this process
  CHECK(a.poll());

  // Handing the end to another process gives the unread part back first: the child reads 1..199, nothing lost.
  mpx::Process reader(helper(), check_order_from, a, 1, count - 1);
  reader.start();
  CHECK(b.recv<int>() == count - 1);
  reader.join();
  CHECK(reader.exitcode() == 0);

  // A readiness mirror (fileno) sees what a batch took: the descriptor is readable while unread messages remain.
  auto [c, d] = mpx::Pipe();
  for (int i = 0; i < 10; ++i) d.send(i);
  CHECK(c.recv<int>() == 0);
  CHECK(readable_fd(c.fileno(), 10'000));
  for (int i = 1; i < 10; ++i) CHECK(c.recv<int>() == i);
  CHECK_FALSE(c.poll());
}

TEST_CASE("zero and negative timeouts do not wait: poll and wait", "[pipe][timeout]") {
  auto [a, b] = mpx::Pipe();
  for (const auto seconds : {-1.0, -0.001, 0.0}) {
    const auto timeout = std::chrono::duration<double>(seconds);
    const auto begin = Clock::now();
    CHECK_FALSE(b.poll(timeout));
    CHECK(mpx::wait(std::vector<mpx::Connection>{b}, timeout).empty());
    CHECK(Clock::now() - begin < 10s);
  }
}

TEST_CASE("two processes write on one end: one exiting early is no EOF; EOF once both are gone", "[pipe][holders]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [reader, writer] = mpx::Pipe(false);
  auto [said_in, said_out] = mpx::Pipe(false);
  auto [go_in, go_out] = mpx::Pipe(false);
  mpx_test::Children children;
  auto& late = children.start(with(method), send_wait_send, writer, 1000, 5, 5, said_out, go_in);
  (void)said_in.recv();  // `late` holds the end and has written on it
  // `early` writes after it and ends: it is the last process that wrote on the end.
  auto& early = children.start(with(method), send_many, writer, 5);
  writer.close();  // this process's copy, handed to both
  REQUIRE(early.join(30s));
  CHECK(early.exitcode() == 0);

  int next_early = 0, next_late = 1000, good = 0;
  for (int i = 0; i < 10; ++i) {
    REQUIRE(reader.poll(30s));  // anti-hang bound
    const int x = reader.recv<int>();
    good += x < 1000 ? x == next_early++ : x == next_late++;
  }
  CHECK(good == 10);
  // `late` still holds the end: nothing to read, and no EOF.
  CHECK_FALSE(reader.poll(0.3s));
  go_out.send(0);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(reader.poll(30s));
    CHECK(reader.recv<int>() == 1005 + i);
  }
  REQUIRE(late.join(30s));
  CHECK(late.exitcode() == 0);
  REQUIRE(reader.poll(30s));
  CHECK_THROWS_AS(reader.recv(), mpx::EOFError);
}

TEST_CASE("Python's idiom: each side closes its copy of the other's end; the child writes after that, EOF after it ends",
          "[pipe][holders]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [parent_end, child_end] = mpx::Pipe();
  auto [said_in, said_out] = mpx::Pipe(false);
  mpx_test::Children children;
  auto& child = children.start(with(method), close_parents_copy_then_double, parent_end, child_end, said_out);
  child_end.close();  // the parent's copy of the child's end
  CHECK_FALSE(said_in.recv<bool>());  // the child closed its copy of this end: no EOF for it, this process holds it
  for (int i = 0; i < 5; ++i) {
    parent_end.send(i);
    REQUIRE(parent_end.poll(30s));  // anti-hang bound
    CHECK(parent_end.recv<int>() == 2 * i);
  }
  parent_end.send(-1);
  REQUIRE(parent_end.poll(30s));
  CHECK_THROWS_AS(parent_end.recv(), mpx::EOFError);
  REQUIRE(child.join(30s));
  CHECK(child.exitcode() == 0);
}

TEST_CASE("a reader that polled and exited without reading leaves every message to the end's other holders, in order",
          "[pipe][holders]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  constexpr int n = 200;
  auto [reader, writer] = mpx::Pipe(false);
  auto [said_in, said_out] = mpx::Pipe(false);
  mpx_test::Children children;
  int read_by_child = 0;
  std::optional<mpx::Connection> release_child;  // a child still running, told to end once this process has read
  SECTION("it polled: on the direct path it took messages from the writer's ring") {
    auto [listening_in, listening_out] = mpx::Pipe(false);
    auto& child = children.start(with(method), poll_then_exit, reader, listening_out, said_out);
    (void)listening_in.recv();  // the child is the end's reader now: this process's sends may go straight to it
    for (int i = 0; i < n; ++i) writer.send(i);
    CHECK(said_in.recv<bool>());
    REQUIRE(child.join(30s));
    CHECK(child.exitcode() == 0);
  }
  SECTION("it received one message: the rest of the batch it took goes back") {
    for (int i = 0; i < n; ++i) writer.send(i);
    auto& child = children.start(with(method), recv_one_then_exit, reader, said_out);
    CHECK(said_in.recv<int>() == 0);
    read_by_child = 1;
    REQUIRE(child.join(30s));
    CHECK(child.exitcode() == 0);
  }
  SECTION("it received one message and closed its copy, and is still running") {
    for (int i = 0; i < n; ++i) writer.send(i);
    auto [go_in, go_out] = mpx::Pipe(false);
    children.start(with(method), recv_one_then_close, reader, said_out, go_in);
    CHECK(said_in.recv<int>() == 0);
    read_by_child = 1;
    release_child = go_out;
  }
  // This process kept its copy of the reading end: what the child did not read is still there, in order, and what is
  // sent now comes after it.
  int good = 0;
  for (int i = read_by_child; i < n; ++i) {
    REQUIRE(reader.poll(30s));  // anti-hang bound
    good += reader.recv<int>() == i;
  }
  CHECK(good == n - read_by_child);
  writer.send(n);
  REQUIRE(reader.poll(30s));
  CHECK(reader.recv<int>() == n);
  CHECK_FALSE(reader.poll(0s));
  if (release_child) release_child->send(0);
  children.join_all();
}

TEST_CASE("an end written on after it was handed to a child, then closed: the child's messages, then EOF",
          "[pipe][holders]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  auto [reader, writer] = mpx::Pipe(false);
  mpx_test::Children children;
  mpx::Process& child = children.procs.emplace_back(with(method), send_many, writer, 5);  // encodes: hands it over
  writer.send(-1);  // this process uses its copy after handing it over
  child.start();
  writer.close();  // the copy in transit to the child still holds the end until the child adopts it
  REQUIRE(reader.poll(30s));  // anti-hang bound
  CHECK(reader.recv<int>() == -1);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(reader.poll(30s));
    CHECK(reader.recv<int>() == i);
  }
  REQUIRE(child.join(30s));
  CHECK(child.exitcode() == 0);
  REQUIRE(reader.poll(30s));
  CHECK_THROWS_AS(reader.recv(), mpx::EOFError);
}
