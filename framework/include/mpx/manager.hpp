/// \file
/// mpx/manager.hpp — Python's multiprocessing managers: a manager process holds dicts, lists, namespaces, values and
/// instances of registered types; proxies reach them from any process, one request per operation.
///
///   mpx::Manager manager;                          // starts the manager process (Python: multiprocessing.Manager())
///   mpx::DictProxy d = manager.dict();
///   d.set(1, "one");                               // d[1] = 'one'
///   mpx::Process p(worker, d); ...                 // proxies travel as arguments under fork, forkserver and spawn
///
/// Unlike Python, nested containers are changed in place on the manager, in one request:
///   ns.append_in({"x"}, 1);                        // Python's ns.x.append(1), which silently changes a copy
///   d.update_in({"stats", "hits"}, mpx::op::add(1));  // an atomic d['stats']['hits'] += 1
///
/// Queue, Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier from a manager are mpx's own
/// coordinator-backed objects (mpx/queue.hpp, mpx/sync.hpp): they already work across every process of the session, so
/// the manager process does not relay them.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <mpx/detail/managed_type.hpp>
#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>
#include <mpx/proxy.hpp>
#include <mpx/queue.hpp>
#include <mpx/sync.hpp>

namespace mpx {

// ---- registered types (Python: BaseManager.register(typeid, callable)) ----

/// What BaseManager::register_type returns: chain method<&T::m>("name") calls on it to expose T's methods.
template <class T>
class TypeRegistration {
 public:
  explicit TypeRegistration(std::string name) : name_(std::move(name)) {}  ///< Internal: made by register_type.
  /// Exposes T::method under `name`: .method<&Maths::add>("add"). The member is a template argument so that the call
  /// becomes a plain function, which any process of this build can find by its offset.
  template <auto M>
  TypeRegistration& method(std::string name) {
    using Traits = detail::member_traits<decltype(M)>;
    static_assert(std::is_same_v<typename Traits::Class, T>, "mpx: method<&T::m>: m must be a member of the registered type");
    static_assert(std::is_void_v<typename Traits::Result> || Serializable<typename Traits::Result>,
                  "mpx: a registered method's return type is not serializable");
    detail::register_managed_method(name_, std::move(name),
                                    detail::identify_managed(reinterpret_cast<void (*)()>(&detail::invoke_managed<M>)));
    return *this;
  }

 private:
  std::string name_;
};

class MPX_API ManagerServerHandle;

/// Python's BaseManager(address, authkey). address: empty for an ipc socket in the session directory, or
/// "tcp://host:port" ("tcp://127.0.0.1:*" picks a free port) or "ipc:///path". authkey: when set, every connection must
/// answer an HMAC-SHA256 challenge first (Python's scheme); a wrong key raises mpx::AuthenticationError.
class MPX_API BaseManager {
 public:
  /// A manager at `address` with `authkey`; nothing starts until start(), connect() or get_server(). An empty
  /// authkey raises mpx::ValueError (pass std::nullopt for none).
  explicit BaseManager(std::string address = {}, std::optional<std::string> authkey = std::nullopt);
  virtual ~BaseManager();  ///< shuts down a manager process this object started
  BaseManager(const BaseManager&) = delete;
  BaseManager& operator=(const BaseManager&) = delete;

  /// Registers T under `name` for managers started (or served) after this call, constructed from CtorArgs:
  /// Manager::register_type<Maths>("Maths").method<&Maths::add>("add").method<&Maths::mul>("mul");
  template <class T, class... CtorArgs>
  static TypeRegistration<T> register_type(std::string name) {
    static_assert(std::is_constructible_v<T, CtorArgs...>, "mpx: register_type<T, Args...>: T(Args...) must be valid");
    static_assert((Serializable<std::decay_t<CtorArgs>> && ...), "mpx: register_type: a constructor argument is not serializable");
    detail::register_managed_type(
        name, detail::identify_managed(reinterpret_cast<void (*)()>(&detail::construct_managed<T, CtorArgs...>)),
        detail::identify_managed(reinterpret_cast<void (*)()>(&detail::destroy_managed<T>)));
    return TypeRegistration<T>(std::move(name));
  }

  /// Starts a manager process serving at address(); returns once it is serving.
  void start();
  /// Serves in this process until a shutdown arrives (from shutdown() in a process that connected).
  void serve_forever();
  /// Binds now and returns the server, whose address() is known before serve_forever() (Python: get_server()).
  ManagerServerHandle get_server();
  /// Connects to a manager someone else started or serves: authenticates now (AuthenticationError on a wrong key,
  /// TimeoutError if nothing answers within 10 s).
  void connect();
  /// Stops the manager: a started one is asked to stop and joined (killed if it does not stop within 5 s); a connected
  /// one is asked to stop. Calling it again does nothing.
  void shutdown();

  /// The address proxies use (tcp://127.0.0.1:* resolved to its port once started).
  const std::string& address() const;
  const std::optional<std::string>& authkey() const;  ///< The authkey, if any.
  /// The manager process's pid, when this object started it.
  pid_t pid() const;

  DictProxy dict(const Object& init = Object(Object::Map{}));  ///< Python's manager.dict(init): a new managed dict.
  ListProxy list(const Object& init = Object(Object::Array{}));  ///< Python's manager.list(init): a new managed list.
  NamespaceProxy Namespace();  ///< Python's manager.Namespace(): a new managed namespace.
  /// Python's manager.Value(typecode, init): a new managed value of type T.
  template <Serializable T>
  ValueProxy<T> Value(const T& init) {
    return ValueProxy<T>(adopt, create_object("value", detail::to_object(init)));
  }
  /// Python's manager.Array(typecode, init): a new managed array of T.
  template <Serializable T>
  ArrayProxy<T> Array(const std::vector<T>& init) {
    return ArrayProxy<T>(adopt, create_object("list", detail::to_object(init)));
  }
  /// An instance of a registered type, constructed in the manager process (Python: manager.Maths()).
  template <class... A>
  InstanceProxy create(std::string_view type, A&&... args) {
    return InstanceProxy(adopt, create_instance(type, detail::encode_args(std::forward<A>(args)...)));
  }

  ///@{
  /// The session's coordinator-backed objects (they work in every process of this session).
  template <class T = Object>
  mpx::Queue<T> Queue(std::size_t maxsize = 0) const {
    return mpx::Queue<T>(maxsize);
  }
  template <class T = Object>
  mpx::JoinableQueue<T> JoinableQueue(std::size_t maxsize = 0) const {
    return mpx::JoinableQueue<T>(maxsize);
  }
  mpx::Lock Lock() const { return mpx::Lock(); }
  mpx::RLock RLock() const { return mpx::RLock(); }
  mpx::Semaphore Semaphore(std::int64_t value = 1) const { return mpx::Semaphore(value); }
  mpx::BoundedSemaphore BoundedSemaphore(std::int64_t value = 1) const { return mpx::BoundedSemaphore(value); }
  mpx::Event Event() const { return mpx::Event(); }
  mpx::Condition Condition(const mpx::Lock& lock) const { return mpx::Condition(lock); }
  mpx::Condition Condition(const mpx::RLock& lock) const { return mpx::Condition(lock); }
  ///@}
  mpx::Condition Condition() const { return mpx::Condition(mpx::RLock()); }  ///< Python's default lock is an RLock
  /// Barrier(parties), Barrier(parties, action, timeout), Barrier(parties, action, args...): as mpx::Barrier's.
  template <class... A>
  mpx::Barrier Barrier(std::size_t parties, A&&... args) const {
    return mpx::Barrier(parties, std::forward<A>(args)...);
  }

 private:
  ManagerRef create_object(std::string_view type, const Object& init);
  ManagerRef create_instance(std::string_view type, std::string args);

  struct State;
  std::unique_ptr<State> state_;
};

/// Python's multiprocessing.Manager(): a started manager on an ipc socket of this session.
class MPX_API Manager : public BaseManager {
 public:
  Manager();  ///< Starts the manager process at once, as Python's Manager() does.
};

/// A bound manager server in this process (BaseManager::get_server()).
class MPX_API ManagerServerHandle {
 public:
  /// Takes over the server.
  ManagerServerHandle(ManagerServerHandle&&) noexcept;
  ~ManagerServerHandle();  ///< Closes the server's sockets.
  const std::string& address() const;  ///< The bound address (a tcp port resolved).
  /// Serves until a shutdown request arrives.
  void serve_forever();

 private:
  friend class BaseManager;
  struct Impl;
  explicit ManagerServerHandle(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mpx
