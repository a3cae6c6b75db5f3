// The coordinator's per-peer stores are bounded: a flood of forged reports from a raw client leaves its memory flat.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include <malloc.h>
#include <unistd.h>

#include "runtime/channel.hpp"
#include "runtime/coordinator.hpp"
#include "runtime/runtime.hpp"
#include "wire/envelope.hpp"
#include "wire/limits.hpp"
#include "wire/transport.hpp"

using namespace mpx;

namespace {

// This process's resident set (the coordinator runs as a thread of it), in bytes, after glibc gives back the free
// memory it keeps: what the coordinator holds, not what an allocator arena made under load happens to cache (16 MiB
// messages left ~16 MiB behind in a loaded run).
std::size_t resident_bytes() {
  ::malloc_trim(0);
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// A DEALER that speaks for nobody in particular: what a hostile or broken foreign client would be.
struct RawClient {
  zmq::socket_t socket{runtime::context(), zmq::socket_type::dealer};
  std::uint64_t next_correlation = 1;

  // receive_hwm: how many replies ZeroMQ takes in for this client before it reads them (1: a client that does not
  // read leaves its replies with the coordinator).
  explicit RawClient(int receive_hwm = 1000) {
    runtime::ensure_coordinator();  // it starts on first use; this client is no mpx channel
    const std::string endpoint = runtime::state().session.coordinator_endpoint;
    wire::configure(socket, endpoint);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::rcvhwm, receive_hwm);
    socket.connect(endpoint);
  }
  void send(wire::Envelope e) {
    e.header.correlation = next_correlation++;
    wire::send(socket, e, static_cast<std::uint64_t>(::getpid()));
  }
  wire::Envelope receive() {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    REQUIRE(zmq::poll(&item, 1, std::chrono::milliseconds(60000)) == 1);
    auto e = wire::recv(socket);
    REQUIRE(e);
    return std::move(*e);
  }
};

constexpr std::int64_t forged_pid_base = 100000000;  // above any pid_max: no live process is named

// `count` small reports with distinct pids, then eight of 16 MiB; every reply is read, so all were handled.
void flood(RawClient& client, std::int64_t first_pid, int count) {
  constexpr int window = 500;
  for (int sent = 0; sent < count;) {
    const int n = std::min(window, count - sent);
    for (int i = 0; i < n; ++i) {
      client.send(wire::make(wire::Kind::process_error, 0, 0,
                             std::make_tuple(first_pid + sent + i, std::string("ValueError"),
                                             "report " + std::to_string(sent + i) + std::string(200, 'x'),
                                             std::string("forged-host"))));
    }
    int refused = 0;
    for (int i = 0; i < n; ++i) refused += client.receive().header.kind == wire::Kind::ok ? 0 : 1;
    REQUIRE(refused == 0);
    sent += n;
  }
  const std::string huge(16u << 20, 'y');
  for (int i = 0; i < 8; ++i) {
    client.send(wire::make(wire::Kind::process_error, 0, 0,
                           std::make_tuple(first_pid + count + i, std::string("HugeError"), huge, huge)));
    CHECK(client.receive().header.kind == wire::Kind::ok);
  }
}

std::tuple<bool, std::string, std::string, std::int64_t, std::string> query(RawClient& client, std::int64_t pid) {
  client.send(wire::make(wire::Kind::process_error_query, 0, 0, std::make_tuple(pid)));
  auto reply = client.receive();
  REQUIRE(reply.header.kind == wire::Kind::ok);
  return reply.body_as<std::tuple<bool, std::string, std::string, std::int64_t, std::string>>();
}

}  // namespace

TEST_CASE("a flood of process_error reports leaves the coordinator's memory flat", "[fault][bounds]") {
  RawClient client;
  constexpr int per_round = 25000;
  // One round first: the store fills to its bound and the allocators reach their working size.
  flood(client, forged_pid_base, per_round);
  const std::size_t before = resident_bytes();
  for (int round = 1; round <= 2; ++round) flood(client, forged_pid_base + round * 1000000, per_round);
  const std::size_t after = resident_bytes();
  INFO("resident before " << before / 1024 << " KiB, after " << after / 1024 << " KiB");
  CHECK(after < before + (8u << 20));

  // The newest reports are kept (cut to size, and saying so); the oldest made room for them.
  const std::int64_t last_round = forged_pid_base + 2 * 1000000;
  auto [found_huge, type, message, pid, host] = query(client, last_round + per_round + 7);
  REQUIRE(found_huge);
  CHECK(type == "HugeError");
  CHECK(message.size() <= wire::store_bounds.error_field_bytes);
  CHECK(message.ends_with("[cut by the coordinator]"));
  CHECK(host.size() <= wire::store_bounds.error_name_bytes);
  CHECK_FALSE(std::get<0>(query(client, last_round)));
  CHECK_FALSE(std::get<0>(query(client, forged_pid_base)));
}

TEST_CASE("a real process's error report is still kept and answered", "[fault][bounds]") {
  Process p([] { throw std::runtime_error("kept"); });
  p.start();
  REQUIRE(p.join(std::chrono::seconds(60)));
  CHECK(p.exitcode() == 1);
  auto error = p.exception();
  REQUIRE(error);
}

namespace {

std::uint64_t coordinator_rejected() {
  auto* c = runtime::coordinator_if_running();
  REQUIRE(c != nullptr);
  return c->stats().malformed;
}

// The next reply within `wait`, if one comes.
std::optional<wire::Envelope> reply_within(RawClient& client, std::chrono::milliseconds wait) {
  zmq::pollitem_t item{client.socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, wait) != 1) return std::nullopt;
  return wire::recv(client.socket);
}

}  // namespace

TEST_CASE("a raw client's blocking requests beyond the bound are refused, the rest stay parked", "[fault][bounds]") {
  Event event;
  RawClient client;
  constexpr std::size_t extra = 50;
  const std::size_t bound = wire::store_bounds.parked_per_peer;
  const auto rejected_before = coordinator_rejected();
  // Each event_wait parks a waiter (60 s deadline: they end even if this test fails); the client reads no answer.
  for (std::size_t i = 0; i < bound + extra; ++i) {
    client.send(wire::make(wire::Kind::event_wait, event.id(), 0, std::make_tuple(std::int64_t{60000})));
  }
  std::size_t refused = 0;
  while (refused < extra) {
    auto reply = reply_within(client, std::chrono::milliseconds(20000));
    REQUIRE(reply);  // anti-hang bound: the refusals come at once
    REQUIRE(reply->header.kind == wire::Kind::error);
    CHECK(reply->header.correlation > bound);  // the first `bound` were parked, not refused
    ++refused;
  }
  CHECK(coordinator_rejected() - rejected_before == extra);
  // The parked ones were kept: setting the event answers every one of them.
  event.set();
  std::size_t answered = 0;
  while (answered < bound) {
    auto reply = reply_within(client, std::chrono::milliseconds(20000));
    REQUIRE(reply);
    CHECK(reply->header.kind == wire::Kind::ok);
    ++answered;
  }
  // Answered waiters free their places: the client may block again.
  Event again;
  client.send(wire::make(wire::Kind::event_wait, again.id(), 0, std::make_tuple(std::int64_t{60000})));
  again.set();
  auto last = reply_within(client, std::chrono::milliseconds(20000));
  REQUIRE(last);
  CHECK(last->header.kind == wire::Kind::ok);
}

TEST_CASE("a Manager keeps a bounded number of unanswered challenges, each for a handshake's time", "[fault][bounds]") {
  Manager manager;
  const auto challenge = [&](runtime::Channel& channel) {
    return channel.request(wire::make(wire::Kind::manager_challenge, 0, 0, Object{}), std::chrono::milliseconds(20000));
  };
  const auto rejected = [&] {
    runtime::Channel channel(runtime::context(), manager.address());
    auto stats = channel.request(wire::make(wire::Kind::stats, 0, 0, Object{}), std::chrono::milliseconds(20000));
    return std::get<1>(stats.body_as<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>>());
  };
  // Each connection (a new socket: a new peer to the manager) asks for a challenge and never answers it.
  const std::size_t bound = wire::store_bounds.pending_challenges;
  for (std::size_t i = 0; i < bound; ++i) {
    runtime::Channel silent(runtime::context(), manager.address());
    REQUIRE(challenge(silent).header.kind == wire::Kind::ok);
  }
  const auto rejected_before = rejected();
  runtime::Channel one_more(runtime::context(), manager.address());
  auto refused = challenge(one_more);
  REQUIRE(refused.header.kind == wire::Kind::error);
  CHECK_THAT(std::get<1>(refused.body_as<std::tuple<std::uint16_t, std::string>>()),
             Catch::Contains("unanswered challenges"));
  CHECK(rejected() - rejected_before == 1);
  // The silent ones' challenges expire after a handshake's time; then a new client is served again.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(
                                                              3 * wire::store_bounds.challenge_lifetime_ms + 20000);
  for (;;) {
    if (challenge(one_more).header.kind == wire::Kind::ok) break;
    REQUIRE(std::chrono::steady_clock::now() < deadline);  // anti-hang bound
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // And the manager still serves its objects.
  auto d = manager.dict();
  d.set("k", 1);
  CHECK(d.copy().repr() == "{'k': 1}");
}

namespace {

// Objects enough that a metrics reply is tens of KiB: a small request with a big answer, what a flood of unread
// requests would pile up fastest.
struct BigMetrics {
  std::vector<Queue<int>> queues;
  std::size_t reply_bytes = 0;
  BigMetrics() {
    for (int i = 0; i < 300; ++i) queues.emplace_back();
    RawClient reader;
    reader.send(wire::make(wire::Kind::metrics, 0, 0, Object{}));
    auto reply = reader.receive();
    REQUIRE(reply.header.kind == wire::Kind::ok);
    for (const auto& frame : reply.body) reply_bytes += frame.size();
  }
};

std::uint64_t coordinator_received() {
  auto* c = runtime::coordinator_if_running();
  REQUIRE(c != nullptr);
  return c->stats().received;
}

// Waits (up to a minute, an anti-hang bound) until `done` holds.
template <typename Done>
bool eventually(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace

TEST_CASE("a client that reads its replies late still gets every one, in order", "[fault][bounds]") {
  BigMetrics big;
  RawClient client(1);
  // More than ZeroMQ's pipe to the client holds (1000 replies), less than the coordinator keeps for it.
  const std::size_t count = std::min<std::size_t>(3000, (wire::store_bounds.router_unread_bytes / 2) / big.reply_bytes);
  INFO("metrics reply " << big.reply_bytes << " bytes, " << count << " requests");
  REQUIRE(count > 1500);
  const auto received_before = coordinator_received();
  const auto rejected_before = coordinator_rejected();
  for (std::size_t i = 0; i < count; ++i) client.send(wire::make(wire::Kind::metrics, 0, 0, Object{}));
  REQUIRE(eventually([&] { return coordinator_received() - received_before >= count; }));
  for (std::uint64_t i = 1; i <= count; ++i) {
    auto reply = reply_within(client, std::chrono::milliseconds(20000));
    REQUIRE(reply);
    CHECK(reply->header.kind == wire::Kind::ok);
    REQUIRE(reply->header.correlation == i);
  }
  CHECK(coordinator_rejected() == rejected_before);
}

TEST_CASE("a raw client that never reads its replies is cut off at the bound; memory stays bounded", "[fault][bounds]") {
  BigMetrics big;
  RawClient client(1);
  // Unbounded, these replies would hold 512 MiB.
  const std::size_t count = (512u << 20) / big.reply_bytes;
  INFO("metrics reply " << big.reply_bytes << " bytes, " << count << " requests");
  const std::size_t before = resident_bytes();
  const auto received_before = coordinator_received();
  const auto rejected_before = coordinator_rejected();
  for (std::size_t i = 0; i < count; ++i) client.send(wire::make(wire::Kind::metrics, 0, 0, Object{}));
  // Each request is handled, or refused once the client is cut off.
  REQUIRE(eventually([&] {
    return (coordinator_received() - received_before) + (coordinator_rejected() - rejected_before) >= count;
  }));
  const std::size_t after = resident_bytes();
  INFO("resident before " << before / 1024 << " KiB, after " << after / 1024 << " KiB");
  // What the coordinator keeps for the client, what ZeroMQ's pipe to it holds (1000 replies), and room for allocators.
  CHECK(after < before + wire::store_bounds.router_unread_bytes + 1000 * big.reply_bytes + (48u << 20));
  // Cutting it off was counted, and what it sends now is refused and counted, and unanswered.
  CHECK(coordinator_rejected() > rejected_before);
  const auto rejected_after_cut = coordinator_rejected();
  client.send(wire::make(wire::Kind::ping, 0, 0, Object{}));
  REQUIRE(eventually([&] { return coordinator_rejected() > rejected_after_cut; }));
  // Everyone else is served as before.
  Queue<int> q;
  q.put(7);
  CHECK(q.get(true, std::chrono::seconds(20)) == 7);
}
