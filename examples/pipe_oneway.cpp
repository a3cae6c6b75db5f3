// Seed 000 (管道Pipes): the simplest pipe. The child sends [42, None, 'hello'] and closes its end; the parent prints
// what it receives.
#include <mpx/mpx.hpp>

#include <iostream>

void f(mpx::Connection conn) {
  conn.send(mpx::Object::list({42, nullptr, "hello"}));
  conn.close();
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process p(f, child_conn);
  p.start();
  std::cout << parent_conn.recv().repr() << std::endl;  // prints "[42, None, 'hello']"
  p.join();
}
