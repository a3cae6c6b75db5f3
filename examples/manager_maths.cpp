// Seed 002: MathsClass registered on a custom manager (Python: MyManager.register('Maths', MathsClass)). The manager
// process constructs the object and runs its methods; the proxy returns the results.
#include <mpx/mpx.hpp>

#include <iostream>

class MathsClass {
 public:
  int add(int x, int y) const { return x + y; }
  int mul(int x, int y) const { return x * y; }
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  // 可以用于向管理器类注册类型或可调用的类方法
  mpx::BaseManager::register_type<MathsClass>("Maths").method<&MathsClass::add>("add").method<&MathsClass::mul>("mul");

  // 实例化进程类
  mpx::BaseManager manager;
  // 为此管理器对象生成一个服务器进程
  manager.start();
  // 调用注册的方法
  mpx::InstanceProxy maths = manager.create("Maths");
  std::cout << maths.call<int>("add", 1, 2) << std::endl;  // 3
  std::cout << maths.call<int>("mul", 1, 2) << std::endl;  // 2
}
