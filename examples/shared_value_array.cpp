// Seed 000 (共享内存): Value('d', 0.0) and Array('i', range(10)) changed by a child process.
//   def f(n, a):
//       n.value = 3.1415927
//       for i in range(len(a)):
//           a[i] = -a[i]
// Prints what Python prints: 3.1415927, then [0, -1, -2, -3, -4, -5, -6, -7, -8, -9].
#include <mpx/mpx.hpp>

#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "py_format.hpp"

void f(mpx::Value<double> n, mpx::Array<int> a) {
  n.set(3.1415927);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = -a[i];
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
  std::printf("%s\n", py_list(arr.to_vector()).c_str());  // print(arr[:])
}
