/// \file
/// mpx/proxy.hpp — proxies of a manager's objects (mpx/manager.hpp makes them): DictProxy, ListProxy, NamespaceProxy,
/// ValueProxy, ArrayProxy and InstanceProxy. Each operation is one request to the manager process; a proxy travels as
/// a Process or Pool argument and reaches the same object from there.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <mpx/detail/manager_request.hpp>
#include <mpx/detail/snapshot_iterator.hpp>
#include <mpx/handle.hpp>
#include <mpx/object.hpp>

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

}  // namespace mpx
