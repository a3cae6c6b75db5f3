// The sync service's state machines (Lock, Semaphore, Event), driven directly through a reply sink
// (service_host.hpp): no process, no socket. Senders are made-up pids, which the sink reports alive until they die.
#include "service_host.hpp"

using namespace mpx_test;
using K = mpx::wire::Kind;
using E = mpx::wire::ErrorCode;

namespace {

using Acquired = std::tuple<bool, bool>;  // acquired, previous owner died

struct SyncFixture {
  ReplySink host;
  std::unique_ptr<services::Service> service = services::install_sync(host);

  std::uint64_t create(K kind, std::string body) {
    host.deliver(kind, 0, 1, {std::move(body)});
    return std::get<0>(host.take_one().body<std::tuple<std::uint64_t>>());
  }
  void acquire(std::uint64_t lock, std::uint64_t sender, std::int64_t wait_ms) {
    host.deliver_args(K::lock_acquire, lock, sender, std::make_tuple(wait_ms));
  }
};

}  // namespace

TEST_CASE("sync service: a lock goes to its waiters in order, each release hands it on", "[service][sync]") {
  SyncFixture s;
  const auto lock = s.create(K::lock_create, mpx::encode(std::make_tuple(false)));
  s.acquire(lock, 10, 0);
  CHECK(s.host.take_one().body<Acquired>() == Acquired{true, false});
  s.acquire(lock, 11, 0);  // no wait: refused at once
  CHECK(s.host.take_one().body<Acquired>() == Acquired{false, false});
  s.acquire(lock, 11, -1);
  s.acquire(lock, 12, -1);
  CHECK(s.host.take().empty());

  s.host.deliver(K::lock_release, lock, 10, {nil()});
  auto replies = s.host.take();
  REQUIRE(replies.size() == 2);
  for (auto& r : replies) {
    if (r.to == 10) CHECK(r.kind() == K::ok);
    if (r.to == 11) CHECK(r.body<Acquired>() == Acquired{true, false});
    CHECK(r.to != 12);
  }
  s.host.deliver(K::lock_state, lock, 12, {nil()});
  CHECK(s.host.take_one().body<std::tuple<std::uint64_t, std::uint64_t>>() == std::make_tuple(std::uint64_t{11}, std::uint64_t{1}));

  // Only the owner may release.
  s.host.deliver(K::lock_release, lock, 10, {nil()});
  CHECK(s.host.take_one().error_code() == code(E::not_owner));
}

TEST_CASE("sync service: a lock whose owner dies goes to the next waiter, who is told", "[service][sync]") {
  SyncFixture s;
  const auto lock = s.create(K::lock_create, mpx::encode(std::make_tuple(false)));
  s.acquire(lock, 20, -1);
  CHECK(s.host.take_one().body<Acquired>() == Acquired{true, false});
  s.acquire(lock, 21, -1);
  CHECK(s.host.take().empty());
  s.host.die(20);
  const auto reply = s.host.take_one();
  CHECK(reply.to == 21);
  CHECK(reply.body<Acquired>() == Acquired{true, true});
  // Only the first acquirer after the death is told.
  s.host.deliver(K::lock_release, lock, 21, {nil()});
  CHECK(s.host.take_one().kind() == K::ok);
  s.acquire(lock, 22, 0);
  CHECK(s.host.take_one().body<Acquired>() == Acquired{true, false});
}

TEST_CASE("sync service: a lock wait ends at its deadline with acquired = false", "[service][sync]") {
  SyncFixture s;
  const auto lock = s.create(K::lock_create, mpx::encode(std::make_tuple(false)));
  s.acquire(lock, 30, -1);
  s.host.take();
  s.acquire(lock, 31, 60'000);
  s.host.advance(1s);
  CHECK(s.host.take().empty());
  s.host.advance(61s);
  const auto reply = s.host.take_one();
  CHECK(reply.to == 31);
  CHECK(reply.body<Acquired>() == Acquired{false, false});
  // The expired waiter does not get the lock later.
  s.host.deliver(K::lock_release, lock, 30, {nil()});
  CHECK(s.host.take_one().to == 30);
}

TEST_CASE("sync service: semaphore units and events", "[service][sync]") {
  SyncFixture s;
  const auto sem = s.create(K::sem_create, mpx::encode(std::make_tuple(std::int64_t{1}, true)));
  s.host.deliver_args(K::sem_acquire, sem, 40, std::make_tuple(std::int64_t{0}));
  CHECK(s.host.take_one().body<Acquired>() == Acquired{true, false});
  s.host.deliver_args(K::sem_acquire, sem, 41, std::make_tuple(std::int64_t{-1}));
  CHECK(s.host.take().empty());
  s.host.deliver(K::sem_release, sem, 40, {nil()});
  CHECK(s.host.take().size() == 2);  // the releaser's ok, the waiter's unit
  s.host.deliver(K::sem_release, sem, 41, {nil()});
  CHECK(s.host.take_one().kind() == K::ok);
  s.host.deliver(K::sem_release, sem, 41, {nil()});  // bounded: past its initial value
  CHECK(s.host.take_one().error_code() == code(E::value));

  const auto event = s.create(K::event_create, nil());
  s.host.deliver_args(K::event_wait, event, 42, std::make_tuple(std::int64_t{-1}));
  CHECK(s.host.take().empty());
  s.host.deliver(K::event_set, event, 43, {nil()});
  auto replies = s.host.take();
  REQUIRE(replies.size() == 2);
  for (auto& r : replies) {
    if (r.to == 42) CHECK(std::get<0>(r.body<std::tuple<bool>>()));
  }
}

TEST_CASE("sync service: unknown objects and bad bodies change nothing", "[service][sync]") {
  SyncFixture s;
  const auto lock = s.create(K::lock_create, mpx::encode(std::make_tuple(false)));
  const auto event = s.create(K::event_create, nil());
  s.acquire(987654, 50, 0);
  CHECK(s.host.take_one().error_code() == code(E::unknown_object));
  s.acquire(event, 50, 0);  // an object of another type
  CHECK(s.host.take_one().error_code() == code(E::unknown_object));
  CHECK(s.host.malformed == 2);
  CHECK_THROWS_AS(s.host.deliver(K::lock_acquire, lock, 50, {nil(), nil()}), mpx::ProtocolError);
  CHECK_THROWS_AS(s.host.deliver(K::lock_acquire, lock, 50, {mpx::encode(std::string("x"))}), mpx::ProtocolError);
  CHECK_THROWS_AS(s.host.deliver(K::event_set, event, 50, {mpx::encode(1)}), mpx::ProtocolError);
  CHECK(s.host.take().empty());
  s.host.deliver(K::lock_state, lock, 50, {nil()});
  CHECK(s.host.take_one().body<std::tuple<std::uint64_t, std::uint64_t>>() == std::make_tuple(std::uint64_t{0}, std::uint64_t{0}));
}
