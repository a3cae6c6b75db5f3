// Seed 001: two processes put squares and negatives of 1..5 on one queue; the parent drains it.
// 顺序可能不是按序列的 (the order may interleave).
#include <mpx/mpx.hpp>

#include <cstdio>
#include <vector>

void square(std::vector<int> numbers, mpx::Queue<int> queue) {
  for (int i : numbers) queue.put(i * i);
}

void make_negative(std::vector<int> numbers, mpx::Queue<int> queue) {
  for (int i : numbers) queue.put(i * -1);
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  const std::vector<int> numbers{1, 2, 3, 4, 5};
  mpx::Queue<int> q;
  mpx::Process p1(square, numbers, q);
  mpx::Process p2(make_negative, numbers, q);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  while (!q.empty()) std::printf("%d\n", q.get());
  std::printf("end main\n");
}
