// 100,000 random and mutated messages at the coordinator's socket: it keeps serving and counts every one. The side
// door (a unix stream socket for local processes) refuses what it must, and a broken stream costs only its connection.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <cstring>
#include <optional>
#include <random>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "wire/envelope.hpp"
#include "wire/transport.hpp"

using namespace mpx;

namespace {

std::tuple<std::uint64_t, std::uint64_t, std::uint64_t> coordinator_stats() {
  auto reply = runtime::Channel::current().request(wire::make(wire::Kind::stats, 0, 0, Object{}),
                                                   std::chrono::milliseconds(10000));
  runtime::expect_ok(reply);
  return reply.body_as<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>>();
}

// A message that is malformed by construction, so the expected count is exact.
std::vector<std::string> hostile_message(std::mt19937_64& rng, const std::string& valid_header) {
  std::uniform_int_distribution<int> pick(0, 7);
  std::uniform_int_distribution<int> byte(0, 255);
  auto random_bytes = [&](std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(byte(rng));
    return s;
  };
  switch (pick(rng)) {
    case 0: {  // random bytes that do not start with a 7-element fixarray
      std::string s = random_bytes(1 + rng() % 64);
      if (static_cast<unsigned char>(s[0]) == 0x97) s[0] = '\x96';
      return {s};
    }
    case 1:  // a header that claims 4G entries
      return {std::string("\xdd\xff\xff\xff\xff", 5), "body"};
    case 2: {  // a valid header, truncated
      return {valid_header.substr(0, 1 + rng() % (valid_header.size() - 1))};
    }
    case 3: {  // a valid header with a wrong protocol version
      std::string s = valid_header;
      s[1] = static_cast<char>(2 + rng() % 100);
      return {s, random_bytes(rng() % 16)};
    }
    case 4: {  // a valid header plus trailing garbage
      return {valid_header + random_bytes(1 + rng() % 8)};
    }
    case 5: {  // an unknown kind
      return {encode(std::make_tuple(1, 200 + rng() % 1000, 1, 0, 0, 0, 0))};
    }
    case 6: {  // a known kind whose body is garbage
      auto h = encode(std::make_tuple(1, static_cast<int>(wire::Kind::process_error), 1, 0, 0, 0, 0));
      return {h, random_bytes(1 + rng() % 32)};
    }
    default: {  // a known kind with no body at all where one is required
      return {encode(std::make_tuple(1, static_cast<int>(wire::Kind::process_error_query), 1, 0, 0, 0, 0))};
    }
  }
}

}  // namespace

TEST_CASE("hostile bytes are rejected and counted; the coordinator keeps serving", "[fuzz]") {
  auto [received_before, malformed_before, actors_before] = coordinator_stats();
  (void)received_before;
  (void)actors_before;

  zmq::socket_t attacker(runtime::context(), zmq::socket_type::dealer);
  const std::string endpoint = runtime::state().session.coordinator_endpoint;
  wire::configure(attacker, endpoint);
  attacker.set(zmq::sockopt::rcvhwm, 0);
  attacker.connect(endpoint);

  wire::Header ping;
  ping.kind = wire::Kind::ping;
  auto frame = wire::encode_header(ping);
  const std::string valid_header(static_cast<const char*>(frame.data()), frame.size());
  REQUIRE(static_cast<unsigned char>(valid_header[0]) == 0x97);

  std::mt19937_64 rng(20261123);
  constexpr int total = 100000;
  for (int i = 0; i < total; ++i) {
    auto parts = hostile_message(rng, valid_header);
    for (std::size_t p = 0; p < parts.size(); ++p) {
      attacker.send(zmq::buffer(parts[p]), p + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    // Error replies come back for the ones whose header was readable; drop them as we go.
    zmq::message_t drop;
    while (attacker.recv(drop, zmq::recv_flags::dontwait)) {
    }
  }
  // A ping through the same socket proves the coordinator got through the whole batch and still answers.
  auto probe = wire::make(wire::Kind::ping, 0, 123456789, Object{});
  wire::send(attacker, probe, 1);
  bool answered = false;
  for (int tries = 0; tries < 200000 && !answered; ++tries) {
    zmq::pollitem_t item{attacker.handle(), 0, ZMQ_POLLIN, 0};
    REQUIRE(zmq::poll(&item, 1, std::chrono::milliseconds(30000)) == 1);
    try {
      auto reply = wire::recv(attacker);
      answered = reply && reply->header.kind == wire::Kind::pong && reply->header.correlation == 123456789;
    } catch (const ProtocolError&) {
    }
  }
  CHECK(answered);

  auto [received, malformed, actors] = coordinator_stats();
  (void)received;
  (void)actors;
  CHECK(malformed - malformed_before == total);
}

namespace {

int connect_side_door() {
  const std::string path = runtime::side_door_path();
  REQUIRE_FALSE(path.empty());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  return fd;
}

void write_all(int fd, const std::string& bytes) {
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

// Reads until one whole packet is in, or the stream ends (nullopt).
std::optional<wire::Envelope> read_packet(int fd) {
  std::string in;
  for (;;) {
    std::size_t start = 0;
    if (auto e = wire::take_packet(in, start, 1 << 20)) return e;
    char chunk[4096];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return std::nullopt;
    in.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace

TEST_CASE("the side door: only in one's own name, and a broken stream closes", "[fuzz]") {
  auto [r0, malformed_before, a0] = coordinator_stats();
  (void)r0;
  (void)a0;
  const auto self = static_cast<std::uint64_t>(::getpid());

  const int fd = connect_side_door();
  // Every kind comes through the side door: a ping is answered there, to its correlation.
  auto ping = wire::make(wire::Kind::ping, 0, 77, Object{});
  std::string packet;
  wire::append_packet(packet, ping, self);
  write_all(fd, packet);
  auto pong = read_packet(fd);
  REQUIRE(pong);
  CHECK(pong->header.kind == wire::Kind::pong);
  CHECK(pong->header.correlation == 77);

  // In another process's name: dropped, no answer. A pool_take on a pool that does not exist, sent in our own name
  // after it, is answered (with an error): so the one before it was read and dropped, not left waiting.
  auto forged = wire::make(wire::Kind::pool_take, 999999, 78, std::make_tuple(1, std::vector<int>{}));
  packet.clear();
  wire::append_packet(packet, forged, self + 1);
  auto honest = wire::make(wire::Kind::pool_take, 999999, 79, std::make_tuple(1, std::vector<int>{}));
  wire::append_packet(packet, honest, self);
  write_all(fd, packet);
  auto answer = read_packet(fd);
  REQUIRE(answer);
  CHECK(answer->header.correlation == 79);
  CHECK(answer->header.kind == wire::Kind::error);

  // Bytes that are no packet: the coordinator closes this connection.
  write_all(fd, std::string("\x05\0\0\0garbage", 11));
  CHECK_FALSE(read_packet(fd));
  ::close(fd);

  // It goes on serving, on the ROUTER and through a new side-door connection.
  auto [r1, malformed, a1] = coordinator_stats();
  (void)r1;
  (void)a1;
  CHECK(malformed - malformed_before == 3);  // the forgery, the unknown pool, the garbage
  const int again = connect_side_door();
  auto take = wire::make(wire::Kind::pool_take, 999999, 80, std::make_tuple(1, std::vector<int>{}));
  packet.clear();
  wire::append_packet(packet, take, self);
  write_all(again, packet);
  auto reply = read_packet(again);
  REQUIRE(reply);
  CHECK(reply->header.correlation == 80);
  ::close(again);
}
