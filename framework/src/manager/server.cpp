// The Manager's server: every managed value is an mpx::Object held here, and every operation on it
// (including on containers nested inside it) runs here, in one request. That is what fixes Python's nested-mutable
// pitfall: `ns.x.append(1)` on a proxy in Python mutates a copy; here `append_in({"x"}, 1)` mutates the list in place.
//
// Every handler decodes and checks its whole request before it changes anything, so a malformed or failing request is
// answered with an error and leaves no trace.
#include "manager/server.hpp"

#include <algorithm>
#include <unordered_set>

#include <unistd.h>

#include "wire/auth.hpp"
#include "wire/limits.hpp"
#include "wire/manager_ops.hpp"

namespace mpx::manager {

namespace {

namespace manager_op = wire::manager_op;

using wire::ErrorCode;
using Peer = runtime::Coordinator::Peer;
using Reply = std::optional<wire::Envelope>;

// An answer the user is meant to see (KeyError and the like): an error reply, not a malformed message.
struct Fault {
  ErrorCode code;
  std::string message;
};

[[noreturn]] void fault(ErrorCode code, std::string message) { throw Fault{code, std::move(message)}; }

enum class Shape { dict, list, namespace_, value, instance };

struct Managed {
  Shape shape = Shape::value;
  Object value;  // dict, list, namespace, value
  void* instance = nullptr;
  const ManagedType* type = nullptr;
  std::string type_name;

  Managed() = default;
  Managed(const Managed&) = delete;
  Managed& operator=(const Managed&) = delete;
  ~Managed() {
    if (instance) type->destroy(instance);
  }
};

std::string path_repr(const Object::Array& path, std::size_t upto) {
  std::string out = "[";
  for (std::size_t i = 0; i < upto && i < path.size(); ++i) out += (i ? ", " : "") + path[i].repr();
  return out + "]";
}

Object* find_key(Object::Map& map, const Object& key) {
  for (auto& [k, v] : map) {
    if (k == key) return &v;
  }
  return nullptr;
}

// Python's index normalization: a negative index counts from the end. Throws IndexError when out of range.
std::size_t normalize_index(const Object& index, std::size_t size, std::string_view what) {
  if (index.type() != Object::Type::integer) {
    fault(ErrorCode::type, "mpx: TypeError: " + std::string(what) + " indices must be integers, not " +
                               Object::type_name(index.type()));
  }
  std::int64_t i = index.as_int();
  const auto n = static_cast<std::int64_t>(size);
  if (i < 0) i += n;
  if (i < 0 || i >= n) {
    fault(ErrorCode::index, "mpx: IndexError: " + std::string(what) + " index " + std::to_string(index.as_int()) +
                                " out of range (size " + std::to_string(size) + ")");
  }
  return static_cast<std::size_t>(i);
}

// The value at `path` inside `root`. The first step of a Namespace names an attribute.
Object& locate(Object& root, const Object::Array& path, bool namespace_root) {
  Object* current = &root;
  for (std::size_t i = 0; i < path.size(); ++i) {
    const Object& step = path[i];
    switch (current->type()) {
      case Object::Type::map: {
        Object* next = find_key(current->as_map(), step);
        if (!next) {
          if (i == 0 && namespace_root) {
            fault(ErrorCode::attribute, "mpx: AttributeError: 'Namespace' object has no attribute " + step.repr());
          }
          fault(ErrorCode::key, "mpx: KeyError: " + step.repr() + (i ? " (at path " + path_repr(path, i) + ")" : ""));
        }
        current = next;
        break;
      }
      case Object::Type::array:
        current = &current->as_array()[normalize_index(step, current->as_array().size(), "list")];
        break;
      default:
        fault(ErrorCode::type, "mpx: TypeError: the value at path " + path_repr(path, i) + " is " +
                                   Object::type_name(current->type()) + ", which has no items to index by " +
                                   step.repr());
    }
  }
  return *current;
}

void arity(const Object::Array& args, std::size_t min, std::size_t max, std::string_view op) {
  if (args.size() < min || args.size() > max) {
    throw ProtocolError("mpx: manager op '" + std::string(op) + "' takes " + std::to_string(min) +
                        (max != min ? ".." + std::to_string(max) : "") + " arguments, got " +
                        std::to_string(args.size()));
  }
}

[[noreturn]] void wrong_type(std::string_view op, const Object& target) {
  fault(ErrorCode::type, "mpx: TypeError: '" + std::string(op) + "' cannot apply to " +
                             Object::type_name(target.type()) + " " + target.repr());
}

// Python's slice.indices(): clamps start and stop to the sequence and returns (start, stop, step, count).
struct Slice {
  std::int64_t start, stop, step, count;
};

Slice slice_indices(const Object& start_o, const Object& stop_o, const Object& step_o, std::size_t size) {
  auto as_opt_int = [](const Object& o, std::string_view what) -> std::optional<std::int64_t> {
    if (o.is_none()) return std::nullopt;
    if (o.type() != Object::Type::integer) {
      fault(ErrorCode::type, "mpx: TypeError: slice " + std::string(what) + " must be an integer or None, not " +
                                 Object::type_name(o.type()));
    }
    return o.as_int();
  };
  const auto n = static_cast<std::int64_t>(size);
  const std::int64_t step = as_opt_int(step_o, "step").value_or(1);
  if (step == 0) fault(ErrorCode::value, "mpx: ValueError: slice step cannot be zero");
  const std::int64_t lower = step > 0 ? 0 : -1, upper = step > 0 ? n : n - 1;
  auto clamp = [&](std::optional<std::int64_t> v, std::int64_t fallback) {
    if (!v) return fallback;
    std::int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < lower) x = lower;
    } else if (x > upper) {
      x = upper;
    }
    return x;
  };
  Slice s{clamp(as_opt_int(start_o, "start"), step > 0 ? lower : upper),
          clamp(as_opt_int(stop_o, "stop"), step > 0 ? upper : lower), step, 0};
  if (step > 0 && s.start < s.stop) s.count = (s.stop - s.start - 1) / step + 1;
  if (step < 0 && s.start > s.stop) s.count = (s.start - s.stop - 1) / (-step) + 1;
  return s;
}

Object::Map pairs_of(const Object& mapping) {
  if (mapping.type() == Object::Type::map) return mapping.as_map();
  if (mapping.type() != Object::Type::array) wrong_type("update", mapping);
  Object::Map out;
  for (const auto& item : mapping.as_array()) {
    if (item.type() != Object::Type::array || item.size() != 2) {
      fault(ErrorCode::type, "mpx: TypeError: update needs a map or a list of [key, value] pairs, got " + item.repr());
    }
    out.emplace_back(item.as_array()[0], item.as_array()[1]);
  }
  return out;
}

Object add(const Object& a, const Object& b) {
  using T = Object::Type;
  if (a.type() == T::integer && b.type() == T::integer) return Object(a.as_int() + b.as_int());
  const bool numeric_a = a.type() == T::integer || a.type() == T::floating || a.type() == T::unsigned_integer;
  const bool numeric_b = b.type() == T::integer || b.type() == T::floating || b.type() == T::unsigned_integer;
  auto as_double = [](const Object& o) {
    return o.type() == T::floating ? o.as_double()
                                   : o.type() == T::integer ? static_cast<double>(o.as_int()) : static_cast<double>(o.as_uint());
  };
  if (numeric_a && numeric_b) {
    if (a.type() == T::floating || b.type() == T::floating) return Object(as_double(a) + as_double(b));
    return Object(a.as_uint() + b.as_uint());  // at least one unsigned beyond int64
  }
  if (a.type() == T::string && b.type() == T::string) return Object(a.as_string() + b.as_string());
  if (a.type() == T::array && b.type() == T::array) {
    Object::Array out = a.as_array();
    out.insert(out.end(), b.as_array().begin(), b.as_array().end());
    return Object(std::move(out));
  }
  fault(ErrorCode::type, std::string("mpx: TypeError: cannot add ") + Object::type_name(b.type()) + " to " +
                             Object::type_name(a.type()));
}

// Python's `a < b` for the values sort orders: numbers with numbers, strings, bytes, arrays element by element;
// TypeError for anything else, as Python's "'<' not supported between instances of ...".
bool python_less(const Object& a, const Object& b) {
  using T = Object::Type;
  auto numeric = [](const Object& o) {
    return o.type() == T::integer || o.type() == T::unsigned_integer || o.type() == T::floating || o.type() == T::boolean;
  };
  if (numeric(a) && numeric(b)) {
    if (a.type() == T::integer && b.type() == T::integer) return a.as_int() < b.as_int();
    auto as_double = [](const Object& o) {
      switch (o.type()) {
        case T::floating: return o.as_double();
        case T::integer: return static_cast<double>(o.as_int());
        case T::boolean: return o.as_bool() ? 1.0 : 0.0;
        default: return static_cast<double>(o.as_uint());
      }
    };
    return as_double(a) < as_double(b);
  }
  if (a.type() == b.type()) {
    if (a.type() == T::string) return a.as_string() < b.as_string();
    if (a.type() == T::bytes) return a.as_bytes().data < b.as_bytes().data;
    if (a.type() == T::array) {
      const auto& x = a.as_array();
      const auto& y = b.as_array();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (x[i] == y[i]) continue;
        return python_less(x[i], y[i]);
      }
      return x.size() < y.size();
    }
  }
  fault(ErrorCode::type, std::string("mpx: TypeError: '<' not supported between ") + Object::type_name(a.type()) +
                             " and " + Object::type_name(b.type()));
}

// ---- The ops of manager_apply, as a table: (op, the type it applies to) -> its argument count and its code --------

using Args = Object::Array;

// On any value.
Object op_assign(Object& target, const Args& args) {
  target = args[0];
  return {};
}
Object op_add(Object& target, const Args& args) {
  target = add(target, args[0]);
  return target;
}
Object op_len(Object& target, const Args&) {
  using T = Object::Type;
  if (target.type() != T::map && target.type() != T::array && target.type() != T::string && target.type() != T::bytes) {
    wrong_type(manager_op::len, target);
  }
  return Object(static_cast<std::int64_t>(target.size()));
}

// On maps.
Object map_get(Object& target, const Args& args) {
  if (Object* v = find_key(target.as_map(), args[0])) return *v;
  if (args.size() == 2) return args[1];
  fault(ErrorCode::key, "mpx: KeyError: " + args[0].repr());
}
Object map_set(Object& target, const Args& args) {
  auto& map = target.as_map();
  if (Object* v = find_key(map, args[0])) {
    *v = args[1];
  } else {
    map.emplace_back(args[0], args[1]);
  }
  return {};
}
// del and pop: pop returns the value, or its default when the key is missing.
Object map_remove(Object& target, const Args& args, bool pop) {
  auto& map = target.as_map();
  auto it = std::find_if(map.begin(), map.end(), [&](const auto& kv) { return kv.first == args[0]; });
  if (it == map.end()) {
    if (args.size() == 2) return args[1];
    fault(ErrorCode::key, "mpx: KeyError: " + args[0].repr());
  }
  Object value = std::move(it->second);
  map.erase(it);
  return pop ? value : Object{};
}
Object map_del(Object& target, const Args& args) { return map_remove(target, args, false); }
Object map_pop(Object& target, const Args& args) { return map_remove(target, args, true); }
Object map_popitem(Object& target, const Args&) {
  auto& map = target.as_map();
  // Python's dict.popitem: the last inserted pair.
  if (map.empty()) fault(ErrorCode::key, "mpx: KeyError: 'popitem(): dictionary is empty'");
  Object pair = Object::list({std::move(map.back().first), std::move(map.back().second)});
  map.pop_back();
  return pair;
}
Object map_setdefault(Object& target, const Args& args) {
  auto& map = target.as_map();
  if (Object* v = find_key(map, args[0])) return *v;
  map.emplace_back(args[0], args.size() == 2 ? args[1] : Object{});
  return map.back().second;
}
Object map_update(Object& target, const Args& args) {
  auto& map = target.as_map();
  for (auto& [k, v] : pairs_of(args[0])) {
    if (Object* old = find_key(map, k)) {
      *old = std::move(v);
    } else {
      map.emplace_back(std::move(k), std::move(v));
    }
  }
  return {};
}
Object map_contains(Object& target, const Args& args) { return Object(find_key(target.as_map(), args[0]) != nullptr); }
// keys, values, items: one element of each pair, or both.
template <int part>
Object map_view(Object& target, const Args&) {
  Object::Array out;
  out.reserve(target.as_map().size());
  for (const auto& [k, v] : target.as_map()) {
    if constexpr (part == 0) out.push_back(k);
    else if constexpr (part == 1) out.push_back(v);
    else out.push_back(Object::list({k, v}));
  }
  return Object(std::move(out));
}
Object map_clear(Object& target, const Args&) {
  target.as_map().clear();
  return {};
}

// On arrays.
Object list_append(Object& target, const Args& args) {
  target.as_array().push_back(args[0]);
  return {};
}
Object list_extend(Object& target, const Args& args) {
  if (args[0].type() != Object::Type::array) wrong_type(manager_op::extend, args[0]);
  auto& list = target.as_array();
  list.insert(list.end(), args[0].as_array().begin(), args[0].as_array().end());
  return {};
}
Object list_insert(Object& target, const Args& args) {
  if (args[0].type() != Object::Type::integer) wrong_type(manager_op::insert, args[0]);
  auto& list = target.as_array();
  // Python clamps an insert position instead of failing.
  const auto n = static_cast<std::int64_t>(list.size());
  std::int64_t i = args[0].as_int();
  if (i < 0) i = std::max<std::int64_t>(0, i + n);
  i = std::min(i, n);
  list.insert(list.begin() + i, args[1]);
  return {};
}
Object list_pop(Object& target, const Args& args) {
  auto& list = target.as_array();
  if (list.empty()) fault(ErrorCode::index, "mpx: IndexError: pop from empty list");
  const std::size_t i = args.empty() ? list.size() - 1 : normalize_index(args[0], list.size(), "pop");
  Object value = std::move(list[i]);
  list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
  return value;
}
Object list_getitem(Object& target, const Args& args) {
  auto& list = target.as_array();
  return list[normalize_index(args[0], list.size(), "list")];
}
Object list_setitem(Object& target, const Args& args) {
  auto& list = target.as_array();
  list[normalize_index(args[0], list.size(), "list assignment")] = args[1];
  return {};
}
Object list_delitem(Object& target, const Args& args) {
  auto& list = target.as_array();
  list.erase(list.begin() + static_cast<std::ptrdiff_t>(normalize_index(args[0], list.size(), "list assignment")));
  return {};
}
// index and remove: both find the first equal element.
Object::Array::iterator list_find(Object& target, const Args& args) {
  auto& list = target.as_array();
  auto it = std::find(list.begin(), list.end(), args[0]);
  if (it == list.end()) fault(ErrorCode::value, "mpx: ValueError: " + args[0].repr() + " is not in list");
  return it;
}
Object list_index(Object& target, const Args& args) {
  return Object(static_cast<std::int64_t>(list_find(target, args) - target.as_array().begin()));
}
Object list_remove(Object& target, const Args& args) {
  target.as_array().erase(list_find(target, args));
  return {};
}
Object list_count(Object& target, const Args& args) {
  auto& list = target.as_array();
  return Object(static_cast<std::int64_t>(std::count(list.begin(), list.end(), args[0])));
}
Object list_contains(Object& target, const Args& args) {
  auto& list = target.as_array();
  return Object(std::find(list.begin(), list.end(), args[0]) != list.end());
}
Object list_clear(Object& target, const Args&) {
  target.as_array().clear();
  return {};
}
Object list_reverse(Object& target, const Args&) {
  auto& list = target.as_array();
  std::reverse(list.begin(), list.end());
  return {};
}
Object list_sort(Object& target, const Args& args) {
  using T = Object::Type;
  const bool descending = !args.empty() && args[0].type() == T::boolean && args[0].as_bool();
  if (!args.empty() && args[0].type() != T::boolean && args[0].type() != T::none) wrong_type(manager_op::sort, args[0]);
  // Sorted on a copy: a TypeError half way leaves the list as it was. Stable both ways, as Python's.
  Object::Array sorted = target.as_array();
  std::stable_sort(sorted.begin(), sorted.end(), [descending](const Object& a, const Object& b) {
    return descending ? python_less(b, a) : python_less(a, b);
  });
  target.as_array() = std::move(sorted);
  return {};
}
Object list_slice(Object& target, const Args& args) {
  auto& list = target.as_array();
  const Slice s = slice_indices(args[0], args[1], args[2], list.size());
  Object::Array out;
  out.reserve(static_cast<std::size_t>(s.count));
  for (std::int64_t k = 0, i = s.start; k < s.count; ++k, i += s.step) out.push_back(list[static_cast<std::size_t>(i)]);
  return Object(std::move(out));
}
Object list_set_slice(Object& target, const Args& args) {
  auto& list = target.as_array();
  const Slice s = slice_indices(args[0], args[1], args[2], list.size());
  if (args[3].type() != Object::Type::array) wrong_type(manager_op::set_slice, args[3]);
  const auto& items = args[3].as_array();
  if (s.step == 1) {
    const auto first = list.begin() + s.start;
    list.erase(first, list.begin() + std::max(s.start, s.stop));
    list.insert(list.begin() + s.start, items.begin(), items.end());
    return {};
  }
  if (static_cast<std::int64_t>(items.size()) != s.count) {
    fault(ErrorCode::value, "mpx: ValueError: attempt to assign sequence of size " + std::to_string(items.size()) +
                                " to extended slice of size " + std::to_string(s.count));
  }
  for (std::int64_t k = 0, i = s.start; k < s.count; ++k, i += s.step) {
    list[static_cast<std::size_t>(i)] = items[static_cast<std::size_t>(k)];
  }
  return {};
}
Object list_del_slice(Object& target, const Args& args) {
  auto& list = target.as_array();
  const Slice s = slice_indices(args[0], args[1], args[2], list.size());
  std::vector<bool> doomed(list.size(), false);
  for (std::int64_t k = 0, i = s.start; k < s.count; ++k, i += s.step) doomed[static_cast<std::size_t>(i)] = true;
  std::size_t w = 0;
  for (std::size_t r = 0; r < list.size(); ++r) {
    if (!doomed[r]) list[w++] = std::move(list[r]);
  }
  list.resize(w);
  return {};
}

enum class Target { any, map, array };

struct Op {
  std::string_view name;  // one of wire/manager_ops.hpp's
  Target on;
  std::size_t min_args, max_args;
  Object (*run)(Object& target, const Args& args);
};

// An op on any value is found before one for the target's type; an op both maps and arrays have has a row for each.
constexpr Op ops[] = {
    {manager_op::assign, Target::any, 1, 1, op_assign},
    {manager_op::add, Target::any, 1, 1, op_add},
    {manager_op::len, Target::any, 0, 0, op_len},
    {manager_op::get, Target::map, 1, 2, map_get},
    {manager_op::set, Target::map, 2, 2, map_set},
    {manager_op::del, Target::map, 1, 1, map_del},
    {manager_op::pop, Target::map, 1, 2, map_pop},
    {manager_op::popitem, Target::map, 0, 0, map_popitem},
    {manager_op::setdefault, Target::map, 1, 2, map_setdefault},
    {manager_op::update, Target::map, 1, 1, map_update},
    {manager_op::contains, Target::map, 1, 1, map_contains},
    {manager_op::keys, Target::map, 0, 0, map_view<0>},
    {manager_op::values, Target::map, 0, 0, map_view<1>},
    {manager_op::items, Target::map, 0, 0, map_view<2>},
    {manager_op::clear, Target::map, 0, 0, map_clear},
    {manager_op::append, Target::array, 1, 1, list_append},
    {manager_op::extend, Target::array, 1, 1, list_extend},
    {manager_op::insert, Target::array, 2, 2, list_insert},
    {manager_op::pop, Target::array, 0, 1, list_pop},
    {manager_op::getitem, Target::array, 1, 1, list_getitem},
    {manager_op::setitem, Target::array, 2, 2, list_setitem},
    {manager_op::delitem, Target::array, 1, 1, list_delitem},
    {manager_op::index, Target::array, 1, 1, list_index},
    {manager_op::remove, Target::array, 1, 1, list_remove},
    {manager_op::count, Target::array, 1, 1, list_count},
    {manager_op::contains, Target::array, 1, 1, list_contains},
    {manager_op::clear, Target::array, 0, 0, list_clear},
    {manager_op::reverse, Target::array, 0, 0, list_reverse},
    {manager_op::sort, Target::array, 0, 1, list_sort},
    {manager_op::slice, Target::array, 3, 3, list_slice},
    {manager_op::set_slice, Target::array, 4, 4, list_set_slice},
    {manager_op::del_slice, Target::array, 3, 3, list_del_slice},
};

// Every op the wire names has a row: wire/manager_ops.hpp stays the one list.
constexpr bool every_op_has_a_row() {
  for (auto name : manager_op::all) {
    if (std::none_of(std::begin(ops), std::end(ops), [name](const Op& op) { return op.name == name; })) return false;
  }
  return std::size(manager_op::all) > 0;
}
static_assert(every_op_has_a_row(), "an op of wire/manager_ops.hpp has no row in the manager's table");

// Runs one operation on `target` (the value found at the request's path) and returns its result.
Object apply_op(Object& target, std::string_view op, const Object::Array& args) {
  const Target on = target.type() == Object::Type::map     ? Target::map
                    : target.type() == Object::Type::array ? Target::array
                                                           : Target::any;
  for (const Op& row : ops) {
    if (row.name != op || (row.on != Target::any && row.on != on)) continue;
    arity(args, row.min_args, row.max_args, op);
    return row.run(target, args);
  }
  if (!manager_op::known(op)) throw ProtocolError("mpx: unknown manager op '" + std::string(op) + "'");
  wrong_type(op, target);
}

}  // namespace

struct ManagerServer::Objects {
  ManagerConfig config;
  std::unordered_map<std::uint64_t, std::unique_ptr<Managed>> table;
  // Peers (routing ids) that answered the challenge, and the challenge each one is answering: bounded in count, and
  // each forgotten after a handshake's time (PROTOCOL.md, "Bounds"), so silent connections cannot pile them up.
  struct PendingChallenge {
    std::string challenge;
    runtime::TimerWheel::Id expiry = 0;
  };
  std::unordered_set<std::string> authenticated;
  std::unordered_map<std::string, PendingChallenge> challenges;
  std::string direct;  // the stream address clients should use for requests (manager_info)

  static std::string peer_key(const Peer& peer) {
    return std::string(static_cast<const char*>(peer.routing.data()), peer.routing.size());
  }

  Managed& find(const wire::Header& h) {
    auto it = table.find(h.object);
    if (it == table.end()) {
      fault(ErrorCode::unknown_object,
            "mpx: the manager has no object " + std::to_string(h.object) + " (released, or from another manager)");
    }
    return *it->second;
  }
};

ManagerServer::ManagerServer(zmq::context_t& context, std::string endpoint, ManagerConfig config)
    : objects_(std::make_unique<Objects>()), coordinator_(context, std::move(endpoint)) {
  objects_->config = std::move(config);
  // The handlers capture `this`: the coordinator (and with it every handler) stops before the objects go.
  auto ok = [](const wire::Header& h, const auto& body) -> std::optional<wire::Envelope> {
    return wire::make_reply(h, wire::Kind::ok, encode(body));
  };
  auto nil_body = [](const wire::Envelope& request) {
    if (!request.body_as<Object>().is_none()) {
      throw ProtocolError("mpx: '" + std::string(wire::kind_name(request.header.kind)) + "' takes a nil body");
    }
  };

  // Every manager kind goes through here: the authentication gate, then the handler under the state's mutex (direct
  // streams run handlers on their own threads); a Fault becomes its error reply. ProtocolError and SerializationError
  // pass through to the coordinator, which counts them as malformed.
  auto serve = [this](wire::Kind kind, Body body) {
    bodies_[static_cast<std::uint16_t>(kind)] = body;
    coordinator_.handle(kind, [this, kind, body = std::move(body)](Peer& peer, wire::Envelope& request) {
      Objects& o = *objects_;
      const std::string key = Objects::peer_key(peer);
      const bool open = kind == wire::Kind::manager_challenge || kind == wire::Kind::manager_answer;
      std::optional<wire::Envelope> reply;
      {
        std::lock_guard lock(state_mutex_);
        if (o.config.authkey && !open && !o.authenticated.count(key)) {
          reply = wire::make_error(request.header, ErrorCode::unauthenticated,
                                   "mpx: AuthenticationError: this connection has not answered the manager's challenge");
        } else {
          reply = run(body, key, request, false);
        }
      }
      if (reply) coordinator_.reply(peer, *reply);
    });
  };

  serve(wire::Kind::manager_challenge, [this, ok, nil_body](const std::string& peer, wire::Envelope& request) -> Reply {
    nil_body(request);
    Objects& o = *objects_;
    const auto& bounds = wire::store_bounds;
    if (!o.challenges.count(peer) && o.challenges.size() >= bounds.pending_challenges) {
      throw ProtocolError("mpx: refused: the manager has " + std::to_string(bounds.pending_challenges) +
                          " unanswered challenges (the bound); each expires " +
                          std::to_string(bounds.challenge_lifetime_ms) + " ms after it was sent");
    }
    std::string challenge = wire::auth::new_challenge();
    auto& pending = o.challenges[peer];
    auto& timers = coordinator_.timers();
    if (pending.expiry != 0) timers.cancel(pending.expiry);
    pending.challenge = challenge;
    pending.expiry = timers.schedule(
        runtime::TimerWheel::Clock::now() + std::chrono::milliseconds(bounds.challenge_lifetime_ms), [this, peer] {
          std::lock_guard lock(state_mutex_);
          objects_->challenges.erase(peer);
        });
    return ok(request.header, std::make_tuple(Object(Object::Bytes{std::move(challenge)})));
  });

  serve(wire::Kind::manager_answer, [this, ok](const std::string& peer, wire::Envelope& request) -> Reply {
    Objects& o = *objects_;
    auto [response_o, counter_o] = request.body_as<std::tuple<Object, Object>>();
    const auto& response = response_o.as_bytes();
    const auto& counter = counter_o.as_bytes();
    const std::string& key = peer;
    auto it = o.challenges.find(key);
    if (it == o.challenges.end()) fault(ErrorCode::unauthenticated, "mpx: AuthenticationError: no challenge was asked for");
    const std::string challenge = std::move(it->second.challenge);
    coordinator_.timers().cancel(it->second.expiry);
    o.challenges.erase(it);
    if (!o.config.authkey) {
      fault(ErrorCode::unauthenticated, "mpx: AuthenticationError: this manager has no authkey");
    }
    if (!wire::auth::verify(*o.config.authkey, challenge, response.data)) {
      fault(ErrorCode::unauthenticated, "mpx: AuthenticationError: digest received was wrong (the authkey differs)");
    }
    std::string proof;
    try {
      proof = wire::auth::respond(*o.config.authkey, counter.data);
    } catch (const AuthenticationError& e) {
      fault(ErrorCode::unauthenticated, e.what());
    }
    o.authenticated.insert(key);
    return ok(request.header, std::make_tuple(Object(Object::Bytes{std::move(proof)})));
  });

  serve(wire::Kind::manager_create, [this, ok](const std::string&, wire::Envelope& request) -> Reply {
    Objects& o = *objects_;
    auto [type, init] = request.body_as<std::tuple<std::string, Object>>();
    auto m = std::make_unique<Managed>();
    Object error;
    if (type == "dict" || type == "namespace") {
      if (init.is_none()) init = Object(Object::Map{});
      if (init.type() != Object::Type::map) wrong_type("create " + type, init);
      if (type == "namespace") {
        for (const auto& [k, v] : init.as_map()) {
          if (k.type() != Object::Type::string) {
            fault(ErrorCode::type, "mpx: TypeError: a Namespace attribute name must be a string, not " + k.repr());
          }
        }
      }
      m->shape = type == "dict" ? Shape::dict : Shape::namespace_;
      m->value = std::move(init);
    } else if (type == "list") {
      if (init.is_none()) init = Object(Object::Array{});
      if (init.type() != Object::Type::array) wrong_type("create list", init);
      m->shape = Shape::list;
      m->value = std::move(init);
    } else if (type == "value") {
      m->shape = Shape::value;
      m->value = std::move(init);
    } else {
      auto t = o.config.types.find(type);
      if (t == o.config.types.end()) {
        fault(ErrorCode::value, "mpx: ValueError: no type '" + type + "' is registered with this manager");
      }
      if (init.type() != Object::Type::bytes) throw ProtocolError("mpx: manager_create of a registered type needs bin args");
      std::string raised;
      void* instance = t->second.construct(init.as_bytes().data, raised);
      if (!instance) {
        return ok(request.header, std::make_tuple(std::uint64_t{0}, decode<Object>(raised)));
      }
      m->shape = Shape::instance;
      m->instance = instance;
      m->type = &t->second;
      m->type_name = type;
    }
    const std::uint64_t id = coordinator_.allocate_object_id();
    o.table.emplace(id, std::move(m));
    return ok(request.header, std::make_tuple(id, error));
  });

  serve(wire::Kind::manager_get, [this, ok](const std::string&, wire::Envelope& request) -> Reply {
    Objects& o = *objects_;
    auto [path] = request.body_as<std::tuple<Object::Array>>();
    Managed& m = o.find(request.header);
    if (m.shape == Shape::instance) wrong_type("get", Object(m.type_name));
    return ok(request.header, std::make_tuple(locate(m.value, path, m.shape == Shape::namespace_)));
  });

  serve(wire::Kind::manager_apply, [this, ok](const std::string&, wire::Envelope& request) -> Reply {
    Objects& o = *objects_;
    auto [path, op, args] = request.body_as<std::tuple<Object::Array, std::string, Object::Array>>();
    Managed& m = o.find(request.header);
    if (m.shape == Shape::instance) wrong_type(op, Object(m.type_name));
    if (m.shape == Shape::namespace_ && path.empty() && (op == manager_op::set || op == manager_op::setdefault) && !args.empty() &&
        args[0].type() != Object::Type::string) {
      fault(ErrorCode::type, "mpx: TypeError: a Namespace attribute name must be a string, not " + args[0].repr());
    }
    Object& target = locate(m.value, path, m.shape == Shape::namespace_);
    if (m.shape == Shape::namespace_ && path.empty() && (op == manager_op::get || op == manager_op::del) && !args.empty() &&
        !find_key(target.as_map(), args[0]) && !(op == manager_op::get && args.size() == 2)) {
      fault(ErrorCode::attribute, "mpx: AttributeError: 'Namespace' object has no attribute " + args[0].repr());
    }
    return ok(request.header, std::make_tuple(apply_op(target, op, args)));
  });

  serve(wire::Kind::manager_call, [this](const std::string&, wire::Envelope& request) -> Reply {
    Objects& o = *objects_;
    auto [method, args] = request.body_as<std::tuple<std::string, Object>>();
    if (args.type() != Object::Type::bytes) throw ProtocolError("mpx: manager_call needs its arguments as bin");
    Managed& m = o.find(request.header);
    if (m.shape != Shape::instance) fault(ErrorCode::type, "mpx: TypeError: object is not an instance of a registered type");
    auto it = m.type->methods.find(method);
    if (it == m.type->methods.end()) {
      fault(ErrorCode::attribute, "mpx: AttributeError: '" + m.type_name + "' exposes no method '" + method + "'");
    }
    std::string result;
    const bool returned = it->second(m.instance, args.as_bytes().data, result);
    // The result travels as bin, so the caller decodes it straight into its return type.
    std::string body = returned ? encode(std::make_tuple(false, Object(Object::Bytes{std::move(result)})))
                                : encode(std::make_tuple(true, decode<Object>(result)));
    return wire::make_reply(request.header, wire::Kind::ok, std::move(body));
  });

  serve(wire::Kind::manager_release, [this, ok, nil_body](const std::string&, wire::Envelope& request) -> Reply {
    nil_body(request);
    Objects& o = *objects_;
    (void)o.find(request.header);
    o.table.erase(request.header.object);
    return ok(request.header, Object{});
  });

  serve(wire::Kind::manager_info, [this, ok, nil_body](const std::string&, wire::Envelope& request) -> Reply {
    nil_body(request);
    return ok(request.header, std::make_tuple(objects_->direct));
  });

  serve(wire::Kind::manager_shutdown, [this, nil_body](const std::string&, wire::Envelope& request) -> Reply {
    nil_body(request);
    stop();
    return std::nullopt;
  });
}

std::optional<wire::Envelope> ManagerServer::run(const Body& body, const std::string& peer, wire::Envelope& request,
                                                 bool count_malformed) {
  try {
    return body(peer, request);
  } catch (const Fault& f) {
    return wire::make_error(request.header, f.code, f.message);
  } catch (const ProtocolError& e) {
    if (!count_malformed) throw;
    malformed_direct_.fetch_add(1, std::memory_order_relaxed);
    return wire::make_error(request.header, ErrorCode::malformed, e.what());
  } catch (const SerializationError& e) {
    if (!count_malformed) throw;
    malformed_direct_.fetch_add(1, std::memory_order_relaxed);
    return wire::make_error(request.header, ErrorCode::malformed, e.what());
  } catch (const std::exception& e) {
    return wire::make_error(request.header, ErrorCode::internal, std::string("mpx: manager: ") + e.what());
  }
}

std::optional<wire::Envelope> ManagerServer::execute(wire::Envelope& request) {
  auto it = bodies_.find(static_cast<std::uint16_t>(request.header.kind));
  if (it == bodies_.end() || request.header.kind == wire::Kind::manager_challenge ||
      request.header.kind == wire::Kind::manager_answer) {
    malformed_direct_.fetch_add(1, std::memory_order_relaxed);
    return wire::make_error(request.header, ErrorCode::unsupported,
                            "mpx: a manager stream does not serve '" + std::string(wire::kind_name(request.header.kind)) +
                                "' requests");
  }
  std::lock_guard lock(state_mutex_);
  return run(it->second, std::string(), request, true);
}

void ManagerServer::set_direct_address(std::string address) {
  std::lock_guard lock(state_mutex_);
  objects_->direct = std::move(address);
}

ManagerServer::~ManagerServer() {
  coordinator_.stop();
  objects_.reset();  // destroys the instances of registered types in this process
}

void ManagerServer::serve_forever() {
  coordinator_.start();
  {
    std::unique_lock lock(mutex_);
    stopped_cv_.wait(lock, [this] { return stopped_; });
  }
  coordinator_.stop();
}

void ManagerServer::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  stopped_cv_.notify_all();
}

}  // namespace mpx::manager
