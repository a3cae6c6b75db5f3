// The shared memory service: it creates every Value, Array and SharedMemory segment of the session (so it can record
// it, and unlink it when the session ends), and it serves the remote mode: a handle that cannot map its segment (on
// another host, or forced for tests) reads, writes, updates atomically and locks through these requests, on the
// coordinator's own mapping of the same memory. Local handles and remote ones therefore see one another's writes and
// exclude one another through the same lock (shm::Lock).
//
// That lock names its holder's process, and this service recovers it: when the coordinator sees a process die, every
// lock whose word names that pid is marked "owner died" and its waiters are woken, so the next locker gets it and is
// told. The lock belongs to a thread, and the coordinator's thread must never block, so a remote lock is held by an
// agent: a thread of this process that takes the lock for one remote thread, and releases it when told. If the remote
// process dies holding it, its agent gives it up as "owner died" (shm::abandon), exactly as if the remote process had
// held it itself. Recovery by pid cannot do that: the word names this process, whose own threads and other agents
// hold locks too.
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "services/services.hpp"
#include "services/waiters.hpp"
#include "shm/segment.hpp"

namespace mpx::services {

namespace {

constexpr std::uint64_t max_segment_bytes = std::uint64_t{1} << 40;
constexpr std::uint64_t max_transfer_bytes = std::uint64_t{256} << 20;  // one shm_read or shm_write frame
constexpr std::size_t max_agents = 1024;

// A remote lock holder is one thread of one process: its pid and its socket's routing id.
struct Owner {
  std::uint64_t pid = 0;
  std::string routing;
  auto operator<=>(const Owner&) const = default;
};

struct Agent {
  enum class Command { none, release, abandon };
  enum class Result { waiting, acquired, acquired_owner_died, not_acquired };
  std::mutex mutex;
  std::condition_variable changed;
  Command command = Command::none;  // guarded by mutex
  Result result = Result::waiting;  // guarded by mutex
  // Coordinator thread only:
  std::uint64_t segment = 0;
  Owner owner;
  std::uint64_t count = 0;  // recursion levels held for the owner
  bool requester_gone = false;
  std::optional<Waiter> waiter;

  void tell(Command c) {
    {
      std::lock_guard guard(mutex);
      command = c;
    }
    changed.notify_one();
  }
};

struct Record {
  std::string name;
  std::shared_ptr<shm::Mapping> mapping;
  std::size_t offset = 0;  // where the data starts: shm::data_offset for Value/Array, 0 for SharedMemory
  std::size_t size = 0;    // data bytes
  shm::Lock* lock = nullptr;  // in the header of a Value/Array made with a lock
  ino_t inode = 0;
  bool tracked = false;     // unlinked when the session ends
  bool user_named = false;  // listed in the session's manifest (names with the session prefix need no list)
  std::map<Owner, std::shared_ptr<Agent>> agents;
};

// The agent's thread: takes the lock, reports, then holds it until told to release it or to abandon it.
void run_agent(std::shared_ptr<Agent> agent, std::shared_ptr<shm::Mapping> keep, shm::Lock* held,
               std::int64_t wait_ms, std::uint64_t ticket) {
  using R = Agent::Result;
  R result = R::not_acquired;
  try {
    std::optional<std::chrono::steady_clock::time_point> deadline;
    if (wait_ms > 0) deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    switch (shm::lock(held, deadline, wait_ms == 0)) {
      case shm::Locked::yes: result = R::acquired; break;
      case shm::Locked::yes_owner_died: result = R::acquired_owner_died; break;
      case shm::Locked::no: result = R::not_acquired; break;
    }
  } catch (const std::exception&) {
    result = R::not_acquired;
  }
  {
    std::lock_guard guard(agent->mutex);
    agent->result = result;
  }
  try {
    // The coordinator reads the result from `agent`; the message only wakes it (a forged one finds nothing to do).
    runtime::Channel::current().post(
        wire::make(wire::Kind::shm_agent_done, agent->segment, 0, std::make_tuple(ticket)));
  } catch (const std::exception&) {
  }
  if (result == R::not_acquired) return;
  std::unique_lock lock(agent->mutex);
  agent->changed.wait(lock, [&] { return agent->command != Agent::Command::none; });
  if (agent->command == Agent::Command::release) {
    shm::unlock(held);
  } else {
    shm::abandon(held);  // its remote holder died: the next locker is told
  }
  (void)keep;
}

class ShmService final : public Service {
 public:
  explicit ShmService(Host& host) : Service(host) {}

  void install() {
    using K = wire::Kind;
    on(K::shm_create, &ShmService::create);
    on(K::shm_attach, &ShmService::attach);
    on(K::shm_read, &ShmService::read);
    on(K::shm_write, &ShmService::write);
    on(K::shm_atomic, &ShmService::atomic);
    on(K::shm_lock, &ShmService::lock);
    on(K::shm_unlock, &ShmService::unlock);
    on(K::shm_unlink, &ShmService::unlink);
    on(K::shm_agent_done, &ShmService::agent_done);
    on(K::shm_list, &ShmService::list);
    coordinator_.on_death([this](std::uint64_t actor) { died(actor); });
  }

 private:
  Record& find(const wire::Envelope& req) { return Service::find(records_, req, "shared memory segment"); }

  // [offset, length] must lie inside the segment's data.
  static void check_range(const Record& r, std::uint64_t offset, std::uint64_t length) {
    if (length > max_transfer_bytes) throw Refusal{wire::ErrorCode::value, "mpx: at most 256 MiB per shared memory transfer"};
    if (offset > r.size || length > r.size - offset) {
      throw Refusal{wire::ErrorCode::value, "mpx: bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) +
                                                " are outside the segment '" + r.name + "' of " + std::to_string(r.size) +
                                                " bytes"};
    }
  }

  // Users' names are checked like the client does; a bad one is a ValueError, not a malformed message.
  static void check_user_name(const std::string& name) {
    try {
      shm::check_name(name);
    } catch (const ValueError& e) {
      throw Refusal{wire::ErrorCode::value, e.what()};
    }
  }

  std::uint64_t add(Record record) {
    const auto id = coordinator_.allocate_object_id();
    records_.emplace(id, std::move(record));
    return id;
  }

  void create(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [name_or_nil, size, cells, with_lock, track] = req.body_as<std::tuple<Object, std::uint64_t, bool, bool, bool>>();
    if (!name_or_nil.is_none() && name_or_nil.type() != Object::Type::string) {
      throw ProtocolError("mpx: shm_create: the name must be a string or nil");
    }
    if (size > max_segment_bytes) throw Refusal{wire::ErrorCode::value, "mpx: a shared memory segment is at most 1 TiB"};
    if (!cells && size == 0) throw Refusal{wire::ErrorCode::value, "mpx: 'size' must be a positive number different from zero"};
    if (cells && !name_or_nil.is_none()) throw ProtocolError("mpx: shm_create: a Value or Array segment takes no name");
    const bool user_named = !name_or_nil.is_none();
    std::string name;
    if (user_named) {
      name = name_or_nil.as_string();
      check_user_name(name);
    } else if (track) {
      name = shm::session_prefix(runtime::state().session.id) + std::to_string(req.header.sender) + "-" +
             std::to_string(++serial_);
    } else {
      // Not the session's prefix: an untracked segment outlives the session, so the clean-up scans must not see it.
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(shm::random_u64()));
      name = std::string("psm_") + hex;
    }
    shm::Opened opened;
    try {
      opened = shm::create(name, cells ? shm::data_offset + size : size);
    } catch (const FileExistsError& e) {
      throw Refusal{wire::ErrorCode::file_exists, e.what()};
    } catch (const std::system_error& e) {
      throw Refusal{wire::ErrorCode::internal, e.what()};
    }
    Record r;
    r.name = name;
    r.mapping = opened.mapping;
    r.inode = opened.inode;
    r.size = size;
    r.tracked = track;
    r.user_named = user_named;
    std::uint64_t token = 0;
    if (cells) {
      token = shm::random_u64() | 1;  // never 0, which means "no header"
      shm::init_header(*opened.mapping, token, size, with_lock);
      r.offset = shm::data_offset;
      if (with_lock) r.lock = &reinterpret_cast<shm::Header*>(opened.mapping->base())->lock;
    }
    if (track && user_named) shm::manifest_add(runtime::state().session.directory, name, opened.inode);
    const auto id = add(std::move(r));
    ok(peer, req.header, encode(std::make_tuple(id, name, size, token, shm::host_key())));
  }

  void attach(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [name] = req.body_as<std::tuple<std::string>>();
    check_user_name(name);
    for (const auto& [id, r] : records_) {
      if (r.name == name && r.offset == 0) {
        ok(peer, req.header, encode(std::make_tuple(id, static_cast<std::uint64_t>(r.size))));
        return;
      }
    }
    shm::Opened opened;
    try {
      opened = shm::open(name);
    } catch (const FileNotFoundError& e) {
      throw Refusal{wire::ErrorCode::file_not_found, e.what()};
    } catch (const std::system_error& e) {
      throw Refusal{wire::ErrorCode::internal, e.what()};
    }
    Record r;
    r.name = name;
    r.size = opened.mapping->length();
    r.mapping = opened.mapping;
    r.inode = opened.inode;
    const auto size = static_cast<std::uint64_t>(r.size);
    const auto id = add(std::move(r));
    ok(peer, req.header, encode(std::make_tuple(id, size)));
  }

  void read(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto& r = find(req);
    auto [offset, length] = req.body_as<std::tuple<std::uint64_t, std::uint64_t>>();
    check_range(r, offset, length);
    std::string bytes(length, '\0');
    copy(bytes.data(), r.mapping->base() + r.offset + offset, length);
    auto reply = wire::make_reply(req.header, wire::Kind::ok, encode(Object{}));
    reply.body.emplace_back(bytes.data(), bytes.size());
    coordinator_.reply(peer, reply);
  }

  void write(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 2);
    auto& r = find(req);
    auto [offset] = req.body_as<std::tuple<std::uint64_t>>();
    const auto& frame = req.body[1];
    check_range(r, offset, frame.size());
    copy(r.mapping->base() + r.offset + offset, frame.data(), frame.size());
    ok(peer, req.header);
  }

  // A cell of 1, 2, 4 or 8 bytes at an aligned offset is read and written whole, so remote and local readers never
  // see half of a value.
  static void copy(void* to, const void* from, std::size_t n) {
    const bool aligned = (reinterpret_cast<std::uintptr_t>(to) | reinterpret_cast<std::uintptr_t>(from)) % n == 0;
    switch (aligned ? n : 0) {
      case 1: __atomic_store_n(static_cast<std::uint8_t*>(to), __atomic_load_n(static_cast<const std::uint8_t*>(from), __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST); return;
      case 2: __atomic_store_n(static_cast<std::uint16_t*>(to), __atomic_load_n(static_cast<const std::uint16_t*>(from), __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST); return;
      case 4: __atomic_store_n(static_cast<std::uint32_t*>(to), __atomic_load_n(static_cast<const std::uint32_t*>(from), __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST); return;
      case 8: __atomic_store_n(static_cast<std::uint64_t*>(to), __atomic_load_n(static_cast<const std::uint64_t*>(from), __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST); return;
      default: std::memcpy(to, from, n);
    }
  }

  template <class U>
  static std::tuple<std::uint64_t, bool> apply(std::byte* where, std::uint64_t op, std::uint64_t a, std::uint64_t b) {
    auto* cell = reinterpret_cast<U*>(where);
    if (op == 1) return {static_cast<std::uint64_t>(__atomic_fetch_add(cell, static_cast<U>(a), __ATOMIC_SEQ_CST)), true};
    U expected = static_cast<U>(a);
    const bool done = __atomic_compare_exchange_n(cell, &expected, static_cast<U>(b), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return {static_cast<std::uint64_t>(expected), done};
  }

  void atomic(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto& r = find(req);
    auto [op, offset, width, a, b] =
        req.body_as<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t>>();
    if (op != 1 && op != 2) throw ProtocolError("mpx: shm_atomic: op must be 1 (fetch_add) or 2 (compare_exchange)");
    if (width != 1 && width != 2 && width != 4 && width != 8) throw ProtocolError("mpx: shm_atomic: width must be 1, 2, 4 or 8");
    if (offset % width != 0) throw ProtocolError("mpx: shm_atomic: offset must be a multiple of width");
    check_range(r, offset, width);
    std::byte* where = r.mapping->base() + r.offset + offset;
    std::tuple<std::uint64_t, bool> result;
    switch (width) {
      case 1: result = apply<std::uint8_t>(where, op, a, b); break;
      case 2: result = apply<std::uint16_t>(where, op, a, b); break;
      case 4: result = apply<std::uint32_t>(where, op, a, b); break;
      default: result = apply<std::uint64_t>(where, op, a, b); break;
    }
    ok(peer, req.header, encode(result));
  }

  void lock(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto& r = find(req);
    auto [wait_ms] = req.body_as<std::tuple<std::int64_t>>();
    if (r.lock == nullptr) throw Refusal{wire::ErrorCode::value, "mpx: segment '" + r.name + "' has no lock (lock=false)"};
    Owner owner{req.header.sender, peer.routing.to_string()};
    if (auto it = r.agents.find(owner); it != r.agents.end()) {
      auto& agent = *it->second;
      if (agent.count == 0) throw Refusal{wire::ErrorCode::value, "mpx: this thread is already waiting for the lock"};
      ++agent.count;  // the lock is recursive, like Python's RLock, and like a local one
      ok(peer, req.header, encode(std::make_tuple(true, false)));
      return;
    }
    if (tickets_.size() >= max_agents) throw Refusal{wire::ErrorCode::internal, "mpx: too many remote shared-lock waiters"};
    auto agent = std::make_shared<Agent>();
    agent->segment = req.header.object;
    agent->owner = owner;
    agent->waiter = make_waiter(peer, req);
    const auto ticket = ++serial_;
    tickets_.emplace(ticket, agent);
    r.agents.emplace(owner, agent);
    std::thread(run_agent, agent, r.mapping, r.lock, wait_ms, ticket).detach();
  }

  void agent_done(Peer&, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [ticket] = req.body_as<std::tuple<std::uint64_t>>();
    auto it = tickets_.find(ticket);
    if (it == tickets_.end()) throw ProtocolError("mpx: shm_agent_done for no waiting agent");
    auto agent = it->second;
    Agent::Result result;
    {
      std::lock_guard guard(agent->mutex);
      result = agent->result;
    }
    if (result == Agent::Result::waiting) throw ProtocolError("mpx: shm_agent_done before the agent is done");
    tickets_.erase(it);
    const bool acquired = result != Agent::Result::not_acquired;
    auto record = records_.find(agent->segment);
    if (!acquired || agent->requester_gone) {
      if (acquired) agent->tell(Agent::Command::release);  // nobody to give it to
      if (record != records_.end() && !agent->requester_gone) record->second.agents.erase(agent->owner);
      if (!acquired && agent->waiter) answer(coordinator_, *agent->waiter, wire::Kind::ok, encode(std::make_tuple(false, false)));
      return;
    }
    agent->count = 1;
    answer(coordinator_, *agent->waiter, wire::Kind::ok,
           encode(std::make_tuple(true, result == Agent::Result::acquired_owner_died)));
    agent->waiter.reset();
  }

  void unlock(Peer& peer, wire::Envelope& req) {
    auto& r = find(req);
    expect_nil(req);
    Owner owner{req.header.sender, peer.routing.to_string()};
    auto it = r.agents.find(owner);
    if (it == r.agents.end() || it->second->count == 0) {
      throw Refusal{wire::ErrorCode::not_owner, "mpx: cannot release un-acquired lock"};
    }
    if (--it->second->count == 0) {
      it->second->tell(Agent::Command::release);
      r.agents.erase(it);
    }
    ok(peer, req.header);
  }

  void unlink(Peer& peer, wire::Envelope& req) {
    expect_frames(req, 1);
    auto [name] = req.body_as<std::tuple<std::string>>();
    check_user_name(name);
    bool existed = false;
    for (auto& [id, r] : records_) {
      if (r.name != name) continue;
      existed = shm::unlink_if_inode(name, r.inode) || existed;
      if (r.tracked && r.user_named) shm::manifest_remove(runtime::state().session.directory, name);
      r.tracked = false;  // the mapping stays: handles that still use it keep working, as after shm_unlink(3)
    }
    ok(peer, req.header, encode(std::make_tuple(existed)));
  }

  void list(Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    std::vector<std::string> names;
    for (const auto& [id, r] : records_) {
      if (r.tracked) names.push_back(r.name);
    }
    ok(peer, req.header, encode(std::make_tuple(names)));
  }

  void died(std::uint64_t pid) {
    for (auto& [id, r] : records_) {
      // A lock this process held in its own mapping (its word names the pid, even if it died right after taking it).
      if (r.lock) shm::recover(r.lock, static_cast<pid_t>(pid));
      for (auto it = r.agents.begin(); it != r.agents.end();) {
        if (it->first.pid != pid) {
          ++it;
          continue;
        }
        auto& agent = *it->second;
        if (agent.count > 0) {
          agent.tell(Agent::Command::abandon);  // the next locker learns the owner died
        } else {
          agent.requester_gone = true;  // still waiting: released as soon as it gets the lock
          if (agent.waiter) disarm(coordinator_, *agent.waiter);
          agent.waiter.reset();
        }
        it = r.agents.erase(it);
      }
    }
  }

  std::map<std::uint64_t, Record> records_;
  std::map<std::uint64_t, std::shared_ptr<Agent>> tickets_;
  std::uint64_t serial_ = 0;
};

}  // namespace

std::unique_ptr<Service> install_shm(Host& host) { return installed<ShmService>(host); }

}  // namespace mpx::services
