// 100,000 random and mutated messages at the coordinator's socket: it keeps serving and counts every one.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <random>

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
