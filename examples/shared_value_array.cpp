// Seed 000 (共享内存): Value('d', 0.0) and Array('i', range(10)) changed by a child process.
//   def f(n, a):
//       n.value = 3.1415927
//       for i in range(len(a)):
//           a[i] = -a[i]
// Prints what Python prints: 3.1415927, then [0, -1, -2, -3, -4, -5, -6, -7, -8, -9].
#include <mpx/mpx.hpp>

#include <charconv>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

void f(mpx::Value<double> n, mpx::Array<int> a) {
  n.set(3.1415927);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = -a[i];
}

// Python's repr of a float: the shortest text that reads back the same.
std::string py_float(double d) {
  char buffer[64];
  auto end = std::to_chars(buffer, buffer + sizeof buffer, d).ptr;
  std::string s(buffer, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Value<double> num(0.0);
  std::vector<int> range10(10);
  std::iota(range10.begin(), range10.end(), 0);
  mpx::Array<int> arr(range10);

  mpx::Process p(f, num, arr);
  p.start();
  p.join();

  std::printf("%s\n", py_float(num.value()).c_str());
  std::string items;
  for (int x : arr.to_vector()) items += (items.empty() ? "" : ", ") + std::to_string(x);
  std::printf("[%s]\n", items.c_str());
}
