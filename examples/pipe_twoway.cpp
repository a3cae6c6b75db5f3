// Seed 000 (管道Pipes, 稍微复杂的例子): a writer process sends through one end and exits; then a reader process takes
// the other end, prints what it got and answers; the parent prints the answer.
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>

// In a namespace of their own: write and read are also the POSIX functions.
namespace seed {

// 写数据进程执行的代码:
void write(mpx::Connection conn) {
  auto value = mpx::Object::list({"h1 reader~"});
  std::cout << "Put " << value.repr() << " to pip..." << std::endl;
  conn.send(value);
  std::this_thread::sleep_for(std::chrono::seconds(1));
}

// 读数据进程执行的代码:
void read(mpx::Connection conn) {
  auto value = conn.recv();
  std::cout << "Get " << value.repr() << " from pip." << std::endl;
  conn.send(std::string("hi writer~~"));
}

}  // namespace seed

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  // 父进程创建Pipe，并传给各个子进程：
  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process pw(seed::write, parent_conn);  // 起点
  mpx::Process pr(seed::read, child_conn);  // 终点
  // 启动子进程pw，写入:
  pw.start();
  // 等待pw结束:
  pw.join();
  // 启动子进程pr，读取:
  pr.start();
  pr.join();
  std::cout << parent_conn.recv<std::string>() << std::endl;
  std::cout << "\n所有数据都写入并且读完" << std::endl;
}
