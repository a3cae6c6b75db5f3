// The queue service's state machine, driven directly through a reply sink (service_host.hpp): no process, no socket.
#include <cstring>

#include "service_host.hpp"

using namespace mpx_test;
using K = mpx::wire::Kind;
using E = mpx::wire::ErrorCode;

namespace {

// The items of a queue_get reply: its second frame, each item as [u32 length][bytes].
std::vector<std::string> items_of(const Reply& reply) {
  REQUIRE(reply.kind() == K::ok);
  const std::string packed = reply.frame(1);
  std::vector<std::string> items;
  for (std::size_t at = 0; at < packed.size();) {
    std::uint32_t size = 0;
    REQUIRE(at + sizeof size <= packed.size());
    std::memcpy(&size, packed.data() + at, sizeof size);
    at += sizeof size;
    items.push_back(packed.substr(at, size));
    at += size;
  }
  return items;
}

struct QueueFixture {
  ReplySink host;
  std::unique_ptr<services::Service> service = services::install_queues(host);
  std::uint64_t id = 0;

  explicit QueueFixture(std::uint64_t maxsize = 0) {
    host.deliver_args(K::queue_create, 0, 1, std::make_tuple(maxsize, false));
    id = std::get<0>(host.take_one().body<std::tuple<std::uint64_t>>());
  }
  void put(std::uint64_t sender, std::string item, std::int64_t wait_ms = 0) {
    host.deliver_args(K::queue_put, id, sender, std::make_tuple(wait_ms), {std::move(item)});
  }
  void get(std::uint64_t sender, std::int64_t wait_ms) {
    host.deliver_args(K::queue_get, id, sender, std::make_tuple(wait_ms, std::uint64_t{1}, std::uint64_t{0}));
  }
};

}  // namespace

TEST_CASE("queue service: a put is got in order, and an empty get without a wait answers empty", "[service][queue]") {
  QueueFixture q;
  q.put(2, "a");
  q.put(2, "b");
  auto puts = q.host.take();
  REQUIRE(puts.size() == 2);
  for (const auto& r : puts) CHECK(r.kind() == K::ok);
  q.get(3, 0);
  CHECK(items_of(q.host.take_one()) == std::vector<std::string>{"a"});
  q.get(3, 0);
  CHECK(items_of(q.host.take_one()) == std::vector<std::string>{"b"});
  q.get(3, 0);
  CHECK(q.host.take_one().error_code() == code(E::empty));
}

TEST_CASE("queue service: parked getters are woken by puts in the order they came", "[service][queue]") {
  QueueFixture q;
  q.get(3, -1);
  q.get(4, -1);
  CHECK(q.host.take().empty());  // both wait
  q.put(2, "first");
  auto replies = q.host.take();
  REQUIRE(replies.size() == 2);  // the putter's ok and the first getter's item, in some order
  std::map<std::uint64_t, Reply> by_actor;
  for (auto& r : replies) by_actor.emplace(r.to, std::move(r));
  CHECK(by_actor.at(2).kind() == K::ok);
  CHECK(items_of(by_actor.at(3)) == std::vector<std::string>{"first"});
  q.put(2, "second");
  replies = q.host.take();
  REQUIRE(replies.size() == 2);
  by_actor.clear();
  for (auto& r : replies) by_actor.emplace(r.to, std::move(r));
  CHECK(items_of(by_actor.at(4)) == std::vector<std::string>{"second"});
}

TEST_CASE("queue service: a full queue parks a putter until a get makes room", "[service][queue]") {
  QueueFixture q(1);
  q.put(2, "a");
  CHECK(q.host.take_one().kind() == K::ok);
  q.put(2, "b", 0);
  CHECK(q.host.take_one().error_code() == code(E::full));
  q.put(5, "b", -1);
  CHECK(q.host.take().empty());
  q.get(3, 0);
  auto replies = q.host.take();
  REQUIRE(replies.size() == 2);
  for (auto& r : replies) {
    if (r.to == 3) CHECK(items_of(r) == std::vector<std::string>{"a"});
    if (r.to == 5) CHECK(r.kind() == K::ok);
  }
  q.get(3, 0);
  CHECK(items_of(q.host.take_one()) == std::vector<std::string>{"b"});
}

TEST_CASE("queue service: a waiting get is answered empty at its deadline, not before", "[service][queue]") {
  QueueFixture q;
  q.get(3, 60'000);
  CHECK(q.host.take().empty());
  q.host.advance(1s);
  CHECK(q.host.take().empty());
  q.host.advance(61s);
  const auto reply = q.host.take_one();
  CHECK(reply.to == 3);
  CHECK(reply.error_code() == code(E::empty));
  // The expired getter is gone: a put afterwards stays in the queue.
  q.put(2, "kept");
  CHECK(q.host.take_one().kind() == K::ok);
  q.host.deliver_args(K::queue_size, q.id, 2, std::make_tuple(std::uint64_t{0}));
  CHECK(std::get<0>(q.host.take_one().body<std::tuple<std::uint64_t, std::uint64_t>>()) == 1);
}

TEST_CASE("queue service: a dead getter is forgotten, and its item goes to the next", "[service][queue]") {
  QueueFixture q;
  q.get(3, -1);
  q.get(4, -1);
  q.host.die(3);
  q.put(2, "x");
  auto replies = q.host.take();
  REQUIRE(replies.size() == 2);
  for (auto& r : replies) CHECK(r.to != 3);
}

TEST_CASE("queue service: an unknown queue is answered unknown object; a bad body is malformed", "[service][queue]") {
  QueueFixture q;
  q.host.deliver_args(K::queue_get, 987654, 3, std::make_tuple(std::int64_t{0}, std::uint64_t{1}, std::uint64_t{0}));
  CHECK(q.host.take_one().error_code() == code(E::unknown_object));
  CHECK(q.host.malformed == 1);
  // A put without its item frame, and a get whose arguments are not its own.
  CHECK_THROWS_AS(q.host.deliver_args(K::queue_put, q.id, 2, std::make_tuple(std::int64_t{0})), mpx::ProtocolError);
  CHECK_THROWS_AS(q.host.deliver(K::queue_get, q.id, 2, {std::string("\xc1", 1)}), mpx::ProtocolError);
  CHECK_THROWS_AS(q.host.deliver(K::queue_lane_poke, q.id, 2, {mpx::encode(std::make_tuple(1))}), mpx::ProtocolError);
  CHECK(q.host.take().empty());
  q.host.deliver_args(K::queue_size, q.id, 2, std::make_tuple(std::uint64_t{0}));
  CHECK(std::get<0>(q.host.take_one().body<std::tuple<std::uint64_t, std::uint64_t>>()) == 0);
}
