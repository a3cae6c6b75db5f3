// Seed 003: a function cannot return a value from a Process, so results go through a Queue.
#include <mpx/mpx.hpp>

#include <cstdio>

// 定义一个没有返回值得调用函数
void job(mpx::Queue<int> q, int res) { q.put(res); }

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Queue<int> q;
  mpx::Process p1(job, q, 1);
  mpx::Process p2(job, q, 3);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  const int res1 = q.get();
  const int res2 = q.get();
  std::printf("%d\n%d\n", res1, res2);
}
