// Seed 000 (高级共享multiprocessing.Manager): ten workers each set d[i] = i*2 on one manager dict; the parent then
// prints enumerate(dict(d)), i.e. "position=key" in the order the workers finished, as the Python program does.
#include <mpx/mpx.hpp>

#include <iostream>
#include <vector>

void worker(mpx::DictProxy d, int key, int value) { d.set(key, value); }

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Manager mgr;
  mpx::DictProxy d = mgr.dict();
  std::vector<mpx::Process> jobs;
  for (int i = 0; i < 10; ++i) jobs.emplace_back(worker, d, i, i * 2);
  for (auto& j : jobs) j.start();
  for (auto& j : jobs) j.join();
  std::cout << "Results:" << std::endl;
  // Python's `for key, value in enumerate(dict(d))` walks the keys: the first name is the position.
  const mpx::Object::Array keys = d.keys();
  for (std::size_t key = 0; key < keys.size(); ++key) std::cout << key << "=" << keys[key].repr() << std::endl;
}
