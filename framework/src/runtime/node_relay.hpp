// The node relay (PROTOCOL.md, "Nodes", the relay): a node agent's side door. A process on a node writes the packets
// of the coordinator's side door to a unix socket of its agent, which forwards them over a ZeroMQ connection of its
// own per process thread (tcp, CURVE, the node's key), and writes back what comes on it. So a post from a node is
// durable once written, as on the coordinator's host, without a round trip over the network per post: the process may
// die right after, the packet is the agent's to forward.
//
// A process's death is reported only after what it wrote has reached the coordinator: its connections are read to the
// end, forwarded, and closed by a ping whose answer proves the coordinator handled everything before it. The agent
// sends node_exited once drained(pid) says so, the same order as a death on the coordinator's own host.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <sys/types.h>
#include <zmq.hpp>

#include "wire/actor_id.hpp"

namespace mpx::runtime {

class NodeRelay {
 public:
  NodeRelay(zmq::context_t& context, std::string endpoint);
  ~NodeRelay();
  NodeRelay(const NodeRelay&) = delete;
  NodeRelay& operator=(const NodeRelay&) = delete;

  // Listens at `path` for the processes of node `node`. False (no relay: they talk to the coordinator directly) if
  // the socket cannot be made.
  bool open(const std::string& path, wire::NodeId node);
  // Closes every connection and the listening socket; what was not forwarded yet is dropped (the node is lost or ends).
  void close();

  // Appends what the relay waits on to `items` (before a poll), and does what the poll found ready (after it, with the
  // same items).
  void add_poll_items(std::vector<zmq::pollitem_t>& items);
  void serve(const std::vector<zmq::pollitem_t>& items);

  // Process `pid` is dead: forwards what it wrote and asks the coordinator to confirm it was handled.
  void drain(pid_t pid);
  // Whether nothing `pid` wrote is still on its way to the coordinator.
  bool drained(pid_t pid) const;

 private:
  struct Connection {
    int fd = -1;
    pid_t pid = 0;          // SO_PEERCRED: every packet on it must name this process as its sender
    zmq::socket_t dealer;   // its own connection to the coordinator, so its replies come back to it alone
    std::string in;         // bytes read and not forwarded yet
    std::string out;        // replies not written to the process yet
    bool held = false;      // the dealer took no more: reading waits until it does
    bool dead = false;      // its process died: read what it wrote, then end
    bool ended = false;     // nothing more comes from it (closed, or its process died and all was read)
    std::uint64_t closing = 0;  // the correlation of the ping that closes it, once sent
    std::size_t fd_item = 0;      // its places in the last poll's items (no_item: its fd was not there)
    std::size_t dealer_item = 0;
  };
  static constexpr std::size_t no_item = static_cast<std::size_t>(-1);
  void accept_all();
  // Reads, forwards, writes back; false once the connection is finished with (confirmed, broken or refused).
  bool serve(Connection& c);
  void read(Connection& c);
  bool forward(Connection& c);   // false: a malformed or forged packet; the connection is closed
  bool take_replies(Connection& c);  // false: the confirming pong came
  void send_closing_ping(Connection& c);

  zmq::context_t& context_;
  std::string endpoint_;
  std::string path_;
  int listen_fd_ = -1;
  wire::NodeId node_ = 0;
  std::map<std::uint64_t, Connection> connections_;
  std::uint64_t next_serial_ = 1;
  std::uint64_t next_ping_ = 0;
  std::size_t first_item_ = 0;
};

}  // namespace mpx::runtime
