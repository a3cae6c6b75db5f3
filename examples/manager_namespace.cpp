// Seed 000: a manager Namespace has no public methods, only writable attributes.
#include <mpx/mpx.hpp>

#include <iostream>

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Manager manager;
  mpx::NamespaceProxy Global = manager.Namespace();
  Global.set("x", 10);       // Global.x = 10
  Global.set("y", "hello");  // Global.y = 'hello'
  std::cout << Global.repr() << std::endl;  // Namespace(x=10, y='hello')
}
