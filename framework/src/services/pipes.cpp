// The pipe service: the two ends of every Pipe, each with an inbox of the messages the other end sent (in order), the
// processes holding it, blocked receivers and pollers, and the subscribers that mirror its readiness (fileno()).
//
// An end is ready when a message waits in its inbox or the other end has no holder (recv would raise EOFError at
// once). Every change of readiness bumps the end's version and is pushed to its subscribers; replies to recv and
// poll carry the same (ready, version) pair, so a process can merge both sources without losing an update.
#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <deque>
#include <filesystem>
#include <memory>
#include <unordered_map>
#include <vector>

#include "runtime/runtime.hpp"
#include "services/pipe_direct.hpp"
#include "services/services.hpp"
#include "services/waiters.hpp"
#if MPX_TRACING
#include "trace/bus.hpp"
#include "wire/stream_framing.hpp"
#endif

namespace mpx::services {

namespace {

// A batch of received messages stops growing past this many bytes (it always holds at least one message).
constexpr std::size_t recv_batch_bytes = 1 << 20;
// Copies of an end counted in transit from one process; beyond this the count stops growing, so the process may stop
// holding the end before its last copies are adopted.
constexpr std::uint32_t max_handed = 1 << 20;

struct Subscriber {
  std::uint64_t actor = 0;
  Coordinator::Peer peer;
};

// The direct path into a reading end (PROTOCOL.md, "Pipes: the direct path"). An epoch is one writer's connection to
// the listening reader: granted (the writer is connecting), then active (the reader is told to read it once the inbox
// is empty), then over when the reader reports it read the connection to its end.
struct Direct {
  enum class Phase { none, granted, active };
  std::uint64_t listener = 0;  // pid of the reader process listening; 0: none
  std::string path;
  direct::Control control;
  std::uint64_t epoch = 0;  // the latest epoch granted
  Phase phase = Phase::none;
  std::uint64_t writer = 0;
  std::uint64_t boundary = 0;  // inbox sequence number where the epoch's messages belong, if given back
};

// A process holding an end (PROTOCOL.md, "Holders").
struct Holding {
  std::uint64_t pid = 0;
  std::uint32_t handed = 0;  // copies it encoded for other processes (pipe_hand_over) and not adopted yet
  bool closed = false;       // it closed its copy while copies were in transit: it leaves once they are adopted
};

struct End {
  std::uint64_t id = 0;
  bool readable = true;
  bool writable = true;
  // The processes holding this end, each once (a live, watched pid): the end is released when the last one closes it
  // or dies, as a Python pipe end is closed when the last copy of its descriptor is.
  std::vector<Holding> holders;
  std::deque<std::string> inbox;   // sent by the other end, not yet received
  std::uint64_t head = 0;          // sequence number of inbox.front(): each message sent gets the next one
  Direct direct;                   // the direct path into this end, when it is readable
  std::deque<Waiter> receivers;    // blocked recv
  std::deque<Waiter> pollers;      // blocked poll
  bool ready = false;
  std::uint64_t version = 0;       // bumped whenever `ready` changes
  std::vector<Subscriber> subscribers;
};

struct PipeState {
  std::array<End, 2> ends;
  std::uint64_t creator = 0;
  bool creator_alive = true;
};

class PipeService final : public Service {
 public:
  explicit PipeService(Host& host) : Service(host) {}

  // Tracing sees only what crosses the coordinator, so a traced session keeps every pipe on the relay path: no new
  // epoch is granted, and the running ones are revoked (each writer sees it before its next message).
  void tracing_started() {
    for (auto& [id, pipe] : pipes_) {
      for (auto& e : pipe->ends) {
        if (e.id == id) revoke(e);
      }
    }
  }

  void install() {
    using K = wire::Kind;
    on(K::pipe_create, [this](auto& peer, auto& req) { create(peer, req); });
    on(K::pipe_attach, [this](auto& peer, auto& req) { attach(peer, req); });
    on(K::pipe_send, [this](auto& peer, auto& req) { send(peer, req); });
    on(K::pipe_recv, [this](auto& peer, auto& req) { recv(peer, req); });
    on(K::pipe_poll, [this](auto& peer, auto& req) { poll(peer, req); });
    on(K::pipe_close, [this](auto& peer, auto& req) { close(peer, req); });
    on(K::pipe_watch, [this](auto& peer, auto& req) { watch(peer, req); });
    on(K::pipe_unread, [this](auto& peer, auto& req) { unread(peer, req); });
    on(K::pipe_listen, [this](auto& peer, auto& req) { listen(peer, req); });
    on(K::pipe_connect, [this](auto& peer, auto& req) { connect(peer, req); });
    on(K::pipe_connected, [this](auto& peer, auto& req) { connected(peer, req); });
    on(K::pipe_direct_end, [this](auto& peer, auto& req) { direct_end(peer, req); });
    on(K::pipe_hand_over, [this](auto& peer, auto& req) { hand_over(peer, req); });
    coordinator_.on_death([this](std::uint64_t actor) { died(actor); });
    coordinator_.on_tracing_changed([this](bool enabled) {
      if (enabled) tracing_started();
    });
  }

 private:
  struct Located {
    PipeState* pipe;
    int side;
    End& self() const { return pipe->ends[static_cast<std::size_t>(side)]; }
    End& other() const { return pipe->ends[static_cast<std::size_t>(1 - side)]; }
  };

  std::optional<Located> locate(std::uint64_t id) {
    auto it = pipes_.find(id);
    if (it == pipes_.end()) return std::nullopt;
    PipeState* p = it->second.get();
    return Located{p, p->ends[0].id == id ? 0 : 1};
  }

  // The list of blocked requests of an end, for a deadline that expires; nullptr once the pipe is gone.
  std::deque<Waiter>* waiting(std::uint64_t id, std::deque<Waiter> End::*list) {
    auto at = locate(id);
    return at ? &(at->self().*list) : nullptr;
  }

  void reply_gone(Coordinator::Peer& peer, const wire::Header& h) {
    coordinator_.reply_error(peer, h, wire::ErrorCode::eof,
                             "mpx: EOF: pipe end " + std::to_string(h.object) +
                                 " is gone (both ends were released) or never existed");
  }

  static bool ready_of(const End& self, const End& other) {
    return (self.readable && !self.inbox.empty()) || other.holders.empty();
  }

  std::string state_body(const End& e) { return encode(std::make_tuple(e.ready, e.version)); }

  // Recomputes an end's readiness after a change: pushes a flip to subscribers, answers pollers when ready and
  // receivers when they can only get EOF.
  void refresh(const Located& at) {
    End& e = at.self();
    const End& o = at.other();
    const bool ready = ready_of(e, o);
    if (ready != e.ready) {
      e.ready = ready;
      ++e.version;
      push(e);
    }
    if (!ready) return;
    for (auto& w : e.pollers) answer(coordinator_, w, wire::Kind::ok, state_body(e));
    e.pollers.clear();
    if (o.holders.empty() && e.inbox.empty()) {
      for (auto& w : e.receivers) answer_error(coordinator_, w, wire::ErrorCode::eof, eof_message(e));
      e.receivers.clear();
    }
  }

  static std::string eof_message(const End& e) {
    return "mpx: EOF: the other end of pipe end " + std::to_string(e.id) +
           " was closed or its process died, and no message is left";
  }

  void push(const End& e) {
    for (const auto& s : e.subscribers) {
      Coordinator::Peer to = s.peer.copy();
      wire::Envelope n = wire::make(wire::Kind::pipe_ready, e.id, 0, std::make_tuple(e.ready, e.version));
      coordinator_.reply(to, n);
    }
  }

  static Holding* holding_of(End& e, std::uint64_t actor) {
    auto it = std::find_if(e.holders.begin(), e.holders.end(), [actor](const Holding& h) { return h.pid == actor; });
    return it == e.holders.end() ? nullptr : &*it;
  }

  // `actor` uses the end (sends, receives, polls, listens, connects): it holds it for itself (its copies in transit
  // stay counted). A process that is not alive is not recorded. The other end's readiness depends on whether this one
  // is released.
  void use(const Located& at, std::uint64_t actor) {
    End& e = at.self();
    if (Holding* h = holding_of(e, actor)) {
      h->closed = false;
      return;
    }
    if (actor == 0 || !coordinator_.watch(actor)) return;
    e.holders.push_back(Holding{actor});
    if (e.holders.size() == 1) refresh(Located{at.pipe, 1 - at.side});
  }

  // `actor`'s holding ends (it closed the end, or died). When none is left the end is released, as a Python pipe end
  // is once every copy of its descriptor is closed: the other end's readers get EOF once its inbox is read. The caller
  // then calls maybe_erase.
  void leave(const Located& at, std::uint64_t actor) {
    End& e = at.self();
    const auto before = e.holders.size();
    std::erase_if(e.holders, [actor](const Holding& h) { return h.pid == actor; });
    if (before != 0 && e.holders.empty()) refresh(Located{at.pipe, 1 - at.side});
  }

  // `actor` decoded a copy of the end: the oldest hand-over still in transit is delivered. The adopter holds the end;
  // the process that handed the copy on leaves if it closed its own, and otherwise keeps holding its own copy.
  void adopted(const Located& at, std::uint64_t actor) {
    End& e = at.self();
    if (Holding* mine = holding_of(e, actor); mine != nullptr && mine->handed > 0) {
      --mine->handed;  // a copy it handed on came back to it
      use(at, actor);
      return;
    }
    if (holding_of(e, actor) == nullptr) use(at, actor);
    auto it = std::find_if(e.holders.begin(), e.holders.end(),
                           [actor](const Holding& h) { return h.pid != actor && h.handed > 0; });
    if (it == e.holders.end()) {
      use(at, actor);  // its own copy, or one nobody announced: a plain use
      return;
    }
    if (--it->handed == 0 && it->closed) leave(at, it->pid);
  }

  // A process other than the listener reads the end: the listener's epoch must not keep the messages from it, so it
  // is revoked (the writer relays from its next message on, and both readers take from the inbox).
  static void reading(End& e, std::uint64_t actor) {
    if (e.direct.listener != 0 && e.direct.listener != actor) revoke(e);
  }
  // A process other than the epoch's writer sends into `r`: the epoch is revoked, or its reader, who reads an active
  // epoch before what was relayed after it began, would wait on an idle writer's connection while these messages
  // wait in the inbox.
  static void writing(End& r, std::uint64_t actor) {
    if (r.direct.writer != actor) revoke(r);
  }

  // Holders of end `id` that have exited and been reaped (join() returned in their parent) are handled as dead now,
  // without waiting for the loop to see them exit: poll() right after join() already sees EOF, and a close right
  // after it releases the end. Their death runs in full, the messages they sent before dying first: a writer's last
  // sends or its epoch's start may still wait in its side-door connection, and an EOF answered before them would be
  // false. True if any was found: the caller looks the pipe up again (it may have changed, or ended).
  bool prune_reaped(std::uint64_t id) {
    std::vector<std::uint64_t> reaped;
    if (auto at = locate(id)) {
      for (const auto& h : at->self().holders) {
        if (wire::node_of(h.pid) != wire::coordinator_node) continue;  // another host's: its agent reports its end
        if (::kill(static_cast<pid_t>(h.pid), 0) != 0 && errno == ESRCH) reaped.push_back(h.pid);
      }
    }
    for (auto pid : reaped) {
      coordinator_.reaped(pid);
      // A holder the coordinator no longer watched has no death to run: it leaves here.
      if (auto at = locate(id); at && holding_of(at->self(), pid) != nullptr) leave(*at, pid);
    }
    return !reaped.empty();
  }

  void create(Coordinator::Peer& peer, wire::Envelope& req) {
    auto [duplex] = req.body_as<std::tuple<bool>>();
    auto pipe = std::make_shared<PipeState>();
    pipe->creator = req.header.sender;
    const bool alive = coordinator_.watch(req.header.sender);
    for (auto& e : pipe->ends) {
      e.id = coordinator_.allocate_object_id();
      if (alive) e.holders.push_back(Holding{req.header.sender, 0});
    }
    if (!duplex) {
      pipe->ends[0].writable = false;  // Python: Pipe(False) returns (reader, writer)
      pipe->ends[1].readable = false;
    }
    for (int side = 0; side < 2; ++side) {
      End& e = pipe->ends[static_cast<std::size_t>(side)];
      e.ready = ready_of(e, pipe->ends[static_cast<std::size_t>(1 - side)]);
    }
    pipes_.emplace(pipe->ends[0].id, pipe);
    pipes_.emplace(pipe->ends[1].id, pipe);
    ok(peer, req.header, encode(std::make_tuple(pipe->ends[0].id, pipe->ends[1].id)));
  }

  // `nil`: the sender decoded a copy that a holder handed over. `[parent]`: a fork child first uses the copy it
  // inherited from `parent`; the parent keeps its own copy, as a Python parent keeps its descriptor after fork.
  void attach(Coordinator::Peer& peer, wire::Envelope& req) {
    std::optional<std::uint64_t> inherited_from;
    if (req.body.size() != 1) throw ProtocolError("mpx: a pipe_attach carries nil or [parent]");
    if (!body_is_nil(req)) inherited_from = std::get<0>(req.body_as<std::tuple<std::uint64_t>>());
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    if (inherited_from) {
      use(*at, req.header.sender);
    } else {
      adopted(*at, req.header.sender);
    }
    ok(peer, req.header, encode(std::make_tuple(at->self().readable, at->self().writable)));
  }

  // The sender encoded its copy of the end for another process (a Process argument, a Queue item, a message): it holds
  // the end for that copy until a process adopts it, so the end is not released in between, even if the sender closes
  // its copy or stops using it. A sender that does not hold the end takes it up for the copy.
  void hand_over(Coordinator::Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    if (holding_of(at->self(), req.header.sender) == nullptr) use(*at, req.header.sender);
    if (Holding* h = holding_of(at->self(), req.header.sender); h != nullptr && h->handed < max_handed) ++h->handed;
    ok(peer, req.header, encode(Object{}));
  }

  void send(Coordinator::Peer&, wire::Envelope& req) {
    if (req.body.size() != 2) throw ProtocolError("mpx: a pipe_send carries [nil][message] frames");
    auto at = locate(req.header.object);
    if (!at) return;  // the pipe ended: nobody can ever receive this (documented: send does not report it)
    if (!at->self().writable) {
      throw ProtocolError("mpx: pipe end " + std::to_string(req.header.object) + " is read-only");
    }
    use(*at, req.header.sender);
    writing(at->other(), req.header.sender);
    std::string message(static_cast<const char*>(req.body[1].data()), req.body[1].size());
    const Located to{at->pipe, 1 - at->side};
    End& r = to.self();
    if (!r.receivers.empty()) {
      // A blocked receiver means an empty inbox and a held sender: readiness stays false.
      Waiter w = std::move(r.receivers.front());
      r.receivers.pop_front();
      answer(coordinator_, w, wire::Kind::ok, state_body(r), std::move(message), true);
      return;
    }
    r.inbox.push_back(std::move(message));
    refresh(to);
  }

  void recv(Coordinator::Peer& peer, wire::Envelope& req) {
    auto [wait, max_items] = req.body_as<std::tuple<std::int64_t, std::uint32_t>>();
    if (max_items == 0) throw ProtocolError("mpx: a pipe_recv asks for at least one message");
    max_items = std::min<std::uint32_t>(max_items, wire::max_body_frames - 1);  // each message is a reply frame
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    End& e = at->self();
    if (!e.readable) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::value, "mpx: connection is write-only");
      return;
    }
    use(*at, req.header.sender);
    reading(e, req.header.sender);
    if (reading_direct(e, req.header.sender)) return tell_direct(peer, req.header, e);
    if (!e.inbox.empty()) {
      // A batch, oldest first: the end has one reader, so what it takes early is still read in order, by it alone.
      std::vector<std::string> batch;
      std::size_t bytes = 0;
      // A batch stops where an epoch into this reader began: what was relayed after it comes after its messages.
      std::size_t take = e.inbox.size();
      const Direct& d = e.direct;
      if (d.phase != Direct::Phase::none && d.listener == req.header.sender && d.boundary > e.head) {
        take = std::min<std::size_t>(take, d.boundary - e.head);
      }
      while (batch.size() < take && batch.size() < max_items && (batch.empty() || bytes < recv_batch_bytes)) {
        bytes += e.inbox.front().size();
        batch.push_back(std::move(e.inbox.front()));
        e.inbox.pop_front();
        ++e.head;
      }
      refresh(*at);
      auto r = wire::make_reply(req.header, wire::Kind::ok, state_body(e));
      for (auto& message : batch) r.body.emplace_back(message.data(), message.size());
      coordinator_.reply(peer, r);
      return;
    }
    if (prune_reaped(at->other().id)) return recv(peer, req);  // decided again, after their last messages
    if (at->other().holders.empty()) {
      coordinator_.reply_error(peer, req.header, wire::ErrorCode::eof, eof_message(e));
      return;
    }
    park_or_refuse(coordinator_, e.receivers, make_waiter(peer, req), wait,
                   [this, id = e.id] { return waiting(id, &End::receivers); }, wire::ErrorCode::timeout,
                   "mpx: no message in the pipe", "mpx: no message arrived before the timeout");
  }

  // A reader gives back messages it took in a batch but did not read (it hands its end to another process, or starts
  // mirroring readiness): they go back to the front of the inbox, in order.
  void unread(Coordinator::Peer& peer, wire::Envelope& req) {
    if (req.body.size() < 2) throw ProtocolError("mpx: a pipe_unread carries [nil] and at least one message frame");
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    End& e = at->self();
    if (!e.readable) throw ProtocolError("mpx: pipe end " + std::to_string(req.header.object) + " is write-only");
    for (std::size_t i = req.body.size() - 1; i >= 1; --i) {
      e.inbox.emplace_front(static_cast<const char*>(req.body[i].data()), req.body[i].size());
      --e.head;
    }
    refresh(*at);
    ok(peer, req.header, encode(Object{}));
  }

  // Allowed on write-only ends too (ready once the reader is gone): wait() uses it; Connection::poll() refuses them.
  void poll(Coordinator::Peer& peer, wire::Envelope& req) {
    auto [wait] = req.body_as<std::tuple<std::int64_t>>();
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    use(*at, req.header.sender);
    reading(at->self(), req.header.sender);
    End& e = at->self();
    if (reading_direct(e, req.header.sender)) return tell_direct(peer, req.header, e);
    if (!e.ready && prune_reaped(at->other().id)) return poll(peer, req);  // decided again, after their last messages
    if (e.ready || wait == 0) {
      ok(peer, req.header, state_body(e));
      return;
    }
    park(coordinator_, e.pollers, make_waiter(peer, req), wait,
         [this, id = e.id] { return waiting(id, &End::pollers); },
         [this, id = e.id](Waiter& w) {
           // Still there: an expiring deadline's list was just found.
           answer(coordinator_, w, wire::Kind::ok, state_body(locate(id)->self()));
         });
  }

  void close(Coordinator::Peer&, wire::Envelope& req) {
    auto at = locate(req.header.object);
    if (!at) return;
    // A process that handed its copy on since it last used the end closes only that copy: it holds the end until the
    // copies in transit are adopted (Python's parent closing its copy of the end it passed to a child). A process
    // that does not hold the end has nothing to release.
    Holding* h = holding_of(at->self(), req.header.sender);
    if (h == nullptr) return;
    if (h->handed > 0) {
      h->closed = true;
      return;
    }
    leave(*at, req.header.sender);
    const auto id = req.header.object;
    prune_reaped(id);
    if (auto again = locate(id)) maybe_erase(again->pipe);
  }

  void watch(Coordinator::Peer& peer, wire::Envelope& req) {
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    End& e = at->self();
    std::erase_if(e.subscribers, [&](const Subscriber& s) { return s.actor == req.header.sender; });
    Subscriber s;
    s.actor = req.header.sender;
    s.peer = peer.copy();
    e.subscribers.push_back(std::move(s));
    ok(peer, req.header, state_body(e));
  }

  // A pipe ends when nobody holds either end and nothing waits to be read (or its creator, who may still hold copies
  // to take an end up again, is gone).
  void maybe_erase(PipeState* pipe) {
    auto& [a, b] = pipe->ends;
    if (!a.holders.empty() || !b.holders.empty()) return;
    if (pipe->creator_alive && !(a.inbox.empty() && b.inbox.empty())) return;
    std::shared_ptr<PipeState> keep = pipes_.at(a.id);
    for (auto& e : pipe->ends) {
      if (e.direct.listener != 0) {
        // A listener that no longer holds the end: its files go when it does, unless it removes them first.
        if (e.direct.control.mapped()) e.direct.control.revoke(e.direct.epoch, true);
        orphans_[e.direct.listener].push_back(e.direct.path);
      }
      for (auto& w : e.receivers) answer_error(coordinator_, w, wire::ErrorCode::eof, eof_message(e));
      e.receivers.clear();
      e.ready = true;
      ++e.version;
      for (auto& w : e.pollers) answer(coordinator_, w, wire::Kind::ok, state_body(e));
      e.pollers.clear();
      push(e);
      pipes_.erase(e.id);
    }
  }

  void died(std::uint64_t actor) {
    std::vector<PipeState*> touched;
    for (auto& [id, pipe] : pipes_) {
      if (id != pipe->ends[0].id) continue;  // each pipe once
      bool changed = false;
      if (pipe->creator == actor && pipe->creator_alive) {
        pipe->creator_alive = false;
        changed = true;
      }
      for (int side = 0; side < 2; ++side) {
        End& e = pipe->ends[static_cast<std::size_t>(side)];
        direct_died(e, actor);
        forget_actor(coordinator_, e.receivers, actor);
        forget_actor(coordinator_, e.pollers, actor);
        std::erase_if(e.subscribers, [actor](const Subscriber& s) { return s.actor == actor; });
        if (holding_of(e, actor) != nullptr) {
          leave(Located{pipe.get(), side}, actor);
          changed = true;
        }
      }
      if (changed) touched.push_back(pipe.get());
    }
    for (PipeState* p : touched) maybe_erase(p);
    if (auto it = orphans_.find(actor); it != orphans_.end()) {
      for (const auto& path : it->second) unlink_listener_files(path);
      orphans_.erase(it);
    }
    unlink_files_of(actor);
  }

  // A reader makes its files before it sends pipe_listen, and that request may die with it (still in its ZeroMQ
  // queue, or handled only after its death and refused), so no record names them: find them by their pid.
  static void unlink_files_of(std::uint64_t actor) {
    const auto& directory = runtime::state().session.directory;
    if (directory.empty()) return;
    const std::string suffix = "-" + std::to_string(actor);
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
      std::string name = entry.path().filename().string();
      if (!name.starts_with("pipe-")) continue;
      if (name.ends_with(".ctl")) name.resize(name.size() - 4);
      if (name.ends_with(suffix)) ::unlink(entry.path().c_str());
    }
  }

  // ---- the direct path ----

  static void unlink_listener_files(const std::string& path) {
    ::unlink(path.c_str());
    ::unlink(direct::control_path(path).c_str());
  }

  static bool tracing() {
#if MPX_TRACING
    return trace::on();
#else
    return false;
#endif
  }

  // Stops the epoch into `e`, if one is granted or running: its writer sees it before its next message.
  static void revoke(End& e) {
    if (e.direct.phase != Direct::Phase::none && e.direct.control.mapped()) e.direct.control.revoke(e.direct.epoch, false);
  }

  // Whether `reader` must read its direct connection before anything else the coordinator could tell it: once
  // everything relayed before the epoch was granted has been read. What waits in the inbox then was relayed after
  // the epoch's messages (the writer ended its epoch first: a message too large for it, a full connection), so it
  // comes after them.
  static bool reading_direct(const End& e, std::uint64_t reader) {
    return e.direct.phase == Direct::Phase::active && e.direct.listener == reader &&
           (e.inbox.empty() || e.head >= e.direct.boundary);
  }

  void tell_direct(const Coordinator::Peer& peer, const wire::Header& h, const End& e) {
    auto r = wire::make_reply(h, wire::Kind::pipe_direct, encode(std::make_tuple(e.direct.epoch)));
    coordinator_.reply(peer, r);
  }

  // An epoch became active: the listener's blocked receivers and pollers are told to read the connection.
  void wake_direct(End& e) {
    if (!reading_direct(e, e.direct.listener)) return;
    for (auto* list : {&e.receivers, &e.pollers}) {
      for (auto it = list->begin(); it != list->end();) {
        if (it->actor() != e.direct.listener) {
          ++it;
          continue;
        }
        disarm(coordinator_, *it);
        tell_direct(it->peer, it->request, e);
        it = list->erase(it);
      }
    }
  }

  void listen(Coordinator::Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    End& e = at->self();
    if (!e.readable) throw ProtocolError("mpx: pipe end " + std::to_string(e.id) + " is write-only");
    use(*at, req.header.sender);
    reading(e, req.header.sender);
    const auto reader = req.header.sender;
    bool accepted = false;
    if (!tracing() && holding_of(e, reader) != nullptr &&
        (e.direct.listener == reader || e.direct.phase == Direct::Phase::none)) {
      if (e.direct.listener != 0 && e.direct.listener != reader) {
        orphans_[e.direct.listener].push_back(e.direct.path);  // its files go when it does, unless it removes them
      }
      const auto path = direct::socket_path(runtime::state().session.directory, e.id, reader);
      if (e.direct.listener != reader || !e.direct.control.mapped()) {
        e.direct.listener = 0;
        e.direct.phase = Direct::Phase::none;
        if (e.direct.control.open(direct::control_path(path), false)) {
          e.direct.listener = reader;
          e.direct.path = path;
        }
      }
      accepted = e.direct.listener == reader;
    }
    ok(peer, req.header, encode(std::make_tuple(accepted)));
  }

  void connect(Coordinator::Peer& peer, wire::Envelope& req) {
    expect_nil(req);
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    if (!at->self().writable) throw ProtocolError("mpx: pipe end " + std::to_string(req.header.object) + " is read-only");
    use(*at, req.header.sender);
    writing(at->other(), req.header.sender);
    End& r = at->other();
    Direct& d = r.direct;
    const bool grant = !tracing() && r.readable && d.listener != 0 && holding_of(r, d.listener) != nullptr &&
                       d.listener != req.header.sender && d.phase == Direct::Phase::none && d.control.mapped() &&
                       !d.control.load().closed() && d.epoch < direct::Word::epoch_mask;
    if (!grant) return ok(peer, req.header, encode(Object{}));
    ++d.epoch;
    d.phase = Direct::Phase::granted;
    d.writer = req.header.sender;
    d.boundary = r.head + r.inbox.size();
    ok(peer, req.header, encode(std::make_tuple(d.path, d.epoch)));
  }

  void connected(Coordinator::Peer&, wire::Envelope& req) {
    auto [epoch, up] = req.body_as<std::tuple<std::uint64_t, bool>>();
    auto at = locate(req.header.object);
    if (!at) return;
    End& r = at->other();
    Direct& d = r.direct;
    if (d.phase != Direct::Phase::granted || d.epoch != epoch || d.writer != req.header.sender) return;
    if (!up) {
      d.phase = Direct::Phase::none;
      return;
    }
    d.phase = Direct::Phase::active;
    wake_direct(r);
  }

  // The reader read an epoch's connection to its end, or stops listening (giving back what it drained: the messages
  // go where the epoch began, after what was sent through the coordinator before it and before what came after).
  void direct_end(Coordinator::Peer& peer, wire::Envelope& req) {
    if (req.body.empty()) throw ProtocolError("mpx: a pipe_direct_end carries [epoch, listening] and message frames");
    auto [epoch, listening] = req.body_as<std::tuple<std::uint64_t, bool>>();
    auto at = locate(req.header.object);
    if (!at) return reply_gone(peer, req.header);
    End& e = at->self();
    if (!e.readable) throw ProtocolError("mpx: pipe end " + std::to_string(e.id) + " is write-only");
    Direct& d = e.direct;
    const bool mine = d.listener == req.header.sender;
    if (req.body.size() > 2) throw ProtocolError("mpx: a pipe_direct_end carries [epoch, listening] and at most one frame");
    std::vector<std::string> drained;
    if (req.body.size() == 2) {
      // The messages as length records: one frame however many were drained.
      wire::RecordReader records(std::string_view(static_cast<const char*>(req.body[1].data()), req.body[1].size()),
                                 "a pipe_direct_end frame");
      while (auto message = records.next()) drained.emplace_back(*message);
    }
    if (!drained.empty()) {
      // The epoch's place: where the inbox stood when it was granted (the front, once that has been read).
      std::size_t at_index = 0;
      if (epoch == d.epoch && d.boundary > e.head) at_index = std::min<std::size_t>(d.boundary - e.head, e.inbox.size());
      e.inbox.insert(e.inbox.begin() + static_cast<std::ptrdiff_t>(at_index), std::make_move_iterator(drained.begin()),
                     std::make_move_iterator(drained.end()));
    }
    if (mine && (epoch == d.epoch || !listening)) d.phase = Direct::Phase::none;
    if (mine && !listening) {
      d.control.revoke(d.epoch, true);
      d.control.unmap();
      d.listener = 0;
    }
    refresh(*at);
    ok(peer, req.header, encode(Object{}));
  }

  // A listener that died leaves its files (the coordinator removes them); a writer that died before its epoch became
  // active sent nothing straight to the reader, unless the word counts messages.
  void direct_died(End& e, std::uint64_t actor) {
    Direct& d = e.direct;
    if (d.listener == actor) {
      if (d.control.mapped()) d.control.revoke(d.epoch, true);
      d.control.unmap();
      unlink_listener_files(d.path);
      d.listener = 0;
      d.phase = Direct::Phase::none;
    } else if (d.writer == actor && d.phase == Direct::Phase::granted) {
      // Its pipe_connected may have died with it (a post still in its ZeroMQ queue) after it had sent messages
      // straight to the reader: the count in the word says so, and then the reader reads them as from any dead writer.
      const auto word = d.control.mapped() ? d.control.load() : direct::Word{};
      if (word.epoch() == d.epoch && word.count() > 0) {
        d.phase = Direct::Phase::active;
        wake_direct(e);
      } else {
        d.phase = Direct::Phase::none;
      }
    }
  }

  std::unordered_map<std::uint64_t, std::vector<std::string>> orphans_;  // listener files of replaced listeners, by pid
  // Both end ids map to their pipe.
  std::unordered_map<std::uint64_t, std::shared_ptr<PipeState>> pipes_;
};

}  // namespace

std::unique_ptr<Service> install_pipes(Host& host) { return installed<PipeService>(host); }

}  // namespace mpx::services
