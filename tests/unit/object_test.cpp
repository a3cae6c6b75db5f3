// mpx::Object: Python-style heterogeneous values through msgpack.
#include <catch2/catch.hpp>

#include <mpx/object.hpp>

using mpx::Object;

TEST_CASE("[42, None, 'hello'] round-trips and prints as Python does", "[object]") {
  Object list = Object::list({42, nullptr, "hello"});
  CHECK(list.repr() == "[42, None, 'hello']");
  Object back = mpx::decode<Object>(mpx::encode(list));
  CHECK(back == list);
  CHECK(back[0].as_int() == 42);
  CHECK(back[1].is_none());
  CHECK(back[2].as_string() == "hello");
}

TEST_CASE("dicts, floats, bools, bytes and nesting", "[object]") {
  Object d = Object::dict({{"a", 1}, {"b", Object::list({1.5, true, Object::Bytes{"\x01"}})}});
  CHECK(d.repr() == "{'a': 1, 'b': [1.5, True, b'\x01']}");
  auto back = mpx::decode<Object>(mpx::encode(d));
  CHECK(back["b"][0].as_double() == 1.5);
  CHECK(back.contains("a"));
  CHECK_FALSE(back.contains("z"));
  CHECK(Object(2.0).repr() == "2.0");
  CHECK(Object(0.1).repr() == "0.1");
}

TEST_CASE("a wrong access names what was wanted and what is held", "[object]") {
  Object s("text");
  CHECK_THROWS_WITH(s.as_int(), Catch::Contains("expected int, holds str"));
  CHECK_THROWS_WITH(Object::list({1})[3], Catch::Contains("index 3 out of range"));
  CHECK_THROWS_WITH(Object::dict({{"a", 1}})["nope"], Catch::Contains("'nope'"));
}

struct Point {
  int x = 0;
  std::string label;
  MSGPACK_DEFINE(x, label);
};

TEST_CASE("user types with MSGPACK_DEFINE are serializable; the concept says so at compile time", "[object]") {
  static_assert(mpx::Serializable<Point>);
  static_assert(mpx::Serializable<std::vector<std::optional<std::tuple<int, std::string>>>>);
  static_assert(!mpx::Serializable<int*>);
  static_assert(!mpx::Serializable<std::vector<void*>>);
  Point p{3, "p"};
  auto back = mpx::decode<Point>(mpx::encode(p));
  CHECK(back.x == 3);
  CHECK(back.label == "p");
}

TEST_CASE("decode_append reads arrays of every header size one element at a time, as decode does", "[object]") {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{65535},
                        std::size_t{65536}, std::size_t{70001}}) {
    std::vector<Object> values;
    for (std::size_t i = 0; i < n; ++i) {
      switch (i % 4) {
        case 0: values.emplace_back(static_cast<std::int64_t>(i) * 1000003 - 7); break;
        case 1: values.emplace_back(std::string(i % 37, 'x')); break;
        case 2: values.push_back(Object::list({static_cast<std::int64_t>(i), Object::dict({{"k", 1.5}})})); break;
        default: values.emplace_back(nullptr);
      }
    }
    const std::string bytes = mpx::encode(values);
    std::vector<Object> appended{Object("kept")};
    mpx::decode_append(bytes, appended);
    REQUIRE(appended.size() == n + 1);
    CHECK(appended.front() == Object("kept"));
    CHECK(std::vector<Object>(appended.begin() + 1, appended.end()) == mpx::decode<std::vector<Object>>(bytes));
  }
  std::vector<int> ints;
  mpx::decode_append(mpx::encode(std::vector<int>{3, -4, 70000}), ints);
  CHECK(ints == std::vector<int>{3, -4, 70000});
}

TEST_CASE("decode_append refuses what is not a whole array, and a callback's exception passes unchanged", "[object]") {
  std::vector<int> out;
  CHECK_THROWS_AS(mpx::decode_append(mpx::encode(42), out), mpx::SerializationError);            // not an array
  CHECK_THROWS_AS(mpx::decode_append(mpx::encode(std::map<int, int>{{1, 2}}), out), mpx::SerializationError);
  CHECK_THROWS_AS(mpx::decode_append(std::string_view(), out), mpx::SerializationError);          // empty
  const std::string three = mpx::encode(std::vector<int>{1, 2, 3});
  CHECK_THROWS_AS(mpx::decode_append(three.substr(0, 3), out), mpx::SerializationError);         // truncated
  CHECK_THROWS_AS(mpx::decode_append(three + "\x01", out), mpx::SerializationError);             // trailing byte
  CHECK_THROWS_AS(mpx::decode_append(std::string("\xdd\xff\xff\xff\xff", 5), out), mpx::SerializationError);
  CHECK_THROWS_AS(mpx::decode_append(mpx::encode(std::vector<std::string>{"a"}), out), mpx::SerializationError);
  struct Stop {};
  int seen = 0;
  CHECK_THROWS_AS(mpx::detail::for_each_element(three,
                                                [&](std::uint32_t index, const msgpack::object&) {
                                                  ++seen;
                                                  if (index == 1) throw Stop{};
                                                }),
                  Stop);
  CHECK(seen == 2);
  CHECK(mpx::detail::array_length(three) == 3u);
}
