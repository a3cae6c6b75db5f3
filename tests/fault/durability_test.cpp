// What returned is durable: a child that puts (or releases, or sets) and is SIGKILLed the moment the call returns has
// still handed the operation over. Every queue kind, a Lock, an Event; through the side door and through ZeroMQ.
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>

#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

#include <unistd.h>

#include "children.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int trials = 100;

// How the child talks to the coordinator: its own choice, made before its first message. ROUTER is what a process on
// another host (or any process, with MPX_SIDE_DOOR=0) uses; remote also keeps it off the queues' shared-memory lane.
enum Route : int { side_door = 0, router = 1, router_remote = 2 };

// Each put through the ROUTER waits for its acknowledgement, a round trip: fewer of them keep the test quick. The
// SIGKILL comes right at the last returned put either way.
int items_per_trial(int route) { return route == side_door ? 100 : 20; }

void choose(int route) {
  if (route != side_door) ::setenv("MPX_SIDE_DOOR", "0", 1);
  if (route == router_remote) ::setenv("MPX_SHM_REMOTE", "1", 1);
}

[[noreturn]] void die_now() {
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();
}

template <class Q>
void put_then_die(Q q, int route) {
  choose(route);
  for (int i = 0; i < items_per_trial(route); ++i) q.put(i);
  die_now();
}

void release_then_die(mpx::Lock lock, int route) {
  choose(route);
  lock.acquire();
  lock.release();
  die_now();
}

void set_then_die(mpx::Event event, int route) {
  choose(route);
  event.set();
  die_now();
}

mpx::ProcessOptions forked() {
  mpx::ProcessOptions options;
  options.method = mpx::StartMethod::fork;  // the fastest start: 100 trials per case
  return options;
}

void await_sigkill(mpx::Process& p) {
  REQUIRE(p.join(std::chrono::seconds(60)));
  REQUIRE(p.exitcode() == -SIGKILL);
}

// The next item, or nullopt if none comes within 5 s. SimpleQueue's get has no timeout: wait until it is not empty.
template <class Q>
std::optional<int> next_item(Q& q) {
  if constexpr (std::is_same_v<Q, mpx::SimpleQueue<int>>) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (q.empty()) {
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(1ms);
    }
    return q.get();
  } else {
    try {
      return q.get(true, 5s);
    } catch (const mpx::Empty&) {
      return std::nullopt;
    }
  }
}

template <class Q>
void no_put_lost(int route) {
  int lost_trials = 0, lost_items = 0;
  for (int t = 0; t < trials; ++t) {
    Q q;
    {
      mpx_test::Children children;
      await_sigkill(children.start(forked(), put_then_die<Q>, q, route));
    }
    int got = 0;
    for (; got < items_per_trial(route); ++got) {
      const auto item = next_item(q);
      if (!item) break;
      REQUIRE(*item == got);  // in order, none twice
    }
    if (got < items_per_trial(route)) {
      ++lost_trials;
      lost_items += items_per_trial(route) - got;
    }
  }
  INFO(lost_items << " items lost in " << lost_trials << " of " << trials << " trials");
  CHECK(lost_trials == 0);
}

const char* route_name(int route) {
  return route == side_door ? "side door" : route == router ? "ROUTER" : "ROUTER, no shared memory";
}

}  // namespace

TEST_CASE("a put that returned survives its process's SIGKILL, for every queue kind", "[fault][durability]") {
  for (int route : {side_door, router, router_remote}) {
    DYNAMIC_SECTION("route: " << route_name(route)) {
      SECTION("Queue") { no_put_lost<mpx::Queue<int>>(route); }
      SECTION("SimpleQueue") { no_put_lost<mpx::SimpleQueue<int>>(route); }
      SECTION("JoinableQueue") { no_put_lost<mpx::JoinableQueue<int>>(route); }
    }
  }
}

TEST_CASE("a Lock released and an Event set right before SIGKILL: the effect stays", "[fault][durability]") {
  for (int route : {side_door, router}) {
    DYNAMIC_SECTION("route: " << route_name(route)) {
      int died_holding = 0, unset = 0;
      for (int t = 0; t < trials; ++t) {
        mpx::Lock lock;
        mpx::Event event;
        {
          mpx_test::Children children;
          await_sigkill(children.start(forked(), release_then_die, lock, route));
          await_sigkill(children.start(forked(), set_then_die, event, route));
        }
        // Released before the death: not a lock the coordinator had to take back from the dead.
        REQUIRE(lock.acquire(true, 10s));
        if (lock.previous_owner_died()) ++died_holding;
        lock.release();
        if (!event.wait(5s)) ++unset;
      }
      INFO(died_holding << " releases and " << unset << " sets lost in " << trials << " trials");
      CHECK(died_holding == 0);
      CHECK(unset == 0);
    }
  }
}
