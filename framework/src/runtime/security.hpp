// Keys for a tcp:// coordinator (PROTOCOL.md, "Security"): which key directory this process's session uses, the
// coordinator's CURVE server side, the client side of every connection to it, and the refusal of plain tcp.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "wire/curve.hpp"

namespace mpx::runtime {

// The session's key directory: the one set_keys chose (a child is told its parent's), else MPX_KEYS; empty if none.
std::string keys_directory();
// Who uses a key directory: a coordinator's needs both pairs and an allow list; a client's (a node's, made by
// `mpx-run keygen DIR --node NAME`) needs its own pair and the coordinator's public key.
enum class KeyRole { coordinator, client };
// The absolute path of `directory` once it has proved a whole key directory for `role`. Throws ValueError naming what
// is missing or malformed.
std::string checked_key_directory(const std::string& directory, KeyRole role = KeyRole::coordinator);
// Throws ValueError saying how to make keys if `endpoint` is tcp://, this session has no keys and MPX_INSECURE_TCP is
// not 1.
void require_keys_for(std::string_view endpoint);
// What a coordinator that binds `endpoint` uses: for tcp://, the CURVE server side read from the key directory; else,
// or in insecure mode (which warns on stderr), nullopt. Throws as require_keys_for does, or for a bad key directory.
std::optional<wire::CurveServer> coordinator_curve(std::string_view endpoint);
// wire::configure, and, on a socket that connects to this session's tcp:// coordinator, its CURVE client keys (or, in
// insecure mode, a warning on stderr, once per process). Throws as coordinator_curve does.
void configure_connection(zmq::socket_ref socket, const std::string& endpoint);

}  // namespace mpx::runtime
