// Seed 000: a writer process puts A, B, C; after it ends, a reader drains the queue and puts "Done!".
#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

namespace {
void random_pause() {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 300)(rng)));
}
}  // namespace

// The seed's names, in a namespace: write and read would otherwise meet the POSIX functions of the same name.
namespace seed {

// 写数据进程执行的代码:
void write(mpx::Queue<std::string> q) {
  for (const char* value : {"A", "B", "C"}) {
    std::printf("Put %s to queue...\n", value);
    std::fflush(stdout);
    q.put(value);
    random_pause();
  }
}

// 读数据进程执行的代码:
void read(mpx::Queue<std::string> q) {
  for (;;) {
    if (!q.empty()) {
      auto value = q.get(true);
      std::printf("Get %s from queue.\n", value.c_str());
      std::fflush(stdout);
      random_pause();
    } else {
      q.put("Done!");
      break;
    }
  }
}

}  // namespace seed

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  // 父进程创建Queue，并传给各个子进程：
  mpx::Queue<std::string> q;
  mpx::Process pw(seed::write, q);
  mpx::Process pr(seed::read, q);
  pw.start();  // 启动子进程pw，写入:
  pw.join();   // 等待pw结束:
  pr.start();  // 启动子进程pr，读取:
  pr.join();
  std::printf("%s\n", q.get().c_str());
  std::printf("\n所有数据都写入并且读完\n");
}
