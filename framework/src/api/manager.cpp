// The client side of managers: proxies send one request per operation to the manager's ROUTER through a DEALER
// per thread and endpoint (runtime::Channel), authenticated once per connection when the manager has an authkey.
// BaseManager starts the manager process (an ordinary mpx child, so it dies with its parent through PDEATHSIG) or
// serves in this process.
#include <mpx/manager.hpp>

#include <atomic>
#include <csignal>
#include <mutex>
#include <random>
#include <system_error>
#include <typeinfo>
#include <unordered_map>

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <mpx/pipe.hpp>
#include <mpx/process.hpp>

#include "api/call.hpp"
#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "manager/server.hpp"
#include "manager/stream.hpp"
#include "wire/auth.hpp"
#include "wire/manager_ops.hpp"

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

manager::ManagerConfig config_from(const ManagerSpec& spec) {
  manager::ManagerConfig config;
  config.authkey = spec.authkey;
  for (const auto& t : spec.types) {
    manager::ManagedType type;
    type.construct = resolve_as<manager::ManagedType::Construct>(t.construct);
    type.destroy = resolve_as<manager::ManagedType::Destroy>(t.destroy);
    for (const auto& [name, id] : t.methods) {
      type.methods[name] = resolve_as<manager::ManagedType::Method>(id);
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

// Where a manager started without an address serves, and with which authkey. On one host: an ipc socket in the
// session directory. In a session whose coordinator listens on tcp (many hosts), a free port on the coordinator's
// address, so that proxies passed to processes on other nodes reach it; and, unless an authkey was given, a random
// one that travels with its proxies, as Python's default authkey is the process's own random key.
std::string default_location(std::optional<std::string>& authkey) {
  runtime::require_initialized();
  const auto& endpoint = runtime::state().session.coordinator_endpoint;
  const auto colon = endpoint.rfind(':');
  if (!endpoint.starts_with("tcp://") || colon == std::string::npos || colon < 6) return default_address();
  if (!authkey) {
    std::random_device random;
    static constexpr char hex[] = "0123456789abcdef";
    std::string key;
    for (int i = 0; i < 32; ++i) key += hex[random() % 16];
    authkey = std::move(key);
  }
  return endpoint.substr(0, colon) + ":*";
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


// ---- the direct stream (manager/stream.hpp): this thread's connections ----
using manager::DirectServer;
using manager::direct_address_for;
using manager::FrameReader;
using manager::parse_direct_frame;
using manager::write_frame;

// This thread's direct connections, by (address, authkey); abandoned in a forked child, whose copies of the sockets
// would interleave with the parent's.
struct DirectStream {
  Connection connection;  // owns the socket (and did the handshake)
  FrameReader reader;
};

struct DirectConnections {
  pid_t owner = 0;
  std::unordered_map<std::string, DirectStream*> by_key;
  ~DirectConnections() {
    if (owner != runtime::self_pid()) return;
    for (auto& [key, c] : by_key) delete c;
  }
};
thread_local DirectConnections direct_connections;

// A new stream to the manager. Nobody listening means the manager is gone (shut down, or dead): the EOFError its open
// streams gave, so that every call after the shutdown fails alike, not only the first.
Connection connect_direct(const ManagerRef& ref) {
  try {
    return Client(ref.direct, ref.authkey.empty() ? std::nullopt : std::optional<std::string>(ref.authkey));
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::no_such_file_or_directory && e.code() != std::errc::connection_refused) throw;
    throw EOFError("mpx: the manager at '" + ref.direct + "' is gone (shut down or dead): " + e.code().message());
  }
}

wire::Envelope direct_request(const ManagerRef& ref, wire::Kind kind, std::string_view body) {
  auto& table = direct_connections;
  if (table.owner != runtime::self_pid()) {
    table.by_key = {};
    table.owner = runtime::self_pid();
  }
  const std::string key = ref.direct + '\0' + ref.authkey;
  auto it = table.by_key.find(key);
  if (it == table.by_key.end()) {
    auto stream = std::make_unique<DirectStream>(DirectStream{connect_direct(ref), {}});
    // The manager answers at once; a reply that takes longer means it is stuck: TimeoutError, never a hang.
    const timeval limit{std::chrono::duration_cast<std::chrono::seconds>(reply_timeout).count(), 0};
    ::setsockopt(stream->connection.fileno(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    it = table.by_key.emplace(key, stream.release()).first;
  }
  DirectStream& stream = *it->second;
  const int fd = stream.connection.fileno();
  wire::Header header;
  header.kind = kind;
  header.object = ref.id;
  header.sender = static_cast<std::uint64_t>(runtime::self_pid());
  try {
    write_frame(fd, header, body);
    return parse_direct_frame(stream.reader.next(fd));
  } catch (...) {
    // The stream is out of step or gone: the next request reconnects.
    delete it->second;
    table.by_key.erase(it);
    throw;
  }
}

}  // namespace

namespace detail {

std::string manager_request(const ManagerRef& ref, std::uint16_t kind, std::string body) {
  wire::Envelope reply;
  if (!ref.direct.empty()) {
    reply = direct_request(ref, static_cast<wire::Kind>(kind), body);
    if (reply.header.kind == wire::Kind::error) raise_manager_error(reply);
  } else {
    reply = request(channel_for(ref), envelope(static_cast<wire::Kind>(kind), ref.id, std::move(body)), reply_timeout);
  }
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

namespace {
constexpr std::string_view proxy_token_key = "__mpx_proxy__";
}  // namespace

Object proxy_token(std::string_view type_id, const ManagerRef& ref) {
  return Object::dict({{Object(proxy_token_key), Object(type_id)}, {Object("ref"), to_object(ref)}});
}

ManagerRef proxy_token_ref(const Object& value, std::string_view type_id) {
  const bool token = value.type() == Object::Type::map && value.size() == 2 && value.contains(proxy_token_key) &&
                     value.contains("ref") && value[proxy_token_key].type() == Object::Type::string;
  if (token && value[proxy_token_key].as_string() == type_id) {
    try {
      return from_object<ManagerRef>(value["ref"]);
    } catch (const SerializationError&) {
      // falls through to the TypeError below: a token whose reference is malformed is no token
    }
  }
  std::string holds = token ? "a reference to a managed " + value[proxy_token_key].as_string()
                            : std::string(Object::type_name(value.type())) + " " + value.repr();
  if (holds.size() > 200) holds = holds.substr(0, 200) + "...";
  throw TypeError("mpx: TypeError: expected a reference to a managed " + std::string(type_id) + ", the value holds " +
                  holds);
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

std::pair<Object, Object> DictProxy::popitem() const {
  Object pair = apply(wire::manager_op::popitem);
  auto& kv = pair.as_array();
  return {std::move(kv.at(0)), std::move(kv.at(1))};
}

DictProxy::iterator DictProxy::begin() const {
  return {std::make_shared<const Object::Array>(apply(wire::manager_op::keys).as_array()), 0};
}

void ListProxy::sort(bool reverse) const { apply(wire::manager_op::sort, {Object(reverse)}); }

void ListProxy::reverse() const { apply(wire::manager_op::reverse); }

ListProxy::iterator ListProxy::begin() const {
  return {std::make_shared<const Object::Array>(copy().as_array()), 0};
}

std::string NamespaceProxy::repr() const {
  // Python's Namespace.__repr__ sorts the name=value parts and leaves out the names that start with '_'.
  std::vector<std::string> parts;
  const Object all = copy();
  for (const auto& [name, value] : all.as_map()) {
    if (!name.as_string().starts_with('_')) parts.push_back(name.as_string() + "=" + value.repr());
  }
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
  std::unique_ptr<manager::ManagerServer> server;
  std::unique_ptr<DirectServer> direct;
  try {
    server = std::make_unique<manager::ManagerServer>(runtime::context(), spec.address, config_from(spec));
    direct = std::make_unique<DirectServer>(*server, direct_address_for(server->endpoint()), spec.authkey);
  } catch (const std::exception& e) {
    ready.put(Object::list({false, "mpx: the manager cannot serve at '" + spec.address + "': " + e.what()}));
    return;
  }
  direct->start();
  ready.put(Object::list({true, server->endpoint(), direct->address()}));
  server->serve_forever();
  direct->stop();
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
  std::string direct;  // the manager's direct stream, which proxies use
  bool connected = false;
  bool shut_down = false;

  ManagerRef ref(std::uint64_t id = 0) const { return ManagerRef{id, address, direct, authkey.value_or(std::string())}; }
};

struct ManagerServerHandle::Impl {
  std::unique_ptr<manager::ManagerServer> server;
  std::unique_ptr<DirectServer> direct;
};

ManagerServerHandle::ManagerServerHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ManagerServerHandle::ManagerServerHandle(ManagerServerHandle&&) noexcept = default;
ManagerServerHandle::~ManagerServerHandle() = default;
const std::string& ManagerServerHandle::address() const { return impl_->server->endpoint(); }
void ManagerServerHandle::serve_forever() {
  impl_->direct->start();
  impl_->server->serve_forever();
  impl_->direct->stop();
}

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
  if (state_->address.empty()) state_->address = default_location(state_->authkey);
  ManagerSpec spec = spec_now(state_->address, state_->authkey);
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
  state_->direct = answer[2].as_string();
  state_->process = std::move(process);
  state_->owner = ::getpid();
}

ManagerServerHandle BaseManager::get_server() {
  runtime::require_initialized();
  if (state_->address.empty()) state_->address = default_location(state_->authkey);
  ManagerSpec spec = spec_now(state_->address, state_->authkey);
  auto impl = std::make_unique<ManagerServerHandle::Impl>();
  impl->server = std::make_unique<manager::ManagerServer>(runtime::context(), spec.address, config_from(spec));
  impl->direct = std::make_unique<DirectServer>(*impl->server, direct_address_for(impl->server->endpoint()), spec.authkey);
  state_->address = impl->server->endpoint();
  state_->direct = impl->direct->address();
  return ManagerServerHandle(std::move(impl));
}

void BaseManager::serve_forever() { get_server().serve_forever(); }

void BaseManager::connect() {
  runtime::require_initialized();
  if (state_->address.empty()) throw ValueError("mpx: BaseManager.connect: no address to connect to");
  const ManagerRef ref = state_->ref();
  auto& channel = channel_for(ref);  // authenticates when there is a key
  auto info = request(channel, envelope(wire::Kind::manager_info, 0, encode(Object{})), connect_timeout);
  std::string direct = std::get<0>(info.body_as<std::tuple<std::string>>());
  // A tcp listener reports the host it bound; reach it through the host this process reached the manager by.
  if (direct.starts_with("tcp://") && state_->address.starts_with("tcp://")) {
    direct = state_->address.substr(0, state_->address.rfind(':')) + direct.substr(direct.rfind(':'));
  }
  state_->direct = std::move(direct);
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
