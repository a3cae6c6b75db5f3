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

#include <mpx/detail/snapshot_iterator.hpp>
#include <mpx/errors.hpp>
#include <mpx/function.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>
#include <mpx/queue.hpp>
#include <mpx/sync.hpp>

namespace mpx {

/// Where a managed object lives: its id on the manager, the manager's ZeroMQ endpoint, the address of its direct stream
/// (what proxies use: one blocking socket round trip per operation; empty: use the endpoint), and the authkey that
/// manager wants (empty: none). Like Python's proxies (when a process is spawned), the authkey travels with the proxy.
struct ManagerRef {
  std::uint64_t id = 0;  ///< the object's id on the manager
  std::string endpoint;  ///< the manager's ZeroMQ endpoint
  std::string direct;  ///< the manager's direct stream address; empty: use the endpoint
  std::string authkey;  ///< the key the manager wants; empty: none
  MSGPACK_DEFINE(id, endpoint, direct, authkey);
};

/// Operations that run on the manager, on the value found at a path (update_in) or on the proxy's object itself.
namespace op {
/// One operation for Proxy::update_in: its name and arguments, made by the functions of mpx::op.
struct Op {
  std::string name;  ///< the operation's name, as the manager knows it
  Object::Array args;  ///< its arguments
};
inline Op assign(Object value) { return {"assign", {std::move(value)}}; }        ///< replace the value
inline Op add(Object amount) { return {"add", {std::move(amount)}}; }            ///< +=: numbers, strings, lists
inline Op append(Object item) { return {"append", {std::move(item)}}; }          ///< list.append
inline Op extend(Object::Array items) { return {"extend", {Object(std::move(items))}}; }  ///< list.extend(items)
/// list.insert(index, item)
inline Op insert(std::int64_t index, Object item) { return {"insert", {Object(index), std::move(item)}}; }
inline Op set(Object key, Object value) { return {"set", {std::move(key), std::move(value)}}; }  ///< map[key] = value
inline Op del(Object key) { return {"del", {std::move(key)}}; }                  ///< del map[key]
inline Op update(Object mapping) { return {"update", {std::move(mapping)}}; }    ///< dict.update
inline Op pop() { return {"pop", {}}; }                                          ///< list.pop()
inline Op clear() { return {"clear", {}}; }  ///< list.clear() or dict.clear()
}  // namespace op

namespace detail {

// Any serializable value as an Object and back (through its msgpack form).
template <Serializable T>
Object to_object(const T& value) {
  if constexpr (std::is_same_v<std::remove_cvref_t<T>, Object>) {
    return value;
  } else {
    return decode<Object>(encode(value));
  }
}
template <Serializable T>
T from_object(const Object& value) {
  if constexpr (std::is_same_v<T, Object>) {
    return value;
  } else {
    return decode<T>(encode(value));
  }
}

// How an argument travels: as its decayed type, except that a string literal travels as a std::string.
template <class A>
using arg_t = std::conditional_t<std::is_same_v<std::decay_t<A>, const char*> || std::is_same_v<std::decay_t<A>, char*>,
                                 std::string, std::decay_t<A>>;

template <class... A>
std::string encode_args(A&&... args) {
  static_assert((Serializable<arg_t<A>> && ...), "mpx: a manager call's argument is not serializable");
  return encode(std::tuple<arg_t<A>...>(std::forward<A>(args)...));
}

// One request to the manager at ref.endpoint; returns the ok reply's body. Error replies raise KeyError, IndexError,
// AttributeError, TypeError, ValueError, AuthenticationError or ProtocolError.
MPX_API std::string manager_request(const ManagerRef& ref, std::uint16_t kind, std::string body);
MPX_API Object manager_get(const ManagerRef& ref, const Object::Array& path);
MPX_API Object manager_apply(const ManagerRef& ref, const Object::Array& path, std::string_view op, const Object::Array& args);
// Calls a registered method: returns its encoded result, or throws RemoteError.
MPX_API std::string manager_call(const ManagerRef& ref, std::string_view method, std::string args);

// A reference to a managed object of proxy type `type_id`, as a value another managed object can hold:
// {"__mpx_proxy__": type_id, "ref": [id, endpoint, direct, authkey]}.
MPX_API Object proxy_token(std::string_view type_id, const ManagerRef& ref);
// The reference a token holds; mpx::TypeError naming what `value` holds if it is no token of `type_id`.
MPX_API ManagerRef proxy_token_ref(const Object& value, std::string_view type_id);

}  // namespace detail

/// What every proxy has: the reference, reads and in-place updates at a path, and release.
/// Proxies travel as Process and Pool arguments through handle.hpp's adaptors (ref() and the adopt constructor).
class MPX_API Proxy {
 public:
  const ManagerRef& ref() const noexcept { return ref_; }  ///< The reference that identifies the object in any process.
  std::uint64_t id() const noexcept { return ref_.id; }  ///< The object's id on the manager.

  /// A copy of the value at `path` ({} for the whole object): keys of maps, indices of lists (negative from the end).
  Object get_in(const Object::Array& path) const { return detail::manager_get(ref_, path); }
  /// Runs `operation` on the manager, on the value at `path`, in place; returns its result (the new value for add).
  Object update_in(const Object::Array& path, const op::Op& operation) const {
    return detail::manager_apply(ref_, path, operation.name, operation.args);
  }
  /// Appends to the list at `path`: the fix for Python's `ns.x.append(1)` pitfall.
  void append_in(const Object::Array& path, Object item) const { update_in(path, op::append(std::move(item))); }
  /// The whole value, copied (Python: dict(d), list(l)).
  Object copy() const { return get_in({}); }
  /// Destroys the object on the manager. Python frees it when the last proxy is garbage collected; mpx keeps it until
  /// release() or the manager's shutdown, since a proxy copy may be on its way to another process.
  void release() const;

 protected:
  /// An empty proxy, for subclasses.
  Proxy() = default;
  explicit Proxy(ManagerRef ref) : ref_(std::move(ref)) {}  ///< A proxy of the object `ref`.
  /// Runs `operation` (a manager operation name) on the object itself and returns its result.
  Object apply(std::string_view operation, Object::Array args = {}) const {
    return detail::manager_apply(ref_, {}, operation, args);
  }
  ManagerRef ref_;  ///< The object this proxy names.
};

/// Nested proxies, as in Python (3.6+): a proxy stored in a managed dict, list or namespace stays a live reference to
/// its object, not a copy. reference(proxy) is the value that stands for it (set(key, proxy) stores it for you);
/// proxy_from<P>(value) rebuilds the proxy from it (get_proxy<P>(key) does both). The referenced object lives until its
/// release(), as every managed object does.
template <std::derived_from<Proxy> P>
Object reference(const P& proxy) {
  return detail::proxy_token(P::type_id, proxy.ref());
}
/// The proxy a reference() value stands for; mpx::TypeError if `value` is not a reference to a P's object.
template <std::derived_from<Proxy> P>
P proxy_from(const Object& value) {
  return P(adopt, detail::proxy_token_ref(value, P::type_id));
}

/// Python's DictProxy: keys and values are Objects (any msgpack value); a missing key raises mpx::KeyError naming it.
class MPX_API DictProxy : public Proxy {
 public:
  static constexpr std::string_view type_id = "dict";  ///< The manager's name of the type.
  /// A proxy of the existing dict `ref` (what a decoded argument is).
  DictProxy(adopt_t, ManagerRef ref) : Proxy(std::move(ref)) {}
  /// d[key] = proxy: stores a live reference to the proxy's object (nested proxies).
  template <std::derived_from<Proxy> P>
  void set(const Object& key, const P& proxy) const {
    set(key, reference(proxy));
  }
  /// The proxy stored at d[key]; mpx::TypeError if the value there is not a reference to a P's object.
  template <std::derived_from<Proxy> P>
  P get_proxy(const Object& key) const {
    return proxy_from<P>(get(key));
  }

  Object get(const Object& key) const { return get_in({key}); }  ///< d[key]
  /// d.get(key, fallback)
  Object get(const Object& key, const Object& fallback) const { return apply("get", {key, fallback}); }
  void set(const Object& key, const Object& value) const { apply("set", {key, value}); }  ///< d[key] = value
  void del(const Object& key) const { apply("del", {key}); }  ///< del d[key]; mpx::KeyError if missing
  bool contains(const Object& key) const { return apply("contains", {key}).as_bool(); }  ///< key in d
  Object::Array keys() const { return apply("keys").as_array(); }  ///< list(d.keys()), in insertion order
  Object::Array values() const { return apply("values").as_array(); }  ///< list(d.values()), in insertion order
  Object::Array items() const { return apply("items").as_array(); }  ///< [key, value] pairs, in insertion order
  std::size_t size() const { return static_cast<std::size_t>(apply("len").as_int()); }  ///< len(d)
  void update(const Object& mapping) const { apply("update", {mapping}); }  ///< d.update(mapping)
  Object pop(const Object& key) const { return apply("pop", {key}); }  ///< d.pop(key); mpx::KeyError if missing
  /// d.pop(key, fallback)
  Object pop(const Object& key, const Object& fallback) const { return apply("pop", {key, fallback}); }
  /// d.setdefault(key, fallback): d[key], after storing `fallback` there if the key was missing.
  Object setdefault(const Object& key, const Object& fallback = Object{}) const {
    return apply("setdefault", {key, fallback});
  }
  void clear() const { apply("clear"); }  ///< d.clear()
  /// Python's d.popitem(): removes and returns the last inserted (key, value); KeyError when the dict is empty.
  std::pair<Object, Object> popitem() const;
  /// for (const Object& key : d): the keys, from one copy taken when the loop begins.
  using iterator = detail::SnapshotIterator<Object>;
  iterator begin() const;  ///< Fetches the copy the loop walks.
  iterator end() const { return {}; }  ///< The end of the copy.
};

/// Python's ListProxy; a bad index raises mpx::IndexError, a missing value mpx::ValueError.
class MPX_API ListProxy : public Proxy {
 public:
  static constexpr std::string_view type_id = "list";  ///< The manager's name of the type.
  /// A proxy of the existing list `ref` (what a decoded argument is).
  ListProxy(adopt_t, ManagerRef ref) : Proxy(std::move(ref)) {}
  /// l[index] = proxy, l.append(proxy): live references to the proxies' objects (nested proxies).
  template <std::derived_from<Proxy> P>
  void set(std::int64_t index, const P& proxy) const {
    set(index, reference(proxy));
  }
  /// l.append(proxy): appends a live reference to the proxy's object.
  template <std::derived_from<Proxy> P>
  void append(const P& proxy) const {
    append(reference(proxy));
  }
  /// The proxy stored at l[index]; mpx::TypeError if the value there is not a reference to a P's object.
  template <std::derived_from<Proxy> P>
  P get_proxy(std::int64_t index) const {
    return proxy_from<P>(get(index));
  }

  /// l[index] (negative from the end); mpx::IndexError outside
  Object get(std::int64_t index) const { return get_in({Object(index)}); }
  /// l[index] = value
  void set(std::int64_t index, const Object& value) const { apply("setitem", {Object(index), value}); }
  void del(std::int64_t index) const { apply("delitem", {Object(index)}); }  ///< del l[index]
  void append(const Object& value) const { apply("append", {value}); }  ///< l.append(value)
  void extend(const Object::Array& values) const { apply("extend", {Object(values)}); }  ///< l.extend(values)
  /// l.insert(index, value)
  void insert(std::int64_t index, const Object& value) const { apply("insert", {Object(index), value}); }
  Object pop() const { return apply("pop"); }  ///< l.pop(); mpx::IndexError if empty
  Object pop(std::int64_t index) const { return apply("pop", {Object(index)}); }  ///< l.pop(index)
  /// l.index(value); mpx::ValueError if missing
  std::int64_t index(const Object& value) const { return apply("index", {value}).as_int(); }
  std::int64_t count(const Object& value) const { return apply("count", {value}).as_int(); }  ///< l.count(value)
  void remove(const Object& value) const { apply("remove", {value}); }  ///< l.remove(value); mpx::ValueError if missing
  bool contains(const Object& value) const { return apply("contains", {value}).as_bool(); }  ///< value in l
  std::size_t size() const { return static_cast<std::size_t>(apply("len").as_int()); }  ///< len(l)
  void clear() const { apply("clear"); }  ///< l.clear()
  /// Python's l.sort(reverse=...): numbers, strings, bytes and lists in Python's order (stable); TypeError, with the
  /// list unchanged, when two items cannot be compared. (No key function: the sort runs in the manager process.)
  void sort(bool reverse = false) const;
  void reverse() const;  ///< l.reverse(): in place
  /// for (const Object& item : l): from one copy taken when the loop begins (one request, not one per item).
  using iterator = detail::SnapshotIterator<Object>;
  iterator begin() const;  ///< Fetches the copy the loop walks.
  iterator end() const { return {}; }  ///< The end of the copy.
  /// l[start:stop:step], with Python's clamping and negative indices; nullopt is an omitted bound.
  Object::Array slice(std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                      std::optional<std::int64_t> step = std::nullopt) const {
    return apply("slice", {bound(start), bound(stop), bound(step)}).as_array();
  }
  /// l[start:stop:step] = values, as in Python.
  void set_slice(std::optional<std::int64_t> start, std::optional<std::int64_t> stop, const Object::Array& values,
                 std::optional<std::int64_t> step = std::nullopt) const {
    apply("set_slice", {bound(start), bound(stop), bound(step), Object(values)});
  }
  /// del l[start:stop:step]
  void del_slice(std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                 std::optional<std::int64_t> step = std::nullopt) const {
    apply("del_slice", {bound(start), bound(stop), bound(step)});
  }

 private:
  static Object bound(std::optional<std::int64_t> v) { return v ? Object(*v) : Object{}; }
};

/// Python's Namespace: attributes by name; a missing one raises mpx::AttributeError.
class MPX_API NamespaceProxy : public Proxy {
 public:
  static constexpr std::string_view type_id = "Namespace";  ///< The manager's name of the type.
  NamespaceProxy(adopt_t, ManagerRef ref) : Proxy(std::move(ref)) {}  ///< A proxy of the existing namespace `ref`.
  /// ns.name = proxy: a live reference to the proxy's object (nested proxies).
  template <std::derived_from<Proxy> P>
  void set(std::string_view name, const P& proxy) const {
    set(name, reference(proxy));
  }
  /// The proxy stored at ns.name; mpx::TypeError if the value there is not a reference to a P's object.
  template <std::derived_from<Proxy> P>
  P get_proxy(std::string_view name) const {
    return proxy_from<P>(get(name));
  }

  Object get(std::string_view name) const { return get_in({Object(name)}); }  ///< ns.name
  /// ns.name = value
  void set(std::string_view name, const Object& value) const { apply("set", {Object(name), value}); }
  /// del ns.name; mpx::AttributeError if missing
  void del(std::string_view name) const { apply("del", {Object(name)}); }
  bool has(std::string_view name) const { return apply("contains", {Object(name)}).as_bool(); }  ///< hasattr
  /// Namespace(x=10, y='hello'), as Python prints it.
  std::string repr() const;
};

/// Python's manager.Value(typecode, value): one value of type T held by the manager.
template <Serializable T>
class ValueProxy : public Proxy {
 public:
  static constexpr std::string_view type_id = "Value";  ///< The manager's name of the type.
  ValueProxy(adopt_t, ManagerRef ref) : Proxy(std::move(ref)) {}  ///< A proxy of the existing value `ref`.
  T value() const { return detail::from_object<T>(get_in({})); }  ///< v.value
  void set(const T& v) const { apply("assign", {detail::to_object(v)}); }  ///< v.value = v
  /// value += amount on the manager, atomically; returns the new value (Python's `v.value += 1` is two requests).
  T add(const T& amount) const { return detail::from_object<T>(apply("add", {detail::to_object(amount)})); }
};

/// Python's manager.Array(typecode, sequence): a fixed-type list held by the manager.
template <Serializable T>
class ArrayProxy : public Proxy {
 public:
  static constexpr std::string_view type_id = "Array";  ///< The manager's name of the type.
  ArrayProxy(adopt_t, ManagerRef ref) : Proxy(std::move(ref)) {}  ///< A proxy of the existing array `ref`.
  std::size_t size() const { return static_cast<std::size_t>(apply("len").as_int()); }  ///< len(a)
  /// a[index]; mpx::IndexError outside
  T get(std::int64_t index) const { return detail::from_object<T>(get_in({Object(index)})); }
  /// a[index] = v
  void set(std::int64_t index, const T& v) const { apply("setitem", {Object(index), detail::to_object(v)}); }
  std::vector<T> to_vector() const { return detail::from_object<std::vector<T>>(get_in({})); }  ///< a[:], copied
};

/// An instance of a registered type living in the manager process. call() runs a method there; an exception it throws
/// comes back as mpx::RemoteError (type, message, the manager's pid).
class InstanceProxy : public Proxy {
 public:
  static constexpr std::string_view type_id = "instance";  ///< The manager's name of the kind.
  InstanceProxy(adopt_t, ManagerRef ref) : Proxy(std::move(ref)) {}  ///< A proxy of the existing instance `ref`.

  /// Runs the registered method `method` with `args` in the manager process and decodes its result as R.
  template <class R = Object, class... A>
  R call(std::string_view method, A&&... args) const {
    static_assert(std::is_void_v<R> || Serializable<R>, "mpx: InstanceProxy::call: the result type is not serializable");
    std::string result = detail::manager_call(ref_, method, detail::encode_args(std::forward<A>(args)...));
    if constexpr (!std::is_void_v<R>) return decode<R>(result);
  }
};

// ---- registered types (Python: BaseManager.register(typeid, callable)) ----

namespace detail {

using ManagedConstruct = void* (*)(std::string_view args, std::string& error);
using ManagedDestroy = void (*)(void* self);
using ManagedMethod = bool (*)(void* self, std::string_view args, std::string& result);

// msgpack [type, message, pid] of an exception thrown by the user's code in the manager process.
MPX_API std::string describe_exception(const std::exception& e);
MPX_API std::string describe_unknown_exception();

template <class T, class... A>
void* construct_managed(std::string_view args, std::string& error) {
  try {
    auto params = decode<std::tuple<std::decay_t<A>...>>(args);
    return std::apply([](auto&&... a) { return static_cast<void*>(new T(std::forward<decltype(a)>(a)...)); },
                      std::move(params));
  } catch (const std::exception& e) {
    error = describe_exception(e);
  } catch (...) {
    error = describe_unknown_exception();
  }
  return nullptr;
}

template <class T>
void destroy_managed(void* self) {
  delete static_cast<T*>(self);
}

template <class M>
struct member_traits;
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...)> {
  using Class = C;
  using Result = R;
  using Params = std::tuple<std::decay_t<P>...>;
};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) const> : member_traits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) noexcept> : member_traits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) const noexcept> : member_traits<R (C::*)(P...)> {};

// The method as a plain function: that is what gives it an identity (build-id + offset) in every process.
template <auto M>
bool invoke_managed(void* self, std::string_view args, std::string& result) {
  using Traits = member_traits<decltype(M)>;
  using R = typename Traits::Result;
  try {
    auto params = decode<typename Traits::Params>(args);
    auto* object = static_cast<typename Traits::Class*>(self);
    auto call = [object](auto&&... a) -> decltype(auto) { return (object->*M)(std::forward<decltype(a)>(a)...); };
    if constexpr (std::is_void_v<R>) {
      std::apply(call, std::move(params));
      result = encode(Object{});
    } else {
      result = encode(std::apply(call, std::move(params)));
    }
    return true;
  } catch (const std::exception& e) {
    result = describe_exception(e);
  } catch (...) {
    result = describe_unknown_exception();
  }
  return false;
}

MPX_API FunctionId identify_managed(void (*function)());
MPX_API void register_managed_type(std::string name, FunctionId construct, FunctionId destroy);
MPX_API void register_managed_method(const std::string& type, std::string method, FunctionId invoke);

}  // namespace detail

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
