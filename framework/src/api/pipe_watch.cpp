// Readiness mirrors for Connection::fileno(): one eventfd per watched Pipe end, kept in step with the coordinator by a
// background thread of this process. The thread owns a DEALER socket that subscribed to the ends (pipe_watch) and
// receives their readiness flips (pipe_ready); replies to this process's own recv and poll are merged too. Each
// (ready, version) pair is applied only if its version is newer, so the mirror never goes back in time.
#include "api/connection.hpp"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <sys/eventfd.h>
#include <unistd.h>

#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "wire/envelope.hpp"
#include "wire/interrupted.hpp"
#include "wire/transport.hpp"

namespace mpx::detail {

namespace {

// How long fileno() waits for the coordinator to answer a subscription before it gives up.
constexpr auto subscribe_timeout = std::chrono::seconds(30);

void set_signal(Readiness& r) {
  if (r.ready && !r.signaled) {
    const std::uint64_t one = 1;
    if (::write(r.fd, &one, sizeof one) == sizeof one) r.signaled = true;
  } else if (!r.ready && r.signaled) {
    std::uint64_t count = 0;
    (void)::read(r.fd, &count, sizeof count);  // EFD_NONBLOCK: resets the counter to zero
    r.signaled = false;
  }
}

void apply(Readiness& r, bool ready, std::uint64_t version) {
  if (r.known && version <= r.version) return;
  r.known = true;
  r.ready = ready;
  r.version = version;
  set_signal(r);
}

std::shared_ptr<Readiness> make_readiness() {
  auto r = std::make_shared<Readiness>();
  r->fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->fd < 0) throw std::system_error(errno, std::generic_category(), "mpx: eventfd for Connection::fileno");
  return r;
}

class Watcher {
 public:
  Watcher()
      : control_endpoint_("inproc://mpx-pipe-watch-" + std::to_string(::getpid()) + "-" +
                          std::to_string(reinterpret_cast<std::uintptr_t>(this))),
        push_(runtime::context(), zmq::socket_type::push) {
    zmq::socket_t pull(runtime::context(), zmq::socket_type::pull);
    pull.bind(control_endpoint_);
    push_.connect(control_endpoint_);
    const auto& endpoint = runtime::state().session.coordinator_endpoint;
    zmq::socket_t dealer(runtime::context(), zmq::socket_type::dealer);
    runtime::configure_connection(dealer, endpoint);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint);
    // Sockets move to the thread here; thread creation is the memory barrier ZeroMQ asks for.
    std::thread([this, pull = std::move(pull), dealer = std::move(dealer)]() mutable {
      run(pull, dealer);
    }).detach();
  }

  std::shared_ptr<Readiness> subscribe(std::uint64_t end) {
    std::unique_lock lock(mutex_);
    std::shared_ptr<Readiness> r;
    if (auto it = ends_.find(end); it != ends_.end()) r = it->second.lock();
    if (!r) {
      r = make_readiness();
      ends_[end] = r;
      push_.send(zmq::buffer(&end, sizeof end), zmq::send_flags::none);
    }
    if (!changed_.wait_for(lock, subscribe_timeout, [&] { return r->known; })) {
      throw TimeoutError("mpx: Connection::fileno: the coordinator did not answer the subscription for pipe end " +
                         std::to_string(end));
    }
    return r;
  }

  void merge(std::uint64_t end, bool ready, std::uint64_t version) {
    std::lock_guard lock(mutex_);
    auto it = ends_.find(end);
    if (it == ends_.end()) return;
    auto r = it->second.lock();
    if (!r) {
      ends_.erase(it);
      return;
    }
    apply(*r, ready, version);
    changed_.notify_all();
  }

 private:
  void run(zmq::socket_t& pull, zmq::socket_t& dealer) {
    const auto actor = runtime::self_actor();
    // hello makes the coordinator watch this process (usually it already does, through the thread's channel).
    auto hello = wire::make(wire::Kind::hello, 0, 0,
                            std::make_tuple(static_cast<std::int64_t>(::getpid()),
                                            static_cast<std::int64_t>(runtime::state().self.parent_pid),
                                            runtime::state().self.name));
    wire::send(dealer, hello, actor);
    for (;;) {
      zmq::pollitem_t items[] = {{pull.handle(), 0, ZMQ_POLLIN, 0}, {dealer.handle(), 0, ZMQ_POLLIN, 0}};
      try {
        (void)wire::poll(items, 2, -1);
      } catch (const zmq::error_t&) {
        return;  // the context is gone: the process is exiting
      }
      if (items[0].revents & ZMQ_POLLIN) {
        zmq::message_t m;
        while (pull.recv(m, zmq::recv_flags::dontwait)) {
          std::uint64_t end = 0;
          if (m.size() != sizeof end) continue;
          std::memcpy(&end, m.data(), sizeof end);
          auto request = wire::make(wire::Kind::pipe_watch, end, end, Object{});
          wire::send(dealer, request, actor);
        }
      }
      if (items[1].revents & ZMQ_POLLIN) {
        for (;;) {
          std::optional<wire::Envelope> e;
          try {
            e = wire::recv(dealer, nullptr, true);
          } catch (const ProtocolError&) {
            continue;
          }
          if (!e) break;
          const auto end = e->header.object;
          if (e->header.kind == wire::Kind::ok || e->header.kind == wire::Kind::pipe_ready) {
            try {
              auto [ready, version] = e->body_as<std::tuple<bool, std::uint64_t>>();
              merge(end, ready, version);
            } catch (const ProtocolError&) {
            }
          } else if (e->header.kind == wire::Kind::error) {
            merge(end, true, ~std::uint64_t{0});  // the pipe is gone: EOF is ready, for good
          }
        }
      }
    }
  }

  std::string control_endpoint_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::unordered_map<std::uint64_t, std::weak_ptr<Readiness>> ends_;
  zmq::socket_t push_;  // guarded by mutex_
};

struct ProcessWatcher {
  pid_t owner = 0;
  Watcher* watcher = nullptr;  // never deleted: its thread runs until the process exits
};

std::mutex watcher_mutex;
ProcessWatcher process_watcher;

Watcher& watcher() {
  std::lock_guard lock(watcher_mutex);
  if (process_watcher.owner != ::getpid() || process_watcher.watcher == nullptr) {
    // A forked child has a copy of its parent's watcher but not its thread: start its own.
    process_watcher.owner = ::getpid();
    process_watcher.watcher = new Watcher();
  }
  return *process_watcher.watcher;
}

Watcher* watcher_if_running() {
  std::lock_guard lock(watcher_mutex);
  return process_watcher.owner == ::getpid() ? process_watcher.watcher : nullptr;
}

}  // namespace

Readiness::~Readiness() {
  if (fd >= 0) ::close(fd);
}

std::shared_ptr<Readiness> watch_end(std::uint64_t end) { return watcher().subscribe(end); }

void merge_readiness(std::uint64_t end, bool ready, std::uint64_t version) {
  if (auto* w = watcher_if_running()) w->merge(end, ready, version);
}

std::shared_ptr<Readiness> always_ready() {
  auto r = make_readiness();
  std::lock_guard lock(watcher_mutex);
  apply(*r, true, 0);
  return r;
}

}  // namespace mpx::detail
