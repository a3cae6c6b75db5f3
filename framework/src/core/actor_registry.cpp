// Named functions: what a topology file's `task = "name"` and a foreign client refer to.
#include <mpx/function.hpp>

#include <map>
#include <mutex>
#include <stdexcept>

namespace mpx {

namespace {
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::pair<ErasedFunction, Trampoline>, std::less<>> functions;
};
Registry& registry() {
  static auto* instance = new Registry;  // leaked: registrations may come from static initializers of any order
  return *instance;
}
}  // namespace

void register_actor_call(std::string name, ErasedFunction function, Trampoline trampoline) {
  if (name.empty()) throw std::invalid_argument("mpx::register_actor: the name is empty");
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  r.functions[std::move(name)] = {function, trampoline};
}

bool is_registered_actor(std::string_view name) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  return r.functions.find(name) != r.functions.end();
}

std::vector<std::string> registered_actors() {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, entry] : r.functions) names.push_back(name);
  return names;
}

BoundCall bind_registered(std::string_view name, const Object& args) {
  if (args.type() != Object::Type::array) {
    throw std::invalid_argument("mpx::bind_registered: the arguments of '" + std::string(name) +
                                "' must be a list (Object::list), not " + Object::type_name(args.type()));
  }
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.functions.find(name);
  if (it == r.functions.end()) {
    throw std::invalid_argument("mpx: no actor function is registered as '" + std::string(name) + "'");
  }
  BoundCall call;
  call.function = it->second.first;
  call.trampoline = it->second.second;
  call.args = encode(args);
  return call;
}

}  // namespace mpx
