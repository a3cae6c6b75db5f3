// Seed 002 (the nested-mutable pitfall): a child appends to lists held in a manager Namespace.
//
// In Python, `ns.x.append(1)` fetches a copy of ns.x, appends to the copy and throws it away: the program prints
// "after Namespace(x=[], y=[])". The seed's workaround copies the lists, appends, and assigns them back (three round
// trips, and a race if two processes do it at once). mpx runs the append on the manager, in place, in one request:
// `ns.append_in({"x"}, 1)`.
#include <mpx/mpx.hpp>

#include <iostream>

// The pitfall, spelled out: what Python's `ns.x.append(1)` really does.
void fun_pitfall(mpx::NamespaceProxy ns) {
  mpx::Object x = ns.get("x");  // a copy
  x.as_array().push_back(1);    // changes the copy only
  mpx::Object y = ns.get("y");
  y.as_array().push_back("x");
}

// The seed's workaround: change the copies, then assign them back.
void fun_workaround(mpx::NamespaceProxy ns, mpx::Object x, mpx::Object y) {
  x.as_array().push_back(1);
  y.as_array().push_back("x");
  ns.set("x", x);
  ns.set("y", y);
}

// mpx's fix: the append runs on the manager, on the nested list itself.
void fun(mpx::NamespaceProxy ns) {
  ns.append_in({"x"}, 1);
  ns.append_in({"y"}, "x");
}

void run(const char* title, void (*reset)(mpx::NamespaceProxy&), mpx::Process p, mpx::NamespaceProxy ns) {
  std::cout << title << std::endl;
  reset(ns);
  std::cout << "before " << ns.repr() << std::endl;
  p.start();
  p.join();
  std::cout << "after " << ns.repr() << std::endl;
}

void reset(mpx::NamespaceProxy& ns) {
  ns.set("x", mpx::Object::list({}));
  ns.set("y", mpx::Object::list({}));
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Manager manager;
  mpx::NamespaceProxy ns = manager.Namespace();
  run("# Python's ns.x.append(1): changes a copy", reset, mpx::Process(fun_pitfall, ns), ns);
  run("# the seed's workaround: copy, append, assign back", reset,
      mpx::Process(fun_workaround, ns, ns.get("x"), ns.get("y")), ns);
  run("# mpx: ns.append_in({\"x\"}, 1) appends on the manager", reset, mpx::Process(fun, ns), ns);
}
