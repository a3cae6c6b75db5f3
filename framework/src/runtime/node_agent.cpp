// The node agent (PROTOCOL.md, "Nodes"): what the application's own binary becomes on another host when started with
// --mpx-node ENDPOINT (or MPX_NODE). It says hello to the coordinator with its key, starts the processes the
// coordinator asks for through a forkserver of its host, reports how they end, and beats. A coordinator it has not
// heard from for the node timeout is taken for lost: the agent stops every process it started, so that a node cut off
// from the coordinator never runs on beside the processes that replace them, and then tries to join again.
#include "runtime/node_agent.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mpx/errors.hpp>
#include <mpx/start_method.hpp>

#include "runtime/launcher.hpp"
#include "runtime/node_relay.hpp"
#include "runtime/nodes.hpp"
#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "wire/actor_id.hpp"
#include "wire/envelope.hpp"
#include "wire/transport.hpp"

namespace mpx::runtime {

namespace {

using Clock = std::chrono::steady_clock;

// How long an agent keeps trying to (re)join a coordinator it cannot reach before it gives up and exits.
constexpr auto give_up_after = std::chrono::seconds(30);

struct Child {
  int pidfd = -1;
  int status_fd = -1;    // the forkserver's report of its wait status (its own children only)
  bool spawned = false;  // the agent's own child (an exec actor): reaped by the agent, its wait status its own
  bool silent = false;   // its start failed and was answered so: its end is nobody's business
};

// An exec actor started and not yet joined: the start is answered when it has (or cannot any more).
struct Joining {
  std::uint64_t ticket = 0;
  int ready_fd = -1;
  Clock::time_point deadline;
};

class Agent {
 public:
  Agent(std::string endpoint, std::string keys)
      : endpoint_(std::move(endpoint)),
        keys_(std::move(keys)),
        socket_(context(), zmq::socket_type::dealer),
        relay_(context(), endpoint_) {
    configure_connection(socket_, endpoint_);
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint_);
  }

  [[noreturn]] void run() {
    auto last_contact = Clock::now();
    for (;;) {
      if (!join(last_contact)) {
        std::fprintf(stderr, "mpx: node agent: no coordinator at %s answered for %lld s; exiting\n", endpoint_.c_str(),
                     static_cast<long long>(give_up_after.count()));
        stop_children();
        std::exit(1);
      }
      // Without a relay, the node's processes talk to the coordinator directly, each post waiting for its answer.
      (void)relay_.open(node_relay_path(), node_);
      serve();  // returns when the coordinator is lost, or said this node is
      relay_.close();
      exits_.clear();
      stop_children();
      last_contact = Clock::now();
      state().session.node = 0;
    }
  }

 private:
  // Says hello until the coordinator answers. False if none did for give_up_after since `since`.
  bool join(Clock::time_point since) {
    const std::string host = host_name();
    const std::string build_id = node_build_id();
    for (;;) {
      const auto correlation = ++correlation_;
      auto hello = wire::make(wire::Kind::node_hello, 0, correlation,
                              std::make_tuple(host, static_cast<std::uint32_t>(cpu_count()), build_id,
                                              static_cast<std::int64_t>(self_pid())));
      (void)wire::send(socket_, hello, wire::actor_id(wire::coordinator_node, static_cast<std::uint64_t>(self_pid())),
                       nullptr, true);
      const auto deadline = Clock::now() + std::chrono::seconds(1);
      while (Clock::now() < deadline) {
        auto reply = receive(deadline);
        if (!reply) continue;
        if (reply->header.correlation != correlation) continue;  // an answer to an earlier try, or to a lost node
        if (reply->header.kind == wire::Kind::error) {
          auto [code, message] = reply->body_as<std::tuple<std::uint16_t, std::string>>();
          (void)code;
          std::fprintf(stderr, "mpx: node agent: the coordinator refused this node: %s\n", message.c_str());
          std::exit(1);
        }
        auto [node, session_id, heartbeat_ms, lost_ms] =
            reply->body_as<std::tuple<wire::NodeId, std::string, std::int64_t, std::int64_t>>();
        node_ = node;
        session_id_ = std::move(session_id);
        heartbeat_ = std::chrono::milliseconds(heartbeat_ms);
        lost_after_ = std::chrono::milliseconds(lost_ms);
        state().session.node = node;
        return true;
      }
      if (Clock::now() - since > give_up_after) return false;
    }
  }

  // Beats, starts and watches processes; returns once the coordinator is lost or says this node is.
  void serve() {
    auto heard = Clock::now();
    auto next_beat = Clock::now();
    // Any answer to a beat of this membership counts, not only to the latest: on a link whose round trip exceeds the
    // beat interval every answer comes after the next beat went out, and the coordinator is still there.
    const std::uint64_t first_beat = correlation_ + 1;
    std::uint64_t beat = 0;
    for (;;) {
      const auto now = Clock::now();
      if (now - heard > lost_after_) {
        std::fprintf(stderr, "mpx: node agent: no answer from the coordinator for %lld ms; stopping node %u's processes\n",
                     static_cast<long long>(lost_after_.count()), node_);
        return;
      }
      if (now >= next_beat) {
        beat = ++correlation_;
        auto heartbeat = wire::make(wire::Kind::node_heartbeat, 0, beat, Object{});
        (void)wire::send(socket_, heartbeat, self_actor(), nullptr, true);  // a full pipe: the silence will tell
        next_beat = now + heartbeat_;
      }
      std::vector<zmq::pollitem_t> items{{socket_.handle(), 0, ZMQ_POLLIN, 0}};
      std::vector<std::uint32_t> pids;
      for (const auto& [pid, child] : children_) {
        items.push_back({nullptr, child.status_fd >= 0 ? child.status_fd : child.pidfd, ZMQ_POLLIN, 0});
        pids.push_back(pid);
      }
      const std::size_t joining_items = items.size();
      auto wake = next_beat;
      for (const auto& [pid, j] : joining_) {
        items.push_back({nullptr, j.ready_fd, ZMQ_POLLIN, 0});
        wake = std::min(wake, j.deadline);
      }
      relay_.add_poll_items(items);
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake - Clock::now());
      try {
        zmq::poll(items.data(), items.size(), std::max(wait, std::chrono::milliseconds(0)));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
      check_joining();  // first: a program that joined and ended at once has joined
      for (std::size_t i = 1; i < joining_items; ++i) {
        if (items[i].revents != 0) ended(pids[i - 1]);
      }
      relay_.serve(items);
      report_drained_exits();
      while (auto message = wire::recv(socket_, nullptr, true)) {
        switch (message->header.kind) {
          case wire::Kind::ok:
            if (is_beat(message->header.correlation, first_beat, beat)) heard = Clock::now();
            break;
          case wire::Kind::error:
            if (is_beat(message->header.correlation, first_beat, beat)) {
              std::fprintf(stderr, "mpx: node agent: the coordinator declared node %u lost; stopping its processes\n",
                           node_);
              return;
            }
            break;
          case wire::Kind::node_launch: launch(*message); break;
          case wire::Kind::node_shutdown: {
            stop_children();
            relay_.close();
            auto ok = wire::make_reply(message->header, wire::Kind::ok, encode(Object{}));
            (void)wire::send(socket_, ok, self_actor(), nullptr, true);
            // What was sent is in ZeroMQ's I/O thread: closing with a linger and then ending the context waits (that
            // long at most) until it has left, so the coordinator's wait for this answer ends at once.
            socket_.set(zmq::sockopt::linger, 1000);
            socket_.close();
            context().close();
            std::exit(0);
          }
          case wire::Kind::node_watch: watch(std::get<0>(message->body_as<std::tuple<std::uint32_t>>())); break;
          case wire::Kind::node_signal: {
            auto [pid, number] = message->body_as<std::tuple<std::uint32_t, std::int32_t>>();
            if (auto it = children_.find(pid); it != children_.end() && it->second.pidfd >= 0) {
              (void)::syscall(SYS_pidfd_send_signal, it->second.pidfd, number, nullptr, 0);
            }
            break;
          }
          default: break;  // nothing else is sent to an agent
        }
      }
    }
  }

  // Whether a reply's correlation is a beat of the current membership: beats are numbered from first_beat on (hellos
  // and beats share the counter, so a late answer to an earlier membership's beat is below it).
  bool is_beat(std::uint64_t correlation, std::uint64_t first_beat, std::uint64_t last_beat) const {
    return last_beat != 0 && correlation >= first_beat && correlation <= last_beat;
  }

  std::optional<wire::Envelope> receive(Clock::time_point deadline) {
    if (auto message = wire::recv(socket_, nullptr, true)) return message;
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    try {
      zmq::poll(&item, 1, std::max(left, std::chrono::milliseconds(0)));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    return wire::recv(socket_, nullptr, true);
  }

  void post(wire::Envelope message) { (void)wire::send(socket_, message, self_actor(), nullptr, true); }

  void launch(wire::Envelope& push) {
    auto [node, ticket] = push.body_as<std::tuple<wire::NodeId, std::uint64_t>>();
    std::uint32_t pid = 0;
    std::string error;
    try {
      if (node != node_ || push.body.size() != 2) throw ProtocolError("mpx: a launch for another node");
      auto spec = decode<LaunchSpec>(std::string_view(push.body[1].data<char>(), push.body[1].size()));
      const auto& session = state().session;
      spec.session_id = session_id_;
      spec.session_directory = session.directory;
      spec.coordinator_endpoint = endpoint_;
      spec.forkserver_path = session.forkserver_path;
      spec.keys = keys_;
      spec.parent_pid = self_pid();  // the process it ends with: this agent
      spec.root_pid = self_pid();
      spec.node = node_;
      spec.method = static_cast<std::uint8_t>(StartMethod::forkserver);
      if (!spec.exec.empty()) return start_exec(spec, ticket);
      const auto launched = launch_forkserver(spec);
      pid = static_cast<std::uint32_t>(launched.pid);
      children_[pid] = Child{launched.pidfd, launched.status_fd};
    } catch (const std::exception& e) {
      error = e.what();
    }
    post(wire::make(wire::Kind::node_launched, 0, 0, std::make_tuple(ticket, pid, error)));
  }

  // A topology's exec actor: its program, started by this agent as a topology launcher starts one (join_environment),
  // which answers the launch once it has joined the session, or says why it could not.
  void start_exec(const LaunchSpec& spec, std::uint64_t ticket) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "mpx: pipe2");
    pid_t pid = 0;
    try {
      pid = spawn_program(spec.exec.front(), spec.exec, join_environment(spec, ready[1]), ready[1]);
    } catch (...) {
      ::close(ready[0]);
      ::close(ready[1]);
      throw;
    }
    ::close(ready[1]);
    children_[static_cast<std::uint32_t>(pid)] = Child{pidfd_open(pid), -1, true, false};
    joining_[static_cast<std::uint32_t>(pid)] =
        Joining{ticket, ready[0], Clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(spec.ready_timeout_ms, 0))};
  }

  // Answers the launches of exec actors that joined, and of those that ended or ran out of time first (stopped,
  // their ends unreported).
  void check_joining() {
    for (auto it = joining_.begin(); it != joining_.end();) {
      const auto pid = it->first;
      Joining& j = it->second;
      pollfd ready{j.ready_fd, POLLIN, 0};
      const bool readable = ::poll(&ready, 1, 0) == 1;
      char byte = 0;
      const bool joined = readable && ::read(j.ready_fd, &byte, 1) == 1;
      std::string error;
      if (!joined) {
        if (readable) {
          error = "its program ended, or closed MPX_READY_FD, before it joined the session";
        } else if (Clock::now() >= j.deadline) {
          error = "its program did not join the session within its ready_timeout";
        } else {
          ++it;
          continue;
        }
        if (auto child = children_.find(pid); child != children_.end()) {
          child->second.silent = true;
          (void)::syscall(SYS_pidfd_send_signal, child->second.pidfd, SIGKILL, nullptr, 0);
        }
      }
      ::close(j.ready_fd);
      post(wire::make(wire::Kind::node_launched, 0, 0, std::make_tuple(j.ticket, joined ? pid : 0u, error)));
      it = joining_.erase(it);
    }
  }

  void watch(std::uint32_t pid) {
    if (children_.count(pid)) return;  // its own: watched from its launch
    const int fd = pidfd_open(static_cast<pid_t>(pid));
    if (fd < 0) {
      exited(pid, Object{});
      return;
    }
    children_[pid] = Child{fd, -1};
  }

  void ended(std::uint32_t pid) {
    auto it = children_.find(pid);
    Child& child = it->second;
    std::optional<int> code;
    if (child.spawned) code = reap_child(child.pidfd);
    if (child.status_fd >= 0) {
      code = read_forkserver_status(child.status_fd);
      ::close(child.status_fd);
      child.status_fd = -1;
      if (!code && child.pidfd >= 0) return;  // the forkserver died first: its pidfd says when it ends
    }
    if (child.pidfd >= 0) ::close(child.pidfd);
    const bool silent = child.silent;
    children_.erase(it);
    if (!silent) exited(pid, code ? Object(static_cast<std::int64_t>(*code)) : Object{});
  }

  // Reported once what it wrote through the relay was handled: its last posts count before its death, as on the
  // coordinator's own host.
  void exited(std::uint32_t pid, Object code) {
    exits_[pid] = std::move(code);
    relay_.drain(static_cast<pid_t>(pid));
    report_drained_exits();
  }

  void report_drained_exits() {
    for (auto it = exits_.begin(); it != exits_.end();) {
      if (!relay_.drained(static_cast<pid_t>(it->first))) {
        ++it;
        continue;
      }
      post(wire::make(wire::Kind::node_exited, 0, 0, std::make_tuple(it->first, it->second)));
      it = exits_.erase(it);
    }
  }

  // Stops every process of this node: no process runs on once the coordinator counts it dead.
  void stop_children() {
    for (auto& [pid, child] : children_) {
      if (child.pidfd >= 0) {
        (void)::syscall(SYS_pidfd_send_signal, child.pidfd, SIGKILL, nullptr, 0);
        if (child.spawned) (void)reap_child(child.pidfd);  // its own: a long-lived agent leaves no zombies
        ::close(child.pidfd);
      }
      if (child.status_fd >= 0) ::close(child.status_fd);
    }
    children_.clear();
    for (auto& [pid, j] : joining_) ::close(j.ready_fd);
    joining_.clear();
  }

  std::string endpoint_, keys_;
  zmq::socket_t socket_;
  std::uint64_t correlation_ = 0;
  wire::NodeId node_ = 0;
  std::string session_id_;
  std::chrono::milliseconds heartbeat_{250}, lost_after_{2000};
  std::map<std::uint32_t, Child> children_;
  std::map<std::uint32_t, Joining> joining_;  // exec actors not joined yet, by pid
  NodeRelay relay_;
  std::map<std::uint32_t, Object> exits_;  // ended processes, reported once the relay has drained them
};

std::string argument_after(const std::vector<std::string>& argv, std::string_view flag) {
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == flag && i + 1 < argv.size()) return argv[i + 1];
    if (argv[i].starts_with(std::string(flag) + "=")) return argv[i].substr(flag.size() + 1);
  }
  return {};
}

}  // namespace

std::optional<NodeMode> node_mode(const std::vector<std::string>& argv) {
  std::string endpoint = argument_after(argv, node_flag);
  if (endpoint.empty()) {
    const char* v = std::getenv(node_variable);
    if (v == nullptr || *v == '\0') return std::nullopt;
    endpoint = v;
  }
  std::string keys = argument_after(argv, keys_flag);
  if (keys.empty()) keys = keys_directory();
  return NodeMode{std::move(endpoint), std::move(keys)};
}

void run_node_agent(const NodeMode& mode) {
  try {
    if (wire::transport_of(mode.endpoint) != wire::Transport::tcp) {
      throw ValueError("mpx: a node joins a coordinator's tcp:// endpoint, not '" + mode.endpoint + "'");
    }
    auto& st = state();
    st.self = Identity{};
    st.self.pid = self_pid();
    st.self.name = "NodeAgent";
    st.root_pid = self_pid();
    st.session = create_session();
    st.session.coordinator_endpoint = mode.endpoint;
    if (!mode.keys.empty()) st.session.keys = checked_key_directory(mode.keys, KeyRole::client);
    require_keys_for(mode.endpoint);
    st.zygote_pid = start_zygote(st.session);  // before any thread: the forkserver of this host's processes
    st.initialized = true;
    Agent(mode.endpoint, st.session.keys).run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: node agent: %s\n", e.what());
    std::exit(1);
  }
}

}  // namespace mpx::runtime
