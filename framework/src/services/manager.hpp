// The manager service: the objects of a Manager (dicts, lists, namespaces, values and instances of registered types),
// served by a manager process over its own ROUTER socket. It reuses the coordinator's loop (bounded decode, malformed
// counting, replies) on a second Coordinator object that serves only these kinds.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <zmq.hpp>

#include "runtime/coordinator.hpp"

namespace mpx::services {

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
  void serve_forever();
  // Any thread: makes serve_forever return.
  void stop();

 private:
  struct Objects;
  std::unique_ptr<Objects> objects_;
  runtime::Coordinator coordinator_;
  std::mutex mutex_;
  std::condition_variable stopped_cv_;
  bool stopped_ = false;
};

}  // namespace mpx::services
