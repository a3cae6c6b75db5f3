// Transport: the endpoint string chooses it. ipc:// on one host (the default, a socket file in the session
// directory), tcp:// across hosts. Every socket gets the same bounded options.
#pragma once

#include <string>
#include <string_view>

#include <zmq.hpp>

namespace mpx::wire {

enum class Transport { ipc, tcp, inproc };

// Throws std::invalid_argument naming the endpoint if it is neither ipc://, tcp:// nor inproc://.
Transport transport_of(std::string_view endpoint);

// Applies mpx's options: ZMQ_MAXMSGSIZE from the limits, linger, and (for tcp) keepalive.
void configure(zmq::socket_ref socket, std::string_view endpoint);

// Binds and returns the endpoint actually bound (tcp://127.0.0.1:* becomes the real port).
std::string bind(zmq::socket_ref socket, std::string_view endpoint);

// The path of an ipc:// endpoint; throws std::invalid_argument if the path does not fit a unix socket address.
std::string ipc_path(std::string_view endpoint);

}  // namespace mpx::wire
