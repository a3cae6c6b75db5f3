// Seed 001 (进程池): cube with Pool().map; Pool() uses cpu_count() workers.
#include <mpx/mpx.hpp>

#include <iostream>
#include <ranges>

int cube(int number) { return number * number * number; }

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  auto numbers = std::views::iota(0, 10);
  mpx::Pool p;
  // 默认情况下，这将分配此任务的最大可用处理器数 --> mpx::cpu_count()
  auto result = p.map(cube, numbers);
  // or: for (int i : numbers) result.push_back(p.apply(cube, i));
  p.close();
  p.join();
  std::cout << "[";
  for (std::size_t i = 0; i < result.size(); ++i) std::cout << (i ? ", " : "") << result[i];
  std::cout << "]\n";
}
