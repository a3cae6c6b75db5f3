// Seed 000: a Process subclass that puts its name on a queue; the parent prints the results.
#include <mpx/mpx.hpp>

#include <cstdio>
#include <vector>

struct Processor : mpx::ProcessClass<Processor> {
  Processor() = default;
  Processor(mpx::Queue<std::string> queue, int idx) : queue(std::move(queue)), idx(idx) {}

  std::string return_name() const {
    // NOTE: name() is the Process's name, as self.name is in Python.
    return "Process idx=" + std::to_string(idx) + " is called '" + name() + "'";
  }
  void run() override { queue.put(return_name()); }

  // Adopting an empty reference makes an unbound handle: the default-constructed Processor that spawn and forkserver
  // rebuild in the child creates no queue of its own before the real one is decoded into it.
  mpx::Queue<std::string> queue{mpx::adopt, mpx::ObjectRef{}};
  int idx = 0;
  MSGPACK_DEFINE(queue, idx);
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  std::vector<Processor> processes;
  mpx::Queue<std::string> q;
  for (int i = 0; i < 5; ++i) {
    processes.emplace_back(q, i);
    processes.back().start();
  }
  for (auto& proc : processes) {
    proc.join();
    // NOTE: You cannot depend on the results to queue / dequeue in the same order
    std::printf("RESULT: %s\n", q.get().c_str());
  }
}
