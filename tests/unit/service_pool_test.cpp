// The pool scheduler's state machine, driven directly through a reply sink (service_host.hpp): no process, no socket.
// The owner is a made-up pid (never this process's, whose pools the API layer may deliver to itself).
#include "service_host.hpp"

using namespace mpx_test;
using K = mpx::wire::Kind;
using E = mpx::wire::ErrorCode;

namespace {

using Groups = std::vector<std::tuple<std::uint64_t, std::vector<std::uint64_t>>>;
using Batch = std::tuple<std::vector<std::string>, std::vector<std::tuple<std::uint64_t, std::uint32_t, std::uint64_t>>>;
using Stats = std::tuple<std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t>;

constexpr std::uint64_t owner = 1000;

struct PoolFixture {
  ReplySink host;
  std::unique_ptr<services::Service> service = services::install_pool(host);
  std::uint64_t id = 0;

  explicit PoolFixture(std::uint32_t processes = 1, std::uint32_t max_retries = 3) {
    host.deliver_args(K::pool_create, 0, owner, std::make_tuple(max_retries, processes, std::string("build")));
    id = std::get<0>(host.take_one().body<std::tuple<std::uint64_t>>());
  }
  // Tasks 1..n of the owner, each payload one letter.
  void submit(std::vector<std::uint64_t> tasks) {
    std::vector<std::tuple<std::uint64_t, std::uint64_t>> sizes;
    std::string payload;
    for (auto t : tasks) {
      sizes.emplace_back(t, 1);
      payload += static_cast<char>('a' + t);
    }
    host.deliver_args(K::pool_submit, id, owner, std::make_tuple(std::string("fn"), sizes), {payload});
  }
  // A take that reports `done` (the owner's tasks) with one results frame.
  void take(std::uint64_t worker, std::vector<std::uint64_t> done = {}, std::string results = {}) {
    Groups groups;
    std::vector<std::string> frames;
    if (!done.empty()) {
      groups.emplace_back(0, done);
      frames.push_back(results);
    }
    host.deliver_args(K::pool_take, id, worker, std::make_tuple(std::uint64_t{8}, groups), frames);
  }
  Stats stats() {
    host.deliver(K::pool_stats, id, owner, {nil()});
    return host.take_one().body<Stats>();
  }
};

// The task ids a take's reply hands out, and their payload.
std::pair<std::vector<std::uint64_t>, std::string> batch_of(const Reply& reply) {
  REQUIRE(reply.kind() == K::ok);
  auto [functions, tasks] = reply.body<Batch>();
  CHECK(functions == std::vector<std::string>{"fn"});
  std::vector<std::uint64_t> ids;
  for (const auto& t : tasks) ids.push_back(std::get<0>(t));
  return {ids, reply.frame(1)};
}

}  // namespace

TEST_CASE("pool service: a waiting worker gets submitted tasks; its results go to the owner", "[service][pool]") {
  PoolFixture p;
  p.take(2000);
  CHECK(p.host.take().empty());  // nothing queued: the worker waits
  p.submit({1});
  const auto [ids, payload] = batch_of(p.host.take_one());
  CHECK(ids == std::vector<std::uint64_t>{1});
  CHECK(payload == "b");
  CHECK(p.stats() == Stats{0, 1, 1, 0, 0});

  p.take(2000, {1}, "result of 1");
  const auto delivery = p.host.take_one();  // the worker waits again
  CHECK(delivery.to == owner);
  CHECK(delivery.kind() == K::pool_delivery);
  CHECK(delivery.frame(1) == "result of 1");
  CHECK(p.stats() == Stats{0, 0, 1, 0, 0});
}

TEST_CASE("pool service: the fair share leaves work for the other workers", "[service][pool]") {
  PoolFixture p(2);
  p.submit({1, 2, 3, 4});
  p.take(2000);
  CHECK(batch_of(p.host.take_one()).first == std::vector<std::uint64_t>{1});  // ceil(4 / (2 * 2)) = 1
  p.take(2001);
  CHECK(batch_of(p.host.take_one()).first == std::vector<std::uint64_t>{2});
}

TEST_CASE("pool service: a dead worker's task is retried alone, and lost past max_retries", "[service][pool]") {
  PoolFixture p(1, 1);
  p.submit({1});
  p.take(2000);
  CHECK(batch_of(p.host.take_one()).first == std::vector<std::uint64_t>{1});
  p.host.deliver_args(K::pool_worker_exit, p.id, owner, std::make_tuple(std::int64_t{2000}, std::int64_t{-9}));
  CHECK(p.host.take().empty());
  CHECK(p.stats() == Stats{1, 0, 0, 1, 0});
  // The dead worker's later takes are refused.
  p.take(2000);
  CHECK(p.host.take_one().error_code() == code(E::closed));

  p.take(2001);
  CHECK(batch_of(p.host.take_one()).first == std::vector<std::uint64_t>{1});
  p.host.deliver_args(K::pool_worker_exit, p.id, owner, std::make_tuple(std::int64_t{2001}, std::int64_t{-9}));
  const auto lost = p.host.take_one();  // a second death: past max_retries = 1
  CHECK(lost.to == owner);
  CHECK(lost.kind() == K::pool_delivery);
  CHECK(std::get<4>(p.stats()) == 1);
}

TEST_CASE("pool service: terminate dismisses waiting workers; cancel takes a queued task back", "[service][pool]") {
  PoolFixture p;
  p.submit({1, 2});
  p.host.deliver_args(K::pool_cancel, p.id, owner, std::make_tuple(std::uint64_t{2}));
  CHECK(std::get<0>(p.host.take_one().body<std::tuple<bool>>()));
  p.take(2000);
  CHECK(batch_of(p.host.take_one()).first == std::vector<std::uint64_t>{1});
  p.take(2000, {1}, "r");
  CHECK(p.host.take_one().kind() == K::pool_delivery);  // and the worker waits: task 2 was cancelled
  p.host.deliver(K::pool_terminate, p.id, owner, {nil()});
  auto replies = p.host.take();
  REQUIRE(replies.size() == 2);
  for (auto& r : replies) {
    if (r.to == 2000) CHECK(r.error_code() == code(E::closed));
    if (r.to == owner) CHECK(r.kind() == K::ok);
  }
}

TEST_CASE("pool service: an unknown pool is answered unknown object; bad bodies are malformed", "[service][pool]") {
  PoolFixture p;
  p.host.deliver(K::pool_stats, 987654, owner, {nil()});
  CHECK(p.host.take_one().error_code() == code(E::unknown_object));
  CHECK(p.host.malformed == 1);
  // A report without its results frame, sizes that do not add up, a submit in another process's name, a non-nil stats.
  CHECK_THROWS_AS(p.host.deliver_args(K::pool_take, p.id, 2000, std::make_tuple(std::uint64_t{1}, Groups{{0, {1}}})),
                  mpx::ProtocolError);
  CHECK_THROWS_AS(p.host.deliver_args(K::pool_submit, p.id, owner,
                                      std::make_tuple(std::string("fn"),
                                                      std::vector<std::tuple<std::uint64_t, std::uint64_t>>{{1, 9}}),
                                      {"short"}),
                  mpx::ProtocolError);
  CHECK_THROWS_AS(p.host.deliver_args(K::pool_submit, p.id, 3000,
                                      std::make_tuple(std::string("fn"),
                                                      std::vector<std::tuple<std::uint64_t, std::uint64_t>>{{1, 1}}),
                                      {"x"}),
                  mpx::ProtocolError);
  CHECK_THROWS_AS(p.host.deliver(K::pool_stats, p.id, owner, {mpx::encode(1)}), mpx::ProtocolError);
  CHECK(p.host.take().empty());
  CHECK(p.stats() == Stats{0, 0, 0, 0, 0});
}
