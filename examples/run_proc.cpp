// Seed 000 (更底层的多进程编程): start one child with Process(target=run_proc, args=('test',)) and wait for it.
#include <mpx/mpx.hpp>

#include <iostream>
#include <string>

#include <unistd.h>

// 子进程要执行的代码
void run_proc(std::string name) {
  for (int i = 0; i < 3; ++i) std::cout << "子进程 " << name << " (" << getpid() << ")...\n";
  std::cout << "子进程结束." << std::endl;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::cout << "父进程 " << getpid() << "." << std::endl;
  mpx::Process p(run_proc, "test");
  std::cout << "子进程要开始啦." << std::endl;
  p.start();
  for (int i = 0; i < 3; ++i) std::cout << "父进程" << getpid() << "进行中..." << std::endl;
  p.join();
  std::cout << "父进程结束啦" << std::endl;
}
