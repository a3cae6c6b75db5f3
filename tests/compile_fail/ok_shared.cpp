// expect: ok
// The shared memory API compiles for a plain struct, integers (with fetch_add) and SharedMemory, and its handles are
// accepted as Process arguments.
#include <mpx/mpx.hpp>

#include <mutex>

struct Point {
  double x, y;
};

static void target(mpx::Value<Point> p, mpx::Array<int> a, mpx::RawValue<long> r, mpx::SharedMemory m) {
  p.with_lock([](Point& q) { q.x += 1; });
  a[0].fetch_add(1);
  r.fetch_add(1);
  (void)m.buf();
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Value<Point> p(Point{1, 2});
  mpx::Array<int> a({1, 2, 3});
  mpx::RawValue<long> r(0);
  mpx::SharedMemory m(std::nullopt, true, 8);
  std::scoped_lock guard(p.get_lock());
  mpx::Process proc(target, p, a, r, m);
}
