// Seed 001 (共享内存与竞态条件): two processes add 1 to a shared Value 100 times, two others add 1 to every element
// of a shared Array 100 times; first without a lock, then with the lock, then with fetch_add.
//
// 1. Without a lock, `number.value += 1` is a read and then a write: two processes can read the same value, and one
//    update is lost (Python printed "Value at end: 144"). In C++ the read-to-write window is a few nanoseconds, so
//    with the seed's 10 ms sleeps collisions are rare; the same race run flat out (no sleeps) loses updates every
//    time, and that count is printed too, honestly.
// 2. With the lock (Python's `with number.get_lock():`), the totals are exact: 200, [200.0, 300.0, 400.0].
// 3. With fetch_add, one atomic instruction per increment, no lock at all: exact again.
#include <mpx/mpx.hpp>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "py_format.hpp"

namespace {
void nap() { std::this_thread::sleep_for(std::chrono::milliseconds(10)); }  // time.sleep(0.01)
}  // namespace

void add_100(mpx::Value<int> number) {
  for (int i = 0; i < 100; ++i) {
    nap();
    number.set(number.value() + 1);  // number.value += 1: NOT atomic
  }
}

void add_100_array(mpx::Array<double> numbers) {
  for (int i = 0; i < 100; ++i) {
    nap();
    for (std::size_t j = 0; j < numbers.size(); ++j) numbers[j] += 1;  // NOT atomic either
  }
}

void add_100_locked(mpx::Value<int> number) {
  for (int i = 0; i < 100; ++i) {
    nap();
    std::scoped_lock guard(number.get_lock());  // with number.get_lock():
    number.set(number.value() + 1);
  }
}

void add_100_array_locked(mpx::Array<double> numbers) {
  for (int i = 0; i < 100; ++i) {
    nap();
    numbers.with_lock([](std::span<double> values) {
      for (double& v : values) v += 1;
    });
  }
}

void add_100_atomic(mpx::Value<int> number) {
  for (int i = 0; i < 100; ++i) {
    nap();
    number.fetch_add(1);
  }
}

void add_many_unlocked(mpx::Value<int> number, mpx::Event go, int times) {
  go.wait();  // both start together, so that they really run at the same time
  for (int i = 0; i < times; ++i) number.set(number.value() + 1);
}

template <class ValueTarget, class ArrayTarget>
void run(const char* title, ValueTarget value_target, ArrayTarget array_target) {
  std::printf("%s\n", title);
  mpx::Value<int> shared_number(0);
  std::printf("Value at beginning: %d\n", shared_number.value());
  mpx::Array<double> shared_array({0.0, 100.0, 200.0});
  std::printf("Array at beginning: %s\n", py_list(shared_array.to_vector()).c_str());

  mpx::Process process1(value_target, shared_number);
  mpx::Process process2(value_target, shared_number);
  mpx::Process process3(array_target, shared_array);
  mpx::Process process4(array_target, shared_array);
  for (auto* p : {&process1, &process2, &process3, &process4}) p->start();
  for (auto* p : {&process1, &process2, &process3, &process4}) p->join();

  std::printf("Value at end: %d\n", shared_number.value());
  std::printf("Array at end: %s\n", py_list(shared_array.to_vector()).c_str());
  std::printf("end main\n\n");
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  run("-- without a lock (the race is real, but rare with 10 ms naps) --", add_100, add_100_array);
  {
    constexpr int times = 10000000;
    mpx::Value<int> n(0);
    mpx::Event go;
    mpx::Process a(add_many_unlocked, n, go, times), b(add_many_unlocked, n, go, times);
    a.start();
    b.start();
    go.set();
    a.join();
    b.join();
    std::printf("the same race flat out: 2 x %d unlocked increments gave %d (%d lost)\n\n", times, n.value(),
                2 * times - n.value());
  }
  run("-- with get_lock() --", add_100_locked, add_100_array_locked);
  run("-- with fetch_add (and the Array under its lock) --", add_100_atomic, add_100_array_locked);
}
