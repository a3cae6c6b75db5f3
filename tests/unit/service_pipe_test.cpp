// The pipe service's state machine, driven directly through a reply sink (service_host.hpp): no process, no socket.
// The holder is this process: the service checks that a holder is still there, and a made-up pid would not be.
#include <unistd.h>

#include "service_host.hpp"

using namespace mpx_test;
using K = mpx::wire::Kind;
using E = mpx::wire::ErrorCode;

namespace {

using State = std::tuple<bool, std::uint64_t>;  // ready, version

const std::uint64_t me = static_cast<std::uint64_t>(::getpid());

struct PipeFixture {
  ReplySink host;
  std::unique_ptr<services::Service> service = services::install_pipes(host);
  std::uint64_t reader = 0, writer = 0;

  PipeFixture() {
    host.deliver_args(K::pipe_create, 0, me, std::make_tuple(false));  // simplex: (reader, writer)
    std::tie(reader, writer) = host.take_one().body<std::tuple<std::uint64_t, std::uint64_t>>();
  }
  void send(std::string message) { host.deliver(K::pipe_send, writer, me, {nil(), std::move(message)}); }
  void recv(std::int64_t wait_ms, std::uint32_t max_items = 1) {
    host.deliver_args(K::pipe_recv, reader, me, std::make_tuple(wait_ms, max_items));
  }
};

}  // namespace

TEST_CASE("pipe service: messages are received in order, in a batch when asked", "[service][pipe]") {
  PipeFixture p;
  p.send("one");
  p.send("two");
  p.send("three");
  CHECK(p.host.take().empty());  // sends are posted
  p.recv(0);
  auto reply = p.host.take_one();
  CHECK(reply.kind() == K::ok);
  CHECK(reply.frame(1) == "one");
  p.recv(0, 8);
  reply = p.host.take_one();
  REQUIRE(reply.envelope.body.size() == 3);
  CHECK(reply.frame(1) == "two");
  CHECK(reply.frame(2) == "three");
  CHECK_FALSE(std::get<0>(reply.body<State>()));  // empty now, the writer still held: not ready
}

TEST_CASE("pipe service: a waiting receiver is answered by the next send, or at its deadline", "[service][pipe]") {
  PipeFixture p;
  p.recv(-1);
  CHECK(p.host.take().empty());
  p.send("hello");
  auto reply = p.host.take_one();
  CHECK(reply.frame(1) == "hello");

  p.recv(60'000);
  p.host.advance(1s);
  CHECK(p.host.take().empty());
  p.host.advance(61s);
  CHECK(p.host.take_one().error_code() == code(E::timeout));
  p.recv(0);
  CHECK(p.host.take_one().error_code() == code(E::timeout));  // 0: at once
}

TEST_CASE("pipe service: EOF once the writing end is released and the inbox is read", "[service][pipe]") {
  PipeFixture p;
  p.send("last");
  p.host.deliver(K::pipe_close, p.writer, me, {nil()});
  p.recv(-1);
  CHECK(p.host.take_one().frame(1) == "last");  // what was sent before the close is read first
  p.recv(-1);
  CHECK(p.host.take_one().error_code() == code(E::eof));

  // A receiver waiting when the writer goes gets EOF then.
  PipeFixture q;
  q.recv(-1);
  CHECK(q.host.take().empty());
  q.host.deliver(K::pipe_close, q.writer, me, {nil()});
  CHECK(q.host.take_one().error_code() == code(E::eof));
}

TEST_CASE("pipe service: an unknown end reads as EOF; bad bodies are malformed", "[service][pipe]") {
  PipeFixture p;
  // A pipe end that is gone or never was is EOF, as Python's closed connection (PROTOCOL.md, "Pipes").
  p.host.deliver_args(K::pipe_recv, 987654, me, std::make_tuple(std::int64_t{0}, std::uint32_t{1}));
  CHECK(p.host.take_one().error_code() == code(E::eof));
  p.host.deliver_args(K::pipe_recv, p.writer, me, std::make_tuple(std::int64_t{0}, std::uint32_t{1}));
  CHECK(p.host.take_one().error_code() == code(E::value));  // write-only
  CHECK_THROWS_AS(p.host.deliver(K::pipe_send, p.writer, me, {nil()}), mpx::ProtocolError);        // no message
  CHECK_THROWS_AS(p.host.deliver(K::pipe_send, p.reader, me, {nil(), "x"}), mpx::ProtocolError);   // read-only
  CHECK_THROWS_AS(p.host.deliver_args(K::pipe_recv, p.reader, me, std::make_tuple(std::int64_t{0}, std::uint32_t{0})),
                  mpx::ProtocolError);
  p.recv(0);
  CHECK(p.host.take_one().error_code() == code(E::timeout));  // nothing got in
}
