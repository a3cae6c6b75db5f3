#include "wire/transport.hpp"

#include <stdexcept>
#include <sys/un.h>

#include "wire/limits.hpp"

namespace mpx::wire {

Transport transport_of(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://")) return Transport::ipc;
  if (endpoint.starts_with("tcp://")) return Transport::tcp;
  if (endpoint.starts_with("inproc://")) return Transport::inproc;
  throw std::invalid_argument("mpx: endpoint '" + std::string(endpoint) +
                              "' has an unknown transport (expected ipc://, tcp:// or inproc://)");
}

std::string ipc_path(std::string_view endpoint) {
  if (transport_of(endpoint) != Transport::ipc) {
    throw std::invalid_argument("mpx: endpoint '" + std::string(endpoint) + "' is not ipc://");
  }
  std::string path(endpoint.substr(6));
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    throw std::invalid_argument("mpx: ipc path '" + path + "' is longer than a unix socket address allows (" +
                                std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes)");
  }
  return path;
}

void configure(zmq::socket_ref socket, std::string_view endpoint) {
  socket.set(zmq::sockopt::maxmsgsize, limits().max_message_bytes);
  socket.set(zmq::sockopt::linger, 1000);
  if (transport_of(endpoint) == Transport::tcp) {
    socket.set(zmq::sockopt::tcp_keepalive, 1);
    socket.set(zmq::sockopt::heartbeat_ivl, 1000);
    socket.set(zmq::sockopt::heartbeat_timeout, 5000);
  }
}

std::string bind(zmq::socket_ref socket, std::string_view endpoint) {
  if (transport_of(endpoint) == Transport::ipc) (void)ipc_path(endpoint);
  configure(socket, endpoint);
  socket.bind(std::string(endpoint));
  return socket.get(zmq::sockopt::last_endpoint);
}

}  // namespace mpx::wire
