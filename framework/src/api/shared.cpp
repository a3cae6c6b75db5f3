// The compiled side of mpx/shared.hpp: creating segments through the shm service (services/shm.cpp), mapping them by
// name when a handle arrives, the lock, and the remote mode, where every access is a coordinator request.
#include <mpx/shared.hpp>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "api/call.hpp"
#include "runtime/channel.hpp"
#include "runtime/runtime.hpp"
#include "shm/segment.hpp"

namespace mpx {

namespace detail {

namespace {

// Beyond the coordinator's own deadline, how long a caller waits before deciding the coordinator is gone.
constexpr std::int64_t grace_ms = 30000;

// Like detail::call, plus the two errors only this service sends (FileExistsError and FileNotFoundError).
wire::Envelope request(wire::Envelope message, std::int64_t wait = 0) {
  const auto local = wait < 0 ? std::optional<std::chrono::milliseconds>()
                              : std::optional<std::chrono::milliseconds>(wait + grace_ms);
  auto reply = runtime::Channel::current().request(std::move(message), local);
  if (reply.header.kind == wire::Kind::error) {
    auto [code, text] = reply.body_as<std::tuple<std::uint16_t, std::string>>();
    if (code == static_cast<std::uint16_t>(wire::ErrorCode::file_exists)) throw FileExistsError(text);
    if (code == static_cast<std::uint16_t>(wire::ErrorCode::file_not_found)) throw FileNotFoundError(text);
    raise_error(reply);
  }
  return reply;
}

std::shared_ptr<Segment> remote_segment(SegmentRef ref) {
  if (ref.id == 0) {
    // A block attached by name was never recorded: the coordinator maps it now, so that it can serve us.
    auto reply = request(wire::make(wire::Kind::shm_attach, 0, 0, std::make_tuple(ref.name)));
    auto [id, size] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t>>();
    ref.id = id;
    ref.size = size;
  }
  return std::make_shared<Segment>(std::move(ref), nullptr, nullptr, nullptr);
}

// A mapped lock is recovered by the coordinator when it sees its holder's process die, and it sees that only for a
// process it watches (runtime::ensure_known). `visible_pid` keeps that check off the lock's hot path: one load.
std::atomic<std::uint32_t> visible_pid{0};

[[gnu::noinline]] void make_death_visible_now() {
  runtime::ensure_known();
  visible_pid.store(shm::self().pid, std::memory_order_release);
}

void make_death_visible() {
  if (visible_pid.load(std::memory_order_acquire) != shm::self().pid) make_death_visible_now();
}

int result_of(shm::Locked locked) {
  switch (locked) {
    case shm::Locked::yes: return 1;
    case shm::Locked::yes_owner_died: return 2;
    case shm::Locked::no: return 0;
  }
  return 0;
}

// The lock in a mapped segment: no messages at all (except make_death_visible's once per process).
int lock_mapped(void* lock, bool block, const Timeout& timeout) {
  make_death_visible();
  if (block && !timeout) return result_of(shm::lock(static_cast<shm::Lock*>(lock), std::nullopt, false));
  std::optional<std::chrono::steady_clock::time_point> deadline;
  bool try_only = !block;
  if (block && timeout) {
    if (timeout->count() <= 0) {
      try_only = true;
    } else {
      deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout);
    }
  }
  return result_of(shm::lock(static_cast<shm::Lock*>(lock), deadline, try_only));
}

inline void unlock_mapped(void* lock) {
  if (!shm::unlock(static_cast<shm::Lock*>(lock))) throw ValueError("mpx: cannot release un-acquired lock");
}

SegmentRef ref_from_create(const wire::Envelope& reply, bool lock, std::string type) {
  auto [id, name, size, token, host] =
      reply.body_as<std::tuple<std::uint64_t, std::string, std::uint64_t, std::uint64_t, std::string>>();
  return SegmentRef{id, coordinator_endpoint(), std::move(name), size, std::move(host), token, lock, false,
                    std::move(type)};
}

}  // namespace

bool shm_forced_remote() {
  // A process of another node is on another host, even when a test runs every node on one machine.
  if (runtime::state().session.node != 0) return true;
  const char* v = std::getenv("MPX_SHM_REMOTE");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

std::shared_ptr<Segment> Segment::create_cells(std::size_t bytes, bool lock, std::string type) {
  auto reply = request(wire::make(wire::Kind::shm_create, 0, 0,
                                  std::make_tuple(Object{}, static_cast<std::uint64_t>(bytes), true, lock, true)));
  return adopt(ref_from_create(reply, lock, std::move(type)));
}

std::shared_ptr<Segment> Segment::create_raw(const std::optional<std::string>& name, std::size_t size, bool track) {
  const Object name_or_nil = name ? Object(*name) : Object{};
  auto reply = request(wire::make(wire::Kind::shm_create, 0, 0,
                                  std::make_tuple(name_or_nil, static_cast<std::uint64_t>(size), false, false, track)));
  return adopt(ref_from_create(reply, false, {}));
}

std::shared_ptr<Segment> Segment::attach_raw(const std::string& name) {
  shm::check_name(name);
  SegmentRef ref{0, coordinator_endpoint(), name, 0, shm::host_key(), 0, false, false, {}};
  if (shm_forced_remote()) return remote_segment(std::move(ref));
  auto opened = shm::open(name);  // FileNotFoundError, as Python's SharedMemory(name)
  ref.size = opened.mapping->length();
  auto* base = opened.mapping->base();
  return std::make_shared<Segment>(std::move(ref), std::move(opened.mapping), base, nullptr);
}

std::shared_ptr<Segment> Segment::adopt(SegmentRef ref) {
  if (!ref.remote && !shm_forced_remote() && ref.host == shm::host_key()) {
    try {
      auto opened = shm::open(ref.name);
      if (ref.token == 0) {
        if (opened.mapping->length() >= ref.size) {
          auto* base = opened.mapping->base();
          return std::make_shared<Segment>(std::move(ref), std::move(opened.mapping), base, nullptr);
        }
      } else if (auto* h = shm::header_of(*opened.mapping, ref.token); h && h->data_size == ref.size) {
        auto* data = opened.mapping->base() + shm::data_offset;
        void* lock = h->has_lock ? &h->lock : nullptr;
        return std::make_shared<Segment>(std::move(ref), std::move(opened.mapping), data, lock);
      }
    } catch (const FileNotFoundError&) {
      // The same host key means the same /dev/shm: a SharedMemory block missing from it was unlinked, and a handle of
      // it cannot be decoded, as Python cannot unpickle one. (The coordinator could still serve its own mapping.)
      if (ref.token == 0) throw;
    }
  }
  return remote_segment(std::move(ref));
}

std::shared_ptr<Segment> Segment::remote_copy() const {
  SegmentRef ref = ref_;
  ref.remote = true;
  return remote_segment(std::move(ref));
}

void Segment::read(std::size_t offset, void* out, std::size_t n) const {
  if (local_) {
    std::memcpy(out, local_ + offset, n);
    return;
  }
  auto reply = request(wire::make(wire::Kind::shm_read, ref_.id, 0,
                                  std::make_tuple(static_cast<std::uint64_t>(offset), static_cast<std::uint64_t>(n))));
  if (reply.body.size() != 2 || reply.body[1].size() != n) {
    throw ProtocolError("mpx: shm_read reply does not carry the " + std::to_string(n) + " bytes asked for");
  }
  std::memcpy(out, reply.body[1].data(), n);
}

void Segment::write(std::size_t offset, const void* in, std::size_t n) {
  if (local_) {
    std::memcpy(local_ + offset, in, n);
    return;
  }
  auto message = wire::make(wire::Kind::shm_write, ref_.id, 0, std::make_tuple(static_cast<std::uint64_t>(offset)));
  message.body.emplace_back(in, n);
  (void)request(std::move(message));
}

std::uint64_t Segment::remote_fetch_add(std::size_t offset, std::size_t width, std::uint64_t delta) {
  auto reply = request(wire::make(wire::Kind::shm_atomic, ref_.id, 0,
                                  std::make_tuple(std::uint64_t{1}, static_cast<std::uint64_t>(offset),
                                                  static_cast<std::uint64_t>(width), delta, std::uint64_t{0})));
  auto [old, ok] = reply.body_as<std::tuple<std::uint64_t, bool>>();
  (void)ok;
  return old;
}

std::uint64_t Segment::remote_compare_exchange(std::size_t offset, std::size_t width, std::uint64_t expected,
                                               std::uint64_t desired, bool* succeeded) {
  auto reply = request(wire::make(wire::Kind::shm_atomic, ref_.id, 0,
                                  std::make_tuple(std::uint64_t{2}, static_cast<std::uint64_t>(offset),
                                                  static_cast<std::uint64_t>(width), expected, desired)));
  auto [old, ok] = reply.body_as<std::tuple<std::uint64_t, bool>>();
  *succeeded = ok;
  return old;
}

int Segment::lock(bool block, const Timeout& timeout) {
  if (!ref_.lock) throw ValueError("mpx: this object was created with lock=false; it has no lock");
  if (local_) {
    if (!lock_) throw ValueError("mpx: this segment's header has no lock");
    return lock_mapped(lock_, block, timeout);
  }
  const auto wait = wait_ms(block, timeout);
  auto reply = request(wire::make(wire::Kind::shm_lock, ref_.id, 0, std::make_tuple(wait)), wait);
  auto [acquired, died] = reply.body_as<std::tuple<bool, bool>>();
  return acquired ? (died ? 2 : 1) : 0;
}

void Segment::unlock() {
  if (local_) {
    unlock_mapped(lock_);
    return;
  }
  (void)request(wire::make(wire::Kind::shm_unlock, ref_.id, 0, Object{}));
}

void check_element_type(const SegmentRef& ref, const char* expected) {
  if (ref.type != expected) {
    throw SerializationError("mpx: a shared handle of " + (ref.type.empty() ? std::string("SharedMemory") : demangle(ref.type.c_str())) +
                             " cannot be decoded as one of " + demangle(expected));
  }
}

}  // namespace detail

// ---- SharedLock --------------------------------------------------------------------------------------------------

bool SharedLock::acquire(bool block, const Timeout& timeout) {
  if (!segment_) throw ValueError("mpx: this object has no lock");
  // A mapped lock is taken right here: this is the hot path of every locked increment.
  void* mapped = segment_->mapped_lock();
  const int got = mapped ? detail::lock_mapped(mapped, block, timeout) : segment_->lock(block, timeout);
  previous_owner_died_ = got == 2;
  return got > 0;
}

void SharedLock::release() {
  if (!segment_) throw ValueError("mpx: this object has no lock");
  if (void* mapped = segment_->mapped_lock()) {
    detail::unlock_mapped(mapped);
    return;
  }
  segment_->unlock();
}

// ---- SharedMemory ------------------------------------------------------------------------------------------------

SharedMemory::SharedMemory(const std::optional<std::string>& name, bool create, std::size_t size, bool track) {
  if (create) {
    if (size == 0) throw ValueError("mpx: 'size' must be a positive number different from zero");
    if (name) shm::check_name(*name);
    segment_ = detail::Segment::create_raw(name, size, track);
  } else {
    if (!name) throw ValueError("mpx: 'name' can only be None if create=True");
    segment_ = detail::Segment::attach_raw(*name);
  }
  ref_ = segment_->ref();
}

SharedMemory::SharedMemory(adopt_t, detail::SegmentRef ref) {
  if (!ref.type.empty()) detail::check_element_type(ref, "");
  segment_ = detail::Segment::adopt(std::move(ref));
  ref_ = segment_->ref();
}

const detail::Segment& SharedMemory::open_segment() const {
  if (!segment_) throw ValueError("mpx: operation on a closed SharedMemory '" + ref_.name + "'");
  return *segment_;
}

std::span<std::byte> SharedMemory::buf() const {
  const auto& s = open_segment();
  if (s.local() == nullptr) throw ValueError("mpx: a remote-mode SharedMemory has no buf(); use read() and write()");
  return std::span<std::byte>(s.local(), ref_.size);
}

std::vector<std::byte> SharedMemory::read(std::size_t offset, std::size_t n) const {
  const auto& s = open_segment();
  if (offset > ref_.size || n > ref_.size - offset) {
    throw ValueError("mpx: bytes " + std::to_string(offset) + ".." + std::to_string(offset + n) +
                     " are outside SharedMemory '" + ref_.name + "' of " + std::to_string(ref_.size) + " bytes");
  }
  std::vector<std::byte> out(n);
  if (n) s.read(offset, out.data(), n);
  return out;
}

void SharedMemory::write(std::size_t offset, std::span<const std::byte> bytes) {
  (void)open_segment();
  if (offset > ref_.size || bytes.size() > ref_.size - offset) {
    throw ValueError("mpx: bytes " + std::to_string(offset) + ".." + std::to_string(offset + bytes.size()) +
                     " are outside SharedMemory '" + ref_.name + "' of " + std::to_string(ref_.size) + " bytes");
  }
  if (!bytes.empty()) segment_->write(offset, bytes.data(), bytes.size());
}

void SharedMemory::close() { segment_.reset(); }

bool SharedMemory::is_remote() const { return segment_ && segment_->local() == nullptr; }

SharedMemory SharedMemory::as_remote() const {
  SharedMemory copy = *this;
  copy.segment_ = open_segment().remote_copy();
  copy.ref_ = copy.segment_->ref();
  return copy;
}

void SharedMemory::unlink() {
  const bool local = !ref_.remote && ref_.host == shm::host_key() && !(segment_ && segment_->local() == nullptr);
  if (local && !shm::unlink(ref_.name)) {
    throw FileNotFoundError("mpx: [Errno 2] No such file or directory: '/" + ref_.name + "'");
  }
  // The coordinator forgets it (so the session's end does not unlink a later block of the same name); in remote mode
  // it also does the unlinking.
  auto reply = detail::request(wire::make(wire::Kind::shm_unlink, 0, 0, std::make_tuple(ref_.name)));
  auto [existed] = reply.body_as<std::tuple<bool>>();
  if (!local && !existed) throw FileNotFoundError("mpx: [Errno 2] No such file or directory: '/" + ref_.name + "'");
}

}  // namespace mpx
