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
