// expect: ok
// Arguments of standard-library types (std::string, std::vector, std::map, std::optional, std::tuple) must compile:
// they pull namespace std into argument-dependent lookup, so mpx must not make unqualified calls that std::bind or
// other std names could hijack.
#include <mpx/mpx.hpp>

#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

static void work(std::string name, std::vector<int> values, std::map<std::string, double> weights,
                 std::optional<int> limit, std::tuple<int, std::string> pair) {
  (void)name;
  (void)values;
  (void)weights;
  (void)limit;
  (void)pair;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Process p(work, std::string("name"), std::vector<int>{1, 2, 3}, std::map<std::string, double>{{"a", 1.0}},
                 std::optional<int>{}, std::tuple<int, std::string>{1, "x"});
  mpx::Process q(mpx::ProcessOptions{}, work, "literal", std::vector<int>{}, std::map<std::string, double>{},
                 std::optional<int>{7}, std::make_tuple(2, std::string("y")));
  auto ctx = mpx::get_context("fork");
  mpx::Process r = ctx.Process(work, std::string("ctx"), std::vector<int>{}, std::map<std::string, double>{},
                               std::nullopt, std::tuple<int, std::string>{});
  (void)p;
  (void)q;
  (void)r;
}
