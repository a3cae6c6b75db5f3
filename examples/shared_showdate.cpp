// Seed 002 (Value, Array实例): showdate/updater. A global counter is per process (a child sees the parent's value as
// of its fork, and its own increments stay its own), while the Value and the Array are shared by everyone. The seed
// ran with fork (Linux), so this does too; the pids differ from run to run, and in loop2 the children run while the
// parent is still updating, so what they print depends on timing there (as it does in Python).
#include <mpx/mpx.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

#include "py_format.hpp"

constexpr int procs = 3;
int count = 0;  // global, not shared

void showdate(std::string label, mpx::Value<int> val, mpx::Array<double> arr) {
  // msg = '%-12s:pid:%4s, global:%s,value:%s,array:%s'
  std::printf("%-12s:pid:%4d, global:%d,value:%d,array:%s\n", label.c_str(), static_cast<int>(::getpid()), count,
              val.value(), py_list(arr.to_vector()).c_str());
  std::fflush(stdout);
}

void updater(mpx::Value<int> val, mpx::Array<double> arr) {
  count += 1;                   // the global counter: this process's own copy
  val.set(val.value() + 1);     // val.value += 1 (as in the seed: not atomic, see shared_add_100)
  for (int i = 0; i < 3; ++i) arr[static_cast<std::size_t>(i)] += 1;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::set_start_method("fork");

  mpx::Value<int> scalar(0);
  mpx::Array<double> vector(procs);  // Array('d', procs): three zeros

  showdate("parent start", scalar, vector);

  mpx::Process p(showdate, std::string("child"), scalar, vector);
  p.start();
  p.join();

  std::printf("\nloop1(updates in parent, serial children)....\n");
  for (int i = 0; i < procs; ++i) {
    count += 1;
    scalar.set(scalar.value() + 1);
    vector[static_cast<std::size_t>(i)] += 1;
    mpx::Process child(showdate, "porcess " + std::to_string(i) + " ", scalar, vector);
    child.start();
    child.join();
  }

  std::printf("\nloop2(updates in parent, serial children)....\n");
  std::vector<mpx::Process> ps;
  for (int i = 0; i < procs; ++i) {
    count += 1;
    scalar.set(scalar.value() + 1);
    vector[static_cast<std::size_t>(i)] += 1;
    ps.emplace_back(showdate, "porcess " + std::to_string(i) + " ", scalar, vector);
    ps.back().start();
  }
  for (auto& child : ps) child.join();

  std::printf("\nloop3(updates in parent, serial children)....\n");
  for (int i = 0; i < procs; ++i) {
    mpx::Process child(updater, scalar, vector);
    child.start();
    child.join();
  }
  showdate("parent temp", scalar, vector);

  ps.clear();
  std::printf("\nloop4(updates in parent, serial children)....\n");
  for (int i = 0; i < procs; ++i) {
    ps.emplace_back(updater, scalar, vector);
    ps.back().start();
  }
  for (auto& child : ps) child.join();

  showdate("parent end", scalar, vector);  // global count = 6 only in the parent
}
