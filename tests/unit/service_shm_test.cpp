// The shared memory service's state machine, driven directly through a reply sink (service_host.hpp): no other
// process and no socket, but a real segment in /dev/shm, removed at the end whatever happens.
#include <sys/mman.h>
#include <unistd.h>

#include "service_host.hpp"

using namespace mpx_test;
using K = mpx::wire::Kind;
using E = mpx::wire::ErrorCode;

namespace {

using Created = std::tuple<std::uint64_t, std::string, std::uint64_t, std::uint64_t, std::string>;

struct ShmFixture {
  ReplySink host;
  std::unique_ptr<services::Service> service = services::install_shm(host);
  const std::string name = "mpx_svc_unit_" + std::to_string(::getpid());

  ~ShmFixture() { ::shm_unlink(("/" + name).c_str()); }  // whatever the test left behind

  void create(std::uint64_t size) {
    host.deliver_args(K::shm_create, 0, 1, std::make_tuple(mpx::Object(name), size, false, false, false));
  }
};

}  // namespace

TEST_CASE("shm service: create, write, read, attach by name, unlink", "[service][shm]") {
  ShmFixture s;
  s.create(16);
  const auto [id, name, size, token, host_key] = s.host.take_one().body<Created>();
  CHECK(name == s.name);
  CHECK(size == 16);
  CHECK(token == 0);  // a SharedMemory block has no header

  s.host.deliver_args(K::shm_write, id, 1, std::make_tuple(std::uint64_t{4}), {"abcd"});
  CHECK(s.host.take_one().kind() == K::ok);
  s.host.deliver_args(K::shm_read, id, 2, std::make_tuple(std::uint64_t{4}, std::uint64_t{4}));
  CHECK(s.host.take_one().frame(1) == "abcd");

  s.host.deliver_args(K::shm_attach, 0, 2, std::make_tuple(s.name));
  CHECK(s.host.take_one().body<std::tuple<std::uint64_t, std::uint64_t>>() == std::make_tuple(id, std::uint64_t{16}));
  s.create(16);  // the name is taken
  CHECK(s.host.take_one().error_code() == code(E::file_exists));

  s.host.deliver_args(K::shm_unlink, 0, 1, std::make_tuple(s.name));
  CHECK(std::get<0>(s.host.take_one().body<std::tuple<bool>>()));
  s.host.deliver_args(K::shm_unlink, 0, 1, std::make_tuple(s.name));
  CHECK_FALSE(std::get<0>(s.host.take_one().body<std::tuple<bool>>()));
  s.host.deliver_args(K::shm_attach, 0, 2, std::make_tuple(std::string("mpx_svc_unit_never_made")));
  CHECK(s.host.take_one().error_code() == code(E::file_not_found));
}

TEST_CASE("shm service: refusals, an unknown segment, and bad bodies", "[service][shm]") {
  ShmFixture s;
  s.create(8);
  const auto id = std::get<0>(s.host.take_one().body<Created>());
  s.host.deliver_args(K::shm_read, id, 1, std::make_tuple(std::uint64_t{4}, std::uint64_t{8}));  // past the end
  CHECK(s.host.take_one().error_code() == code(E::value));
  s.host.deliver_args(K::shm_lock, id, 1, std::make_tuple(std::int64_t{0}));  // made without a lock
  CHECK(s.host.take_one().error_code() == code(E::value));
  s.host.deliver(K::shm_unlock, id, 1, {nil()});
  CHECK(s.host.take_one().error_code() == code(E::not_owner));
  CHECK(s.host.malformed == 0);  // refusals are answers, not malformed requests

  s.host.deliver_args(K::shm_read, 987654, 1, std::make_tuple(std::uint64_t{0}, std::uint64_t{4}));
  CHECK(s.host.take_one().error_code() == code(E::unknown_object));
  CHECK(s.host.malformed == 1);

  CHECK_THROWS_AS(s.host.deliver_args(K::shm_read, id, 1, std::make_tuple(std::uint64_t{0})), mpx::ProtocolError);
  CHECK_THROWS_AS(s.host.deliver_args(K::shm_write, id, 1, std::make_tuple(std::uint64_t{0})), mpx::ProtocolError);
  CHECK_THROWS_AS(s.host.deliver(K::shm_unlock, id, 1, {mpx::encode(1)}), mpx::ProtocolError);
  CHECK_THROWS_AS(s.host.deliver(K::shm_list, 0, 1, {nil(), nil()}), mpx::ProtocolError);
  CHECK(s.host.take().empty());
}
