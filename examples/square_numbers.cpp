// Seed 001 (创建和运行进程): one process per CPU, each squaring the numbers 0..999.
// The Python program prints nothing; this one ends with a one-line summary.
#include <mpx/mpx.hpp>

#include <iostream>
#include <vector>

void square_numbers() {
  for (int i = 0; i < 1000; ++i) {
    volatile int result = i * i;  // volatile: the work must not be optimized away
    (void)result;
  }
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::vector<mpx::Process> processes;
  const int num_processes = mpx::cpu_count();
  // 机器CPU的数量，通常是确定进程数量的一个好选择

  // 创建进程并分配每个进程一个函数
  for (int i = 0; i < num_processes; ++i) processes.emplace_back(square_numbers);

  // 启动所有进程
  for (auto& process : processes) process.start();

  // 等待所有进程结束
  // 阻塞主程序直到所有进程结束
  for (auto& process : processes) process.join();

  int succeeded = 0;
  for (auto& process : processes) succeeded += process.exitcode() == 0;
  std::cout << "done: " << num_processes << " processes squared the numbers 0..999, " << succeeded
            << " exited with code 0" << std::endl;
  return succeeded == num_processes ? 0 : 1;
}
