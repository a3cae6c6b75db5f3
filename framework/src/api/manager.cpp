// The client side of managers: proxies send one request per operation to the manager's ROUTER through a DEALER
// per thread and endpoint (runtime::Channel), authenticated once per connection when the manager has an authkey.
// BaseManager starts the manager process (an ordinary mpx child, so it dies with its parent through PDEATHSIG) or
// serves in this process.
#include <mpx/manager.hpp>

#include <atomic>
#include <csignal>
#include <mutex>
#include <typeinfo>
#include <unordered_map>

#include <unistd.h>

#include <mpx/process.hpp>

#include "api/call.hpp"
#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "services/manager.hpp"
#include "wire/auth.hpp"

namespace mpx {

namespace {

// An operation is answered at once (the manager never parks a request), so a missing reply means the manager is
// gone or unreachable: the caller gets TimeoutError instead of a hang.
constexpr auto reply_timeout = std::chrono::seconds(60);
constexpr auto connect_timeout = std::chrono::seconds(10);
constexpr auto start_timeout = std::chrono::seconds(60);
constexpr auto stop_timeout = std::chrono::seconds(5);

struct TypeSpec {
  std::string name;
  FunctionId construct, destroy;
  std::vector<std::pair<std::string, FunctionId>> methods;
  MSGPACK_DEFINE(name, construct, destroy, methods);
};

// What a started manager process needs: where to serve, the key, and the registered types as function identities.
struct ManagerSpec {
  std::string address;
  std::optional<std::string> authkey;
  std::vector<TypeSpec> types;
  MSGPACK_DEFINE(address, authkey, types);
};

struct TypeRegistry {
  std::mutex mutex;
  std::vector<TypeSpec> types;  // in registration order; a name registered again replaces the first
};
TypeRegistry& registry() {
  static TypeRegistry r;
  return r;
}

// A registered function, resolved, back to its real type (through void(*)(), the generic function pointer type).
template <class F>
F resolve_as(const FunctionId& id) {
  return reinterpret_cast<F>(reinterpret_cast<void (*)()>(resolve(id).second));
}

services::ManagerConfig config_from(const ManagerSpec& spec) {
  services::ManagerConfig config;
  config.authkey = spec.authkey;
  for (const auto& t : spec.types) {
    services::ManagedType type;
    type.construct = resolve_as<services::ManagedType::Construct>(t.construct);
    type.destroy = resolve_as<services::ManagedType::Destroy>(t.destroy);
    for (const auto& [name, id] : t.methods) {
      type.methods[name] = resolve_as<services::ManagedType::Method>(id);
    }
    config.types[t.name] = std::move(type);
  }
  return config;
}

std::atomic<int> manager_counter{0};

std::string default_address() {
  runtime::require_initialized();
  return "ipc://" + runtime::state().session.directory + "/manager-" + std::to_string(::getpid()) + "-" +
         std::to_string(++manager_counter);
}

[[noreturn]] void raise_manager_error(const wire::Envelope& reply) {
  auto [code, message] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
  switch (static_cast<wire::ErrorCode>(code)) {
    case wire::ErrorCode::key: throw KeyError(message);
    case wire::ErrorCode::index: throw IndexError(message);
    case wire::ErrorCode::attribute: throw AttributeError(message);
    case wire::ErrorCode::type: throw TypeError(message);
    case wire::ErrorCode::unauthenticated: throw AuthenticationError(message);
    default: detail::raise_error(reply);
  }
}

wire::Envelope envelope(wire::Kind kind, std::uint64_t object, std::string body) {
  wire::Envelope e;
  e.header.kind = kind;
  e.header.object = object;
  e.body.emplace_back(body.data(), body.size());
  return e;
}

wire::Envelope request(runtime::Channel& channel, wire::Envelope e, std::chrono::milliseconds timeout) {
  auto reply = channel.request(std::move(e), timeout);
  if (reply.header.kind == wire::Kind::error) raise_manager_error(reply);
  return reply;
}

// Python's handshake, both ways: we answer the manager's challenge, then it answers ours.
void authenticate(runtime::Channel& channel, const ManagerRef& ref) {
  auto first = request(channel, envelope(wire::Kind::manager_challenge, 0, encode(Object{})), connect_timeout);
  auto [challenge] = first.body_as<std::tuple<Object>>();
  const std::string mine = wire::auth::new_challenge();
  const std::string response = wire::auth::respond(ref.authkey, challenge.as_bytes().data);
  wire::Envelope second;
  try {
    second = request(channel,
                     envelope(wire::Kind::manager_answer, 0,
                              encode(std::make_tuple(Object(Object::Bytes{response}), Object(Object::Bytes{mine})))),
                     connect_timeout);
  } catch (const AuthenticationError&) {
    throw AuthenticationError("mpx: the manager at " + ref.endpoint + " rejected the digest (the authkey differs)");
  }
  auto [proof] = second.body_as<std::tuple<Object>>();
  if (!wire::auth::verify(ref.authkey, mine, proof.as_bytes().data)) {
    throw AuthenticationError("mpx: the manager at " + ref.endpoint + " answered with a wrong digest (the authkey differs)");
  }
}

// This thread's connections to managers, by (endpoint, authkey). A forked child abandons its parent's sockets, as
// runtime::Channel does, because the parent's ZeroMQ context is not its own.
struct ManagerChannels {
  pid_t owner = 0;
  std::unordered_map<std::string, runtime::Channel*> by_key;
  ~ManagerChannels() {
    if (owner != runtime::self_pid()) return;
    for (auto& [key, channel] : by_key) delete channel;
  }
};
thread_local ManagerChannels manager_channels;

runtime::Channel& channel_for(const ManagerRef& ref) {
  auto& table = manager_channels;
  if (table.owner != runtime::self_pid()) {
    table.by_key = {};  // the parent's channels are abandoned, never closed, in a forked child
    table.owner = runtime::self_pid();
  }
  const std::string key = ref.endpoint + '\0' + ref.authkey;
  if (auto it = table.by_key.find(key); it != table.by_key.end()) return *it->second;
  runtime::require_initialized();
  auto channel = std::make_unique<runtime::Channel>(runtime::context(), ref.endpoint);
  if (!ref.authkey.empty()) authenticate(*channel, ref);
  auto* raw = channel.release();
  table.by_key.emplace(key, raw);
  return *raw;
}

}  // namespace

namespace detail {

std::string manager_request(const ManagerRef& ref, std::uint16_t kind, std::string body) {
  auto reply = request(channel_for(ref), envelope(static_cast<wire::Kind>(kind), ref.id, std::move(body)), reply_timeout);
  if (reply.body.empty()) throw ProtocolError("mpx: a manager reply without a body");
  return std::string(static_cast<const char*>(reply.body.front().data()), reply.body.front().size());
}

Object manager_get(const ManagerRef& ref, const Object::Array& path) {
  auto body = manager_request(ref, static_cast<std::uint16_t>(wire::Kind::manager_get), encode(std::make_tuple(path)));
  return std::get<0>(decode<std::tuple<Object>>(body));
}

Object manager_apply(const ManagerRef& ref, const Object::Array& path, std::string_view op, const Object::Array& args) {
  auto body = manager_request(ref, static_cast<std::uint16_t>(wire::Kind::manager_apply),
                              encode(std::make_tuple(path, std::string(op), args)));
  return std::get<0>(decode<std::tuple<Object>>(body));
}

std::string manager_call(const ManagerRef& ref, std::string_view method, std::string args) {
  auto body = manager_request(ref, static_cast<std::uint16_t>(wire::Kind::manager_call),
                              encode(std::make_tuple(std::string(method), Object(Object::Bytes{std::move(args)}))));
  auto [raised, payload] = decode<std::tuple<bool, Object>>(body);
  if (raised) {
    throw RemoteError(payload[0].as_string(), payload[1].as_string(), static_cast<pid_t>(payload[2].as_int()));
  }
  return payload.as_bytes().data;
}

std::string describe_exception(const std::exception& e) {
  return encode(Object::list({demangle(typeid(e).name()), e.what(), static_cast<std::int64_t>(::getpid())}));
}

std::string describe_unknown_exception() {
  return encode(Object::list({"unknown", "an exception not derived from std::exception", static_cast<std::int64_t>(::getpid())}));
}

FunctionId identify_managed(void (*function)()) { return identify(nullptr, reinterpret_cast<Trampoline>(function)); }

void register_managed_type(std::string name, FunctionId construct, FunctionId destroy) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  for (auto& t : r.types) {
    if (t.name == name) {
      t = TypeSpec{std::move(name), std::move(construct), std::move(destroy), {}};
      return;
    }
  }
  r.types.push_back(TypeSpec{std::move(name), std::move(construct), std::move(destroy), {}});
}

void register_managed_method(const std::string& type, std::string method, FunctionId invoke) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  for (auto& t : r.types) {
    if (t.name != type) continue;
    for (auto& [name, id] : t.methods) {
      if (name == method) {
        id = std::move(invoke);
        return;
      }
    }
    t.methods.emplace_back(std::move(method), std::move(invoke));
    return;
  }
  throw ValueError("mpx: register_type: no type named '" + type + "'");
}

}  // namespace detail

void Proxy::release() const {
  (void)detail::manager_request(ref_, static_cast<std::uint16_t>(wire::Kind::manager_release), encode(Object{}));
}

std::string NamespaceProxy::repr() const {
  // Python's Namespace.__repr__ sorts the name=value parts.
  std::vector<std::string> parts;
  const Object all = copy();
  for (const auto& [name, value] : all.as_map()) parts.push_back(name.as_string() + "=" + value.repr());
  std::sort(parts.begin(), parts.end());
  std::string out = "Namespace(";
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return out + ")";
}

namespace {

// The body of a started manager process.
void run_manager_process(ManagerSpec spec, Queue<Object> ready) {
  // As in Python, Ctrl-C in the terminal stops the program, not its manager first: the owner shuts it down.
  ::signal(SIGINT, SIG_IGN);
  std::unique_ptr<services::ManagerServer> server;
  try {
    server = std::make_unique<services::ManagerServer>(runtime::context(), spec.address, config_from(spec));
  } catch (const std::exception& e) {
    ready.put(Object::list({false, "mpx: the manager cannot serve at '" + spec.address + "': " + e.what()}));
    return;
  }
  ready.put(Object::list({true, server->endpoint()}));
  server->serve_forever();
}

ManagerSpec spec_now(std::string address, std::optional<std::string> authkey) {
  ManagerSpec spec{std::move(address), std::move(authkey), {}};
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  spec.types = r.types;
  return spec;
}

}  // namespace

struct BaseManager::State {
  std::string address;
  std::optional<std::string> authkey;
  std::optional<Process> process;
  pid_t owner = 0;  // the process that started or connected this manager object
  bool connected = false;
  bool shut_down = false;

  ManagerRef ref(std::uint64_t id = 0) const { return ManagerRef{id, address, authkey.value_or(std::string())}; }
};

struct ManagerServerHandle::Impl {
  std::unique_ptr<services::ManagerServer> server;
};

ManagerServerHandle::ManagerServerHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ManagerServerHandle::ManagerServerHandle(ManagerServerHandle&&) noexcept = default;
ManagerServerHandle::~ManagerServerHandle() = default;
const std::string& ManagerServerHandle::address() const { return impl_->server->endpoint(); }
void ManagerServerHandle::serve_forever() { impl_->server->serve_forever(); }

BaseManager::BaseManager(std::string address, std::optional<std::string> authkey) : state_(std::make_unique<State>()) {
  if (authkey && authkey->empty()) throw ValueError("mpx: BaseManager: an empty authkey (pass std::nullopt for none)");
  state_->address = std::move(address);
  state_->authkey = std::move(authkey);
}

BaseManager::~BaseManager() {
  if (state_->process && state_->owner == ::getpid() && !state_->shut_down) {
    try {
      shutdown();
    } catch (const std::exception&) {
      // A destructor must not throw; the manager process still dies with this one (PDEATHSIG).
    }
  }
}

void BaseManager::start() {
  runtime::require_initialized();
  if (state_->process || state_->connected) throw ProcessError("mpx: BaseManager.start: the manager is already started");
  ManagerSpec spec = spec_now(state_->address.empty() ? default_address() : state_->address, state_->authkey);
  mpx::Queue<Object> ready;
  ProcessOptions options;
  options.name = "SyncManager-" + std::to_string(++manager_counter);
  options.daemon = true;  // terminated with this process if it is never shut down, as Python's finalizer does
  Process process(options, run_manager_process, spec, ready);
  process.start();
  const auto deadline = std::chrono::steady_clock::now() + start_timeout;
  Object answer;
  for (;;) {
    try {
      answer = ready.get(true, std::chrono::seconds(1));
      break;
    } catch (const Empty&) {
      // The manager may have died before it could answer; look, then wait again.
      if (!process.is_alive()) {
        process.join();
        throw ProcessError("mpx: the manager process exited with code " + std::to_string(process.exitcode().value_or(0)) +
                           " before serving");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        process.kill();
        process.join();
        throw TimeoutError("mpx: the manager process did not start serving within 60 s");
      }
    }
  }
  if (!answer[0].as_bool()) {
    process.join();
    throw ValueError(answer[1].as_string());
  }
  state_->address = answer[1].as_string();
  state_->process = std::move(process);
  state_->owner = ::getpid();
}

ManagerServerHandle BaseManager::get_server() {
  runtime::require_initialized();
  ManagerSpec spec = spec_now(state_->address.empty() ? default_address() : state_->address, state_->authkey);
  auto impl = std::make_unique<ManagerServerHandle::Impl>();
  impl->server = std::make_unique<services::ManagerServer>(runtime::context(), spec.address, config_from(spec));
  state_->address = impl->server->endpoint();
  return ManagerServerHandle(std::move(impl));
}

void BaseManager::serve_forever() { get_server().serve_forever(); }

void BaseManager::connect() {
  runtime::require_initialized();
  if (state_->address.empty()) throw ValueError("mpx: BaseManager.connect: no address to connect to");
  const ManagerRef ref = state_->ref();
  auto& channel = channel_for(ref);  // authenticates when there is a key
  if (ref.authkey.empty()) {
    (void)channel.request(wire::make(wire::Kind::ping, 0, 0, Object{}), connect_timeout);
  }
  state_->connected = true;
  state_->owner = ::getpid();
}

void BaseManager::shutdown() {
  if (state_->shut_down || (!state_->process && !state_->connected)) return;
  state_->shut_down = true;
  try {
    channel_for(state_->ref()).post(envelope(wire::Kind::manager_shutdown, 0, encode(Object{})));
  } catch (const std::exception&) {
    // Unreachable manager: a started one is stopped below all the same.
  }
  if (state_->process && state_->owner == ::getpid()) {
    if (!state_->process->join(stop_timeout)) {
      state_->process->kill();
      state_->process->join();
    }
  }
}

const std::string& BaseManager::address() const { return state_->address; }
const std::optional<std::string>& BaseManager::authkey() const { return state_->authkey; }
pid_t BaseManager::pid() const { return state_->process ? state_->process->pid() : 0; }

ManagerRef BaseManager::create_object(std::string_view type, const Object& init) {
  if (!state_->process && !state_->connected) {
    throw ProcessError("mpx: the manager is neither started nor connected (call start() or connect() first)");
  }
  if (state_->shut_down) throw ProcessError("mpx: the manager has been shut down");
  auto body = detail::manager_request(state_->ref(), static_cast<std::uint16_t>(wire::Kind::manager_create),
                                      encode(std::make_tuple(std::string(type), init)));
  auto [id, raised] = decode<std::tuple<std::uint64_t, Object>>(body);
  if (!raised.is_none()) {
    throw RemoteError(raised[0].as_string(), raised[1].as_string(), static_cast<pid_t>(raised[2].as_int()));
  }
  return state_->ref(id);
}

ManagerRef BaseManager::create_instance(std::string_view type, std::string args) {
  if (type == "dict" || type == "list" || type == "namespace" || type == "value") {
    throw ValueError("mpx: BaseManager.create: '" + std::string(type) + "' is a built-in type; use " + std::string(type) + "()");
  }
  return create_object(type, Object(Object::Bytes{std::move(args)}));
}

DictProxy BaseManager::dict(const Object& init) { return DictProxy(adopt, create_object("dict", init)); }
ListProxy BaseManager::list(const Object& init) { return ListProxy(adopt, create_object("list", init)); }
NamespaceProxy BaseManager::Namespace() { return NamespaceProxy(adopt, create_object("namespace", Object(Object::Map{}))); }

Manager::Manager() { start(); }

}  // namespace mpx
