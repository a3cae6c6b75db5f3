// The Manager's server, not a coordinator service: the objects of a Manager (dicts, lists, namespaces, values and
// instances of registered types), served by a manager process over its own ROUTER socket. It reuses the coordinator's
// loop (bounded decode, malformed counting, replies) on a second Coordinator object that serves only these kinds.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <zmq.hpp>

#include "runtime/coordinator.hpp"

namespace mpx::manager {

// A type registered with Manager::register_type, as function pointers resolved in the manager process. Each one
// catches what the user's code throws and reports it as msgpack [type, message, pid] in `error`/`result`.
struct ManagedType {
  using Construct = void* (*)(std::string_view args, std::string& error);  // nullptr: raised
  using Destroy = void (*)(void* self);
  using Method = bool (*)(void* self, std::string_view args, std::string& result);  // false: raised
  Construct construct = nullptr;
  Destroy destroy = nullptr;
  std::unordered_map<std::string, Method> methods;
};

struct ManagerConfig {
  std::optional<std::string> authkey;  // set: every peer must answer the HMAC challenge first
  std::unordered_map<std::string, ManagedType> types;
};

// A manager server bound to its endpoint. serve_forever() returns once a manager_shutdown arrives (or stop()).
class ManagerServer {
 public:
  ManagerServer(zmq::context_t& context, std::string endpoint, ManagerConfig config);
  ~ManagerServer();
  ManagerServer(const ManagerServer&) = delete;
  ManagerServer& operator=(const ManagerServer&) = delete;

  const std::string& endpoint() const noexcept { return coordinator_.endpoint(); }
  // Runs one request from a direct stream, whose handshake (if any) its listener already did: returns the reply, or
  // nullopt for a posted kind. Any thread. A malformed request is answered and counted (malformed_direct()).
  std::optional<wire::Envelope> execute(wire::Envelope& request);
  std::uint64_t malformed_direct() const noexcept { return malformed_direct_.load(); }
  // What manager_info tells clients: the address of the direct stream listener.
  void set_direct_address(std::string address);
  void serve_forever();
  // Any thread: makes serve_forever return.
  void stop();

 private:
  using Body = std::function<std::optional<wire::Envelope>(const std::string& peer, wire::Envelope& request)>;
  std::optional<wire::Envelope> run(const Body& body, const std::string& peer, wire::Envelope& request,
                                    bool count_malformed);

  struct Objects;
  std::unique_ptr<Objects> objects_;
  std::unordered_map<std::uint16_t, Body> bodies_;
  std::mutex state_mutex_;  // the objects: the coordinator thread and the direct streams' threads share them
  std::atomic<std::uint64_t> malformed_direct_{0};
  runtime::Coordinator coordinator_;
  std::mutex mutex_;
  std::condition_variable stopped_cv_;
  bool stopped_ = false;
};

}  // namespace mpx::manager
