// Function identity: a plain function travels as (build-id, offsets) and comes back as the same call, under every
// start method; a worker running a different build refuses it.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <unistd.h>

namespace {

void exit_with_sum(int a, int b) { std::exit(a + b); }
int triple(int x) { return 3 * x; }
struct Pair {
  int first = 0;
  std::string second;
  MSGPACK_DEFINE(first, second);
};
void exit_with_pair(Pair p, std::vector<int> extra) { std::exit(p.first + static_cast<int>(p.second.size() + extra.size())); }

}  // namespace

TEST_CASE("identify and resolve are inverse in one process", "[identity]") {
  auto call = mpx::bind(triple, 14);
  const auto id = call.id();
  CHECK(id.build_id.size() >= 16);
  CHECK(id.function_offset != 0);
  auto [function, trampoline] = mpx::resolve(id);
  CHECK(function == call.function);
  CHECK(trampoline == call.trampoline);
  std::string result;
  trampoline(function, call.args, result);
  CHECK(mpx::decode<int>(result) == 42);
  // The id itself survives msgpack, which is how it travels.
  auto back = mpx::decode<mpx::FunctionId>(mpx::encode(id));
  CHECK(back.build_id == id.build_id);
  CHECK(back.trampoline_offset == id.trampoline_offset);
}

TEST_CASE("a captureless lambda has an identity too", "[identity]") {
  auto call = mpx::bind([](int x) { return x + 1; }, 41);
  CHECK(mpx::decode<int>(call.invoke()) == 42);
  auto [function, trampoline] = mpx::resolve(call.id());
  CHECK(function == call.function);
}

TEST_CASE("the same target runs under fork, forkserver and spawn", "[identity]") {
  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  const mpx::Context ctx(method);
  auto p = ctx.Process(exit_with_sum, 20, 22);
  p.start();
  p.join();
  CHECK(p.exitcode() == 42);

  auto q = ctx.Process(exit_with_pair, Pair{10, "abc"}, std::vector<int>{1, 2});
  q.start();
  q.join();
  CHECK(q.exitcode() == 15);

  auto lambda = ctx.Process([](int x) { std::exit(x); }, 9);
  lambda.start();
  lambda.join();
  CHECK(lambda.exitcode() == 9);
}

TEST_CASE("a worker running a different build refuses the call with a clear error", "[identity]") {
  namespace fs = std::filesystem;
  const std::string self = mpx::get_executable();
  const std::string build_id = mpx::build_id_of(reinterpret_cast<const void*>(&exit_with_sum));
  REQUIRE(build_id.size() % 2 == 0);
  std::string id_bytes;
  for (std::size_t i = 0; i < build_id.size(); i += 2) {
    id_bytes.push_back(static_cast<char>(std::stoi(build_id.substr(i, 2), nullptr, 16)));
  }
  std::ifstream in(self, std::ios::binary);
  std::string image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t patched = 0;
  for (auto pos = image.find(id_bytes); pos != std::string::npos; pos = image.find(id_bytes, pos + 1)) {
    for (std::size_t i = 0; i < id_bytes.size(); ++i) image[pos + i] = static_cast<char>(image[pos + i] ^ 0x5a);
    ++patched;
  }
  REQUIRE(patched >= 1);
  const fs::path copy = fs::temp_directory_path() / ("mpx-other-build-" + std::to_string(::getpid()));
  {
    std::ofstream out(copy, std::ios::binary);
    out.write(image.data(), static_cast<std::streamsize>(image.size()));
  }
  fs::permissions(copy, fs::perms::owner_all);

  mpx::set_executable(copy.string());
  const mpx::Context ctx(mpx::StartMethod::spawn);
  auto p = ctx.Process(exit_with_sum, 1, 2);
  p.start();
  p.join();
  mpx::set_executable(self);
  fs::remove(copy);

  CHECK(p.exitcode() == 1);
  auto error = p.exception();
  REQUIRE(error.has_value());
  CHECK(error->type() == "mpx::ProtocolError");
  CHECK_THAT(error->message(), Catch::Contains("different build") && Catch::Contains(build_id));
}

TEST_CASE("a registered name binds to the function, under every start method", "[identity]") {
  mpx::register_actor("sum_exit", exit_with_sum);
  mpx::register_actor("lambda_exit", [](int x) { std::exit(x + 1); });
  CHECK(mpx::is_registered_actor("sum_exit"));
  CHECK_FALSE(mpx::is_registered_actor("nobody"));
  const auto names = mpx::registered_actors();
  CHECK(std::find(names.begin(), names.end(), "lambda_exit") != names.end());

  auto method = GENERATE(mpx::StartMethod::fork, mpx::StartMethod::forkserver, mpx::StartMethod::spawn);
  INFO("start method " << mpx::to_string(method));
  mpx::ProcessOptions options;
  options.method = method;
  mpx::Process p(options, mpx::bind_registered("sum_exit", mpx::Object::list({20, 22})));
  p.start();
  p.join();
  CHECK(p.exitcode() == 42);

  mpx::Process q(options, mpx::bind_registered("lambda_exit", mpx::Object::list({6})));
  q.start();
  q.join();
  CHECK(q.exitcode() == 7);

  // Arguments of the wrong shape are refused where they are decoded, in the child, with a clear error.
  mpx::Process bad(options, mpx::bind_registered("sum_exit", mpx::Object::list({"twenty", 22})));
  bad.start();
  bad.join();
  CHECK(bad.exitcode() == 1);
  REQUIRE(bad.exception().has_value());
  CHECK(bad.exception()->type() == "mpx::SerializationError");
}

TEST_CASE("an unknown name or a non-list argument is refused at the call site", "[identity]") {
  CHECK_THROWS_WITH(mpx::bind_registered("nobody"), Catch::Contains("'nobody'"));
  mpx::register_actor("sum_exit", exit_with_sum);
  CHECK_THROWS_WITH(mpx::bind_registered("sum_exit", mpx::Object(3)), Catch::Contains("must be a list"));
  CHECK_THROWS_AS(mpx::register_actor("", exit_with_sum), std::invalid_argument);
}
