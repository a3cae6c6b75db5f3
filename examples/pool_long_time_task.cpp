// Seed 000/003 (进程池 apply_async): long_time_task on Pool(4), 5 tasks; task 4 waits for a free worker. Then close
// and join.
#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include <unistd.h>

void long_time_task(int name) {
  std::printf("运行任务 %d (%d)...\n", name, ::getpid());
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  std::mt19937 random(static_cast<unsigned>(::getpid()) * 7919u + static_cast<unsigned>(name));
  std::this_thread::sleep_for(std::chrono::duration<double>(std::uniform_real_distribution<double>(0, 3)(random)));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("任务 %d 执行了 %0.2f 秒.\n", name, took);
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  std::printf("父进程 %d.\n", ::getpid());
  std::fflush(stdout);
  mpx::Pool p(4);
  for (int i = 0; i < 5; ++i) p.apply_async(long_time_task, i);  // 创建非阻塞子进程用这个
  std::printf("等待所有子进程完成...\n");
  std::fflush(stdout);
  p.close();
  p.join();
  std::printf("所有子进程完成了.\n");
}
