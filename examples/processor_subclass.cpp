// Seed 000 (使用Process作为父类自定义子进程): a Process subclass that overrides run().
// The seed sends each line back through a Queue; until mpx::Queue exists, each child prints its own line.
// As in the seed, the children run concurrently, so their lines may come in any order.
#include <mpx/mpx.hpp>

#include <iostream>
#include <string>
#include <vector>

struct Processor : mpx::ProcessClass<Processor> {
  int idx = 0;

  Processor() = default;  // spawn and forkserver rebuild the object in the child from the MSGPACK_DEFINE members
  explicit Processor(int idx) : idx(idx) {}

  std::string return_name() const {
    // NOTE: name() is the process's name, as self.name is in Python.
    return "Process idx=" + std::to_string(idx) + " is called '" + name() + "'";
  }

  void run() override { std::cout << return_name() << std::endl; }

  MSGPACK_DEFINE(idx);
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::vector<Processor> processes;
  processes.reserve(5);
  for (int i = 0; i < 5; ++i) {
    processes.emplace_back(i);
    processes.back().start();
  }
  for (auto& proc : processes) proc.join();
}
