// The wire layer: envelope headers, bounded decoding, transports.
#include <catch2/catch.hpp>

#include <mpx/object.hpp>

#include "wire/envelope.hpp"
#include "wire/limits.hpp"
#include "wire/stream_framing.hpp"
#include "wire/transport.hpp"

using namespace mpx;

TEST_CASE("a header survives encode and decode", "[wire]") {
  wire::Header h;
  h.kind = wire::Kind::stats;
  h.sender = 4242;
  h.object = 7;
  h.correlation = 99;
  h.flags = static_cast<std::uint32_t>(wire::Flag::trace);
  h.timestamp_ns = wire::monotonic_ns();
  auto frame = wire::encode_header(h);
  auto back = wire::decode_header(frame.data(), frame.size());
  CHECK(back.version == wire::protocol_version);
  CHECK(back.kind == wire::Kind::stats);
  CHECK(back.sender == 4242);
  CHECK(back.object == 7);
  CHECK(back.correlation == 99);
  CHECK(back.flags == 1);
  CHECK(back.timestamp_ns == h.timestamp_ns);
}

TEST_CASE("a header that claims 4G entries is rejected without allocating", "[wire]") {
  const char bytes[] = {'\xdd', '\xff', '\xff', '\xff', '\xff'};
  CHECK_THROWS_AS(wire::decode_header(bytes, sizeof bytes), ProtocolError);
  CHECK_THROWS_AS(detail::unpack_bounded(bytes, sizeof bytes), ProtocolError);
  const char map32[] = {'\xdf', '\xff', '\xff', '\xff', '\xff'};
  CHECK_THROWS_WITH(detail::unpack_bounded(map32, sizeof map32), Catch::Contains("limits"));
  const char str32[] = {'\xdb', '\x7f', '\xff', '\xff', '\xff'};
  CHECK_THROWS_AS(detail::unpack_bounded(str32, sizeof str32), ProtocolError);
}

TEST_CASE("malformed headers are rejected with a reason", "[wire]") {
  wire::Header h;
  h.kind = wire::Kind::ping;
  auto good = wire::encode_header(h);
  std::string bytes(static_cast<const char*>(good.data()), good.size());

  SECTION("truncated") {
    CHECK_THROWS_WITH(wire::decode_header(bytes.data(), bytes.size() - 1), Catch::Contains("truncated"));
  }
  SECTION("trailing bytes") {
    std::string longer = bytes + "x";
    CHECK_THROWS_WITH(wire::decode_header(longer.data(), longer.size()), Catch::Contains("trailing"));
  }
  SECTION("wrong version") {
    std::string v = bytes;
    v[1] = 9;
    CHECK_THROWS_WITH(wire::decode_header(v.data(), v.size()), Catch::Contains("protocol version 9"));
  }
  SECTION("unknown kind") {
    auto other = encode(std::make_tuple(1, 999, 0, 0, 0, 0, 0));
    CHECK_THROWS_WITH(wire::decode_header(other.data(), other.size()), Catch::Contains("unknown message kind 999"));
  }
  SECTION("wrong field count") {
    auto other = encode(std::make_tuple(1, 11, 0));
    CHECK_THROWS_WITH(wire::decode_header(other.data(), other.size()), Catch::Contains("7 fields"));
  }
  SECTION("negative field") {
    auto other = encode(std::make_tuple(1, 11, -5, 0, 0, 0, 0));
    CHECK_THROWS_WITH(wire::decode_header(other.data(), other.size()), Catch::Contains("unsigned"));
  }
  SECTION("empty") { CHECK_THROWS_AS(wire::decode_header("", 0), ProtocolError); }
}

TEST_CASE("bodies decode within the limits and not beyond", "[wire]") {
  std::vector<int> small(1000, 7);
  auto bytes = encode(small);
  CHECK(decode<std::vector<int>>(bytes) == small);

  // Nesting deeper than the limit is refused.
  std::string deep(wire::limits().max_depth + 2, '\x91');
  deep.push_back('\xc0');
  CHECK_THROWS_WITH(detail::unpack_bounded(deep.data(), deep.size()), Catch::Contains("deeply"));
  // A type mismatch is a SerializationError, not a crash.
  CHECK_THROWS_AS(decode<std::vector<int>>(encode(std::string("no"))), SerializationError);
}

TEST_CASE("an envelope travels over a real socket pair", "[wire]") {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  const std::string endpoint = wire::bind(router, "tcp://127.0.0.1:*");
  CHECK(endpoint.rfind("tcp://127.0.0.1:", 0) == 0);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  wire::configure(dealer, endpoint);
  dealer.connect(endpoint);

  auto e = wire::make(wire::Kind::ping, 3, 5, std::string("payload"));
  e.body.emplace_back(std::string(1 << 16, 'r'));  // a raw-bytes frame rides along untouched
  wire::send(dealer, e, 77);
  zmq::message_t routing;
  auto got = wire::recv(router, &routing);
  REQUIRE(got);
  CHECK(got->header.kind == wire::Kind::ping);
  CHECK(got->header.sender == 77);
  CHECK(got->header.object == 3);
  CHECK(got->header.correlation == 5);
  CHECK(got->body_as<std::string>() == "payload");
  REQUIRE(got->body.size() == 2);
  CHECK(got->body[1].size() == (1u << 16));

  auto reply = wire::make_reply(got->header, wire::Kind::pong, encode(1));
  wire::send(router, reply, 0, &routing);
  auto back = wire::recv(dealer);
  REQUIRE(back);
  CHECK(back->header.kind == wire::Kind::pong);
  CHECK(back->header.correlation == 5);

  // Nothing waiting: would-block is an empty optional, not an exception.
  CHECK_FALSE(wire::recv(dealer, nullptr, true).has_value());
}

TEST_CASE("a malformed multipart message is drained, so the next one is read intact", "[wire]") {
  zmq::context_t ctx;
  zmq::socket_t a(ctx, zmq::socket_type::pair), b(ctx, zmq::socket_type::pair);
  a.bind("inproc://drain");
  b.connect("inproc://drain");
  a.send(zmq::str_buffer("garbage"), zmq::send_flags::sndmore);
  a.send(zmq::str_buffer("more garbage"), zmq::send_flags::none);
  auto e = wire::make(wire::Kind::ping, 0, 1, 0);
  wire::send(a, e, 1);
  CHECK_THROWS_AS(wire::recv(b), ProtocolError);
  auto ok = wire::recv(b);
  REQUIRE(ok);
  CHECK(ok->header.kind == wire::Kind::ping);
}

TEST_CASE("side-door packets: whole ones come out intact, partial ones wait, malformed ones throw", "[wire]") {
  auto e = wire::make(wire::Kind::pool_take, 7, 42, std::make_tuple(256, 3));
  e.body.emplace_back(std::string_view("raw\0bytes", 9));
  std::string stream;
  wire::append_packet(stream, e, 1234);
  const std::size_t one = stream.size();
  auto second = wire::make(wire::Kind::ping, 0, 43, Object{});
  wire::append_packet(stream, second, 1234);

  std::size_t start = 0;
  CHECK_FALSE(wire::take_packet(std::string_view(stream).substr(0, one - 1), start, 1 << 20));  // not whole yet
  CHECK(start == 0);
  auto a = wire::take_packet(stream, start, 1 << 20);
  REQUIRE(a);
  CHECK(start == one);
  CHECK(a->header.kind == wire::Kind::pool_take);
  CHECK(a->header.sender == 1234);
  CHECK(a->header.object == 7);
  CHECK(a->header.correlation == 42);
  REQUIRE(a->body.size() == 2);
  CHECK((a->body_as<std::tuple<int, int>>()) == std::make_tuple(256, 3));
  CHECK(std::string(static_cast<const char*>(a->body[1].data()), a->body[1].size()) == std::string("raw\0bytes", 9));
  auto b = wire::take_packet(stream, start, 1 << 20);
  REQUIRE(b);
  CHECK(b->header.kind == wire::Kind::ping);
  CHECK(start == stream.size());
  CHECK_FALSE(wire::take_packet(stream, start, 1 << 20));

  auto rejects = [](std::string bytes, std::size_t max = 1 << 20) {
    std::size_t at = 0;
    CHECK_THROWS_AS(wire::take_packet(bytes, at, max), ProtocolError);
  };
  std::string packet = stream.substr(0, one);
  rejects(packet, one - 5);                                   // over the limit
  rejects(std::string("\x04\0\0\0\x01\0\0\0", 8));         // a size too small for its frame count
  std::string no_frames = packet;
  no_frames[4] = no_frames[5] = no_frames[6] = no_frames[7] = 0;
  rejects(no_frames);                                          // no frames at all
  std::string many = packet;
  many[4] = static_cast<char>(0xff);
  rejects(many);                                               // more frames than the protocol allows
  std::string trailing = packet;
  trailing[0] = static_cast<char>(trailing[0] + 1);
  trailing.push_back('x');
  rejects(trailing);                                           // bytes after its frames
  std::string bad_header = packet;
  bad_header[12] = '\x01';
  rejects(bad_header);                                         // the header is not a header
}

TEST_CASE("transports are chosen by the endpoint string", "[wire]") {
  CHECK(wire::transport_of("ipc:///tmp/x") == wire::Transport::ipc);
  CHECK(wire::transport_of("tcp://127.0.0.1:5555") == wire::Transport::tcp);
  CHECK_THROWS_WITH(wire::transport_of("udp://x"), Catch::Contains("udp://x"));
  CHECK_THROWS_WITH(wire::ipc_path("ipc:///" + std::string(200, 'a')), Catch::Contains("longer"));
  CHECK(wire::ipc_path("ipc:///tmp/sock") == "/tmp/sock");
}

TEST_CASE("length records: little-endian u32 lengths, read back in order, a cut frame throws", "[wire]") {
  std::string frame;
  wire::append_record(frame, "first");
  wire::append_record(frame, "");
  wire::append_record(frame, std::string(300, 'x'));
  CHECK(frame.substr(0, 4) == std::string("\x05\0\0\0", 4));
  CHECK(frame.substr(13, 4) == std::string("\x2c\x01\0\0", 4));  // 300

  wire::RecordReader records(frame, "a test frame");
  CHECK(records.next() == std::optional<std::string_view>("first"));
  CHECK(records.next() == std::optional<std::string_view>(""));
  CHECK(records.next() == std::optional<std::string_view>(std::string(300, 'x')));
  CHECK_FALSE(records.next());

  wire::RecordReader in_length(std::string_view(frame).substr(0, 11), "a test frame");  // 9 + 2 bytes of a length
  (void)in_length.next();
  CHECK_THROWS_WITH(in_length.next(), "mpx: a test frame ends inside a length");
  wire::RecordReader in_message(std::string_view(frame).substr(0, 7), "a test frame");
  CHECK_THROWS_WITH(in_message.next(), "mpx: a test frame ends inside a message");
}

TEST_CASE("Python's connection framing: big-endian i32 lengths, -1 then u64 for long ones, bounded", "[wire]") {
  const auto short_length = wire::python_length(0x01020304);
  CHECK(std::string(short_length.bytes, short_length.size) == "\x01\x02\x03\x04");
  const auto long_length = wire::python_length(std::uint64_t{1} << 31);
  CHECK(std::string(long_length.bytes, long_length.size) == std::string("\xff\xff\xff\xff\0\0\0\0\x80\0\0\0", 12));
  CHECK(wire::python_short_length(long_length.bytes) == -1);
  CHECK(wire::python_long_length(long_length.bytes + 4) == std::uint64_t{1} << 31);

  std::string stream;
  for (std::string_view message : {"hello", "world"}) {
    const auto length = wire::python_length(message.size());
    stream.append(length.bytes, length.size);
    stream.append(message);
  }
  std::size_t start = 0;
  CHECK_FALSE(wire::take_python_frame(std::string_view(stream).substr(0, 8), start, 1024, "a test stream"));
  CHECK(start == 0);
  CHECK(wire::take_python_frame(stream, start, 1024, "a test stream") == std::optional<std::string_view>("hello"));
  CHECK(wire::take_python_frame(stream, start, 1024, "a test stream") == std::optional<std::string_view>("world"));
  CHECK(start == stream.size());
  start = 0;
  CHECK_THROWS_AS(wire::take_python_frame(stream, start, 4, "a test stream"), ProtocolError);  // over the bound
  start = 0;
  CHECK_THROWS_AS(wire::take_python_frame(std::string("\xff\xff\xff\xfe", 4), start, 1024, "a test stream"),
                  ProtocolError);  // negative, and not -1
}
