// Test scaffolding for tests/unit/service_*_test.cpp: a Host that is a plain reply sink, so a test drives a service's
// state machine directly. It delivers envelopes to the handlers the service registered, keeps every reply, runs the
// timer wheel at the times the test names, and runs the death hooks when the test says a process died. No socket
// and no other process is involved; the services are the real ones.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "services/service.hpp"
#include "wire/envelope.hpp"

namespace mpx_test {

using namespace std::chrono_literals;
namespace wire = mpx::wire;
namespace services = mpx::services;

struct Reply {
  std::uint64_t to = 0;  // the actor the peer named
  wire::Envelope envelope;

  wire::Kind kind() const { return envelope.header.kind; }
  template <class T>
  T body() const {
    return envelope.body_as<T>();
  }
  std::string frame(std::size_t i) const {
    return std::string(static_cast<const char*>(envelope.body.at(i).data()), envelope.body.at(i).size());
  }
  // An error reply's code; 0 for any other kind.
  std::uint16_t error_code() const {
    if (kind() != wire::Kind::error) return 0;
    return std::get<0>(body<std::tuple<std::uint16_t, std::string>>());
  }
};

class ReplySink final : public services::Host {
 public:
  void handle(wire::Kind kind, Handler handler) override { handlers_[kind] = std::move(handler); }
  void on_death(DeathHook hook) override { death_hooks_.push_back(std::move(hook)); }
  void on_metrics(MetricsCollector collector) override { collectors_.push_back(std::move(collector)); }
  void reply(const services::Peer& peer, wire::Envelope& reply) override {
    replies.push_back(Reply{peer.actor, std::move(reply)});
  }
  void count_malformed() override { ++malformed; }
  mpx::runtime::TimerWheel& timers() override { return wheel_; }
  std::uint64_t allocate_object_id() override { return next_object_id_++; }
  bool watch(std::uint64_t pid) override { return !dead_.count(pid); }
  bool has_exited(std::uint64_t pid) const override { return dead_.count(pid) != 0; }
  void reaped(std::uint64_t pid) override {
    if (!dead_.count(pid)) die(pid);
  }

  // Delivers a request from `sender` (its peer routing names the sender, one socket per process) with these body
  // frames, as the coordinator's dispatch would. A ProtocolError the handler throws propagates: the coordinator
  // answers it as malformed, and a test asserts it with REQUIRE_THROWS_AS.
  void deliver(wire::Kind kind, std::uint64_t object, std::uint64_t sender, std::vector<std::string> frames) {
    auto it = handlers_.find(kind);
    REQUIRE(it != handlers_.end());
    wire::Envelope request;
    request.header.kind = kind;
    request.header.object = object;
    request.header.sender = sender;
    request.header.correlation = ++correlation_;
    for (auto& f : frames) request.body.emplace_back(f.data(), f.size());
    services::Peer peer;
    const std::string routing = "peer-" + std::to_string(sender);
    peer.routing = zmq::message_t(routing.data(), routing.size());
    peer.actor = sender;
    it->second(peer, request);
  }
  template <class... Args>
  void deliver_args(wire::Kind kind, std::uint64_t object, std::uint64_t sender, const std::tuple<Args...>& args,
                    std::vector<std::string> more = {}) {
    more.insert(more.begin(), mpx::encode(args));
    deliver(kind, object, sender, std::move(more));
  }

  // The replies since the last take, oldest first.
  std::vector<Reply> take() { return std::exchange(replies, {}); }
  // The one reply since the last take.
  Reply take_one() {
    auto all = take();
    REQUIRE(all.size() == 1);
    return std::move(all.front());
  }

  // Fires every deadline due `after` from now, as the coordinator's loop would once that much time passed.
  std::size_t advance(std::chrono::milliseconds after) {
    return wheel_.advance(mpx::runtime::TimerWheel::Clock::now() + after);
  }
  // The process died: its death hooks run, as when the coordinator reaps it.
  void die(std::uint64_t pid) {
    dead_.insert(pid);
    for (auto& hook : death_hooks_) hook(pid);
  }

  std::vector<Reply> replies;
  std::uint64_t malformed = 0;

 private:
  std::map<wire::Kind, Handler> handlers_;
  std::vector<DeathHook> death_hooks_;
  std::vector<MetricsCollector> collectors_;
  mpx::runtime::TimerWheel wheel_;
  std::set<std::uint64_t> dead_;
  std::uint64_t next_object_id_ = 1;
  std::uint64_t correlation_ = 0;
};

inline std::string nil() { return mpx::encode(mpx::Object{}); }

inline constexpr auto code(wire::ErrorCode c) { return static_cast<std::uint16_t>(c); }

}  // namespace mpx_test
