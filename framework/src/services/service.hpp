// The one shape of a coordinator service (queues, sync, pool, pipes, shm, trace): it registers a handler per kind on
// a Host, answers through it, finds its objects by the header's id, and checks bodies the same way as every other
// service. A service knows nothing of sockets beyond "reply to this peer": the Host is the coordinator in a running
// session (CoordinatorHost), and a plain reply sink in tests/unit/, which drive a service's state machine directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <mpx/errors.hpp>

#include "runtime/coordinator.hpp"

namespace mpx::services {

using runtime::Coordinator;
using Peer = Coordinator::Peer;

// What a service may ask of the coordinator that runs it. Coordinator thread only.
class Host {
 public:
  using Handler = Coordinator::Handler;
  using DeathHook = Coordinator::DeathHook;
  using MetricsCollector = Coordinator::MetricsCollector;
  using TracingHook = std::function<void(bool on)>;

  virtual ~Host() = default;

  // Registration happens before the coordinator starts.
  virtual void handle(wire::Kind kind, Handler handler) = 0;
  virtual void on_death(DeathHook hook) = 0;
  virtual void on_metrics(MetricsCollector collector) = 0;

  virtual void reply(const Peer& peer, wire::Envelope& reply) = 0;
  void reply_error(const Peer& peer, const wire::Header& request, wire::ErrorCode code, std::string_view message);
  // A request the coordinator rejected without the ProtocolError that would have counted it (an unknown object).
  virtual void count_malformed() = 0;
  virtual runtime::TimerWheel& timers() = 0;
  // A new id for a shared object, unique across services for the session.
  virtual std::uint64_t allocate_object_id() = 0;
  // Watches a process (an actor id, wire/actor_id.hpp): death hooks run when it exits. False if it is already gone.
  virtual bool watch(std::uint64_t actor) = 0;
  // A watched process exited, and its death hooks have not run yet.
  virtual bool has_exited(std::uint64_t actor) const = 0;
  // A watched process was found already reaped (its parent joined it) before the loop saw it exit: its death hooks
  // run now, before the service decides anything that depends on it.
  virtual void reaped(std::uint64_t actor) = 0;

  // Tracing was switched on or off (by the trace service): every service that keeps a fast path the trace cannot see
  // hears of it.
  void on_tracing_changed(TracingHook hook) { tracing_hooks_.push_back(std::move(hook)); }
  void tracing_changed(bool on) {
    for (auto& hook : tracing_hooks_) hook(on);
  }

 private:
  std::vector<TracingHook> tracing_hooks_;
};

// The running coordinator as a Host.
class CoordinatorHost final : public Host {
 public:
  explicit CoordinatorHost(Coordinator& coordinator) : coordinator_(coordinator) {}
  void handle(wire::Kind kind, Handler handler) override { coordinator_.handle(kind, std::move(handler)); }
  void on_death(DeathHook hook) override { coordinator_.on_death(std::move(hook)); }
  void on_metrics(MetricsCollector collector) override { coordinator_.on_metrics(std::move(collector)); }
  void reply(const Peer& peer, wire::Envelope& reply) override { coordinator_.reply(peer, reply); }
  void count_malformed() override { coordinator_.count_malformed(); }
  runtime::TimerWheel& timers() override { return coordinator_.timers(); }
  std::uint64_t allocate_object_id() override { return coordinator_.allocate_object_id(); }
  bool watch(std::uint64_t actor) override { return coordinator_.watch(actor); }
  bool has_exited(std::uint64_t actor) const override { return coordinator_.has_exited(actor); }
  void reaped(std::uint64_t actor) override { coordinator_.reaped(actor); }

 private:
  Coordinator& coordinator_;
};

// A request names an object that does not exist, or not of the kind's type: Service::on answers it error 2 (unknown
// object) and counts it with the malformed. A ProtocolError, so code that handles a bad request handles this one too.
struct UnknownObject : ProtocolError {
  UnknownObject(std::string_view type, std::uint64_t id);
};

// A handler's refusal with a code of its own (full, value, not owner...): answered as such, and not counted.
struct Refusal {
  wire::ErrorCode code;
  std::string message;
};

// Body checks, one way for every service (PROTOCOL.md: a missing or extra frame is malformed). Each throws
// ProtocolError, which the coordinator answers as malformed.
void expect_frames(const wire::Envelope& request, std::size_t frames);
// The kind takes a nil body: exactly one frame, nil.
void expect_nil(const wire::Envelope& request);
// The first frame is nil (a kind whose body is nil or arguments).
bool body_is_nil(const wire::Envelope& request);

// An object's name in metrics: the one a topology gave it ("queue:jobs" -> "jobs", for `type` "queue"), else its id.
std::string metrics_name(std::string_view type, std::uint64_t id);

class Service {
 public:
  virtual ~Service() = default;
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

 protected:
  explicit Service(Host& host) : coordinator_(host) {}

  // Registers `handler(peer, request)` for `kind`; an UnknownObject or a Refusal it throws is answered here.
  template <class Handler>
  void on(wire::Kind kind, Handler handler) {
    coordinator_.handle(kind, [this, handler = std::move(handler)](Peer& peer, wire::Envelope& request) mutable {
      try {
        handler(peer, request);
      } catch (const UnknownObject& e) {
        coordinator_.count_malformed();
        coordinator_.reply_error(peer, request.header, wire::ErrorCode::unknown_object, e.what());
      } catch (const Refusal& r) {
        coordinator_.reply_error(peer, request.header, r.code, r.message);
      }
    });
  }
  // A member function as the handler.
  template <class S>
  void on(wire::Kind kind, void (S::*method)(Peer&, wire::Envelope&)) {
    on(kind, [this, method](Peer& peer, wire::Envelope& request) { (static_cast<S*>(this)->*method)(peer, request); });
  }

  void ok(const Peer& peer, const wire::Header& request, std::string body);
  // ok with a nil body.
  void ok(const Peer& peer, const wire::Header& request);

  // The object the request's header names, of a service's map from id to state (held by value or by pointer).
  template <class Map>
  static auto& find(Map& objects, const wire::Envelope& request, std::string_view type) {
    return find(objects, request.header.object, type);
  }
  template <class Map>
  static auto& find(Map& objects, std::uint64_t id, std::string_view type) {
    auto it = objects.find(id);
    if (it == objects.end()) throw UnknownObject(type, id);
    if constexpr (std::is_pointer_v<typename Map::mapped_type> ||
                  requires(typename Map::mapped_type& p) { p.get(); }) {
      return *it->second;
    } else {
      return it->second;
    }
  }

  Host& coordinator_;
};

// Makes a service of type S (whose install() registers its handlers and hooks on `host`).
template <class S>
std::unique_ptr<Service> installed(Host& host) {
  auto service = std::make_unique<S>(host);
  service->install();
  return service;
}

// Each makes its service and registers its handlers and hooks on `host`; the service lives as long as what it returns.
std::unique_ptr<Service> install_queues(Host& host);
std::unique_ptr<Service> install_sync(Host& host);
std::unique_ptr<Service> install_pipes(Host& host);
std::unique_ptr<Service> install_trace(Host& host);
std::unique_ptr<Service> install_shm(Host& host);
std::unique_ptr<Service> install_pool(Host& host);

}  // namespace mpx::services
