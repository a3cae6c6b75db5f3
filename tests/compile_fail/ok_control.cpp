// expect: ok
// Control: everything here is valid, so this snippet must compile. If it does not, the flags or headers are wrong and
// the failures of the other snippets would prove nothing.
#include <mpx/mpx.hpp>

struct Point {
  int x = 0;
  int y = 0;
  MSGPACK_DEFINE(x, y);
};

static int work(int a, double b, Point p) { return a + static_cast<int>(b) + p.x + p.y; }

struct Worker : mpx::ProcessClass<Worker> {
  int n = 0;
  void run() override {}
  MSGPACK_DEFINE(n);
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Process a(work, 1, 2.5, Point{3, 4});
  mpx::Process b([](mpx::Object o) { (void)o; }, mpx::Object::list({42, nullptr, "hello"}));
  int captured = 5;
  mpx::Process c(mpx::closure, [captured] { (void)captured; });
  Worker w;
  (void)a;
  (void)b;
  (void)c;
  (void)w;
}
