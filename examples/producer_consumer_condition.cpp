// Seed 000: Producer and Consumer Process subclasses sharing a bounded Queue(10) and a Condition.
// Producers stop after finding the queue full three times; the consumer loops forever, so it is a daemon and ends
// with the program (the seed's notebook simply never stops it).
#include <mpx/mpx.hpp>

#include <cstdio>
#include <random>

namespace {
int random_value() {
  static thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_int_distribution<int>(0, 10)(rng);
}
void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}
}  // namespace

// 生产者
struct Producer : mpx::ProcessClass<Producer> {
  Producer() = default;
  Producer(mpx::Queue<std::string> q, mpx::Condition con, const std::string& name) : q(std::move(q)), con(std::move(con)) {
    set_name(name);
    say("生产者" + name + "产生了");
  }
  void run() override {
    int count = 3;  // 只生产满3轮,要不然就会无限循环出不去了
    while (count > 0) {
      con.acquire();
      if (q.full()) {
        say("队列满了,生产者等待");
        --count;
        con.wait();
      } else {
        const std::string value = std::to_string(random_value());
        say(name() + "把值" + name() + ":" + value + "放入了队列");
        q.put(name() + ":" + value);
      }
      con.notify();
    }
    con.release();
  }
  mpx::Queue<std::string> q{mpx::adopt, mpx::ObjectRef{}};
  mpx::Condition con{mpx::adopt, mpx::ObjectRef{}};
  MSGPACK_DEFINE(q, con);
};

// 消费者
struct Consumer : mpx::ProcessClass<Consumer> {
  Consumer() = default;
  Consumer(mpx::Queue<std::string> q, mpx::Condition con, const std::string& name) : q(std::move(q)), con(std::move(con)) {
    set_name(name);
    set_daemon(true);
    say("消费者" + name + "产生了");
  }
  void run() override {
    for (;;) {
      con.acquire();
      if (q.empty()) {
        say("队列空了,消费者等待");
        con.wait();
      } else {
        const std::string value = q.get();
        say(name() + "从队列中获取了" + name() + ":" + value);
        con.notify();
      }
      con.release();
    }
  }
  mpx::Queue<std::string> q{mpx::adopt, mpx::ObjectRef{}};
  mpx::Condition con{mpx::adopt, mpx::ObjectRef{}};
  MSGPACK_DEFINE(q, con);
};

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Queue<std::string> q(10);
  mpx::Condition con;
  Producer p1(q, con, "P1");
  p1.start();
  Producer p2(q, con, "P2");
  p2.start();
  Consumer c1(q, con, "C1");
  c1.start();
  p1.join();
  p2.join();
  // The consumer is a daemon: it is terminated when the program ends, once the producers are done.
}
