// Seed 000: the first Queue programs. foo(q) under spawn puts 'hello'; f(q) puts [42, None, 'hello'].
#include <mpx/mpx.hpp>

#include <cstdio>

void foo(mpx::Queue<std::string> q) { q.put("hello"); }

void f(mpx::Queue<mpx::Object> q) { q.put(mpx::Object::list({42, nullptr, "hello"})); }

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::set_start_method("spawn");

  mpx::Queue<std::string> q;
  mpx::Process p(foo, q);
  p.start();
  std::printf("%s\n", q.get().c_str());
  p.join();

  mpx::Queue<mpx::Object> mixed;
  mpx::Process p2(f, mixed);
  p2.start();
  std::printf("%s\n", mixed.get().repr().c_str());  // prints "[42, None, 'hello']"
  p2.join();
}
