// Seed 000 (获取进程池中的运算结果): func(msg) on Pool(4) with apply_async, then close, join, and get() each result.
#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

std::string func(std::string msg) {
  std::printf("msg: %s\n", msg.c_str());
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::printf("end\n");
  std::fflush(stdout);
  return "done " + msg;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(4);
  std::vector<mpx::AsyncResult<std::string>> result;
  for (int i = 0; i < 3; ++i) result.push_back(pool.apply_async(func, "hello " + std::to_string(i)));
  pool.close();
  pool.join();
  for (auto& res : result) std::printf("::: %s\n", res.get().c_str());
  std::printf("Sub-process(es) done.\n");
}
