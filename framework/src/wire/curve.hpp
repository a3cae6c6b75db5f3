// CURVE on a tcp:// coordinator (PROTOCOL.md, "Security"): ZeroMQ's Z85 key pairs in czmq's certificate files (what
// czmq's zcert_load and pyzmq's zmq.auth.load_certificate read), the key directory mpx reads them from, the socket
// options of either side, the ZAP exchange (RFC 27) that admits a client, and what a received message says about the
// connection it came on.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "wire/kinds.hpp"

namespace mpx::wire {

inline constexpr std::size_t curve_key_bytes = 32;  // a CURVE key; Z85 spells it in 40 characters
inline constexpr std::size_t z85_key_chars = 40;

// One certificate: `name.key` holds the public key and the metadata, `name.key_secret` both keys.
struct Certificate {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85; empty in a public certificate
  std::vector<std::pair<std::string, std::string>> metadata;  // the `metadata` section, in order
};

// A new key pair (zmq_curve_keypair) whose metadata names it `name`.
Certificate generate_certificate(const std::string& name);
// Reads a certificate file. Throws mpx::ValueError naming the file (and the line) if it cannot be read, is not one, or
// holds a key that is not 40 Z85 characters.
Certificate load_certificate(const std::string& path);
// Writes `base.key` (public, mode 0644) and, when the certificate has a secret key, `base.key_secret` (mode 0600).
// Throws mpx::ValueError naming the file it could not write.
void save_certificate(const std::string& base, const Certificate& certificate);
// The User-Id a certificate admits its holder as: its `name` metadata, else the file name without `.key`.
std::string certificate_name(const Certificate& certificate, const std::string& path);

// The key directory (framework/docs/distributed.md, "Keys and security"):
//   coordinator.key, coordinator.key_secret   the coordinator's pair (the CURVE server)
//   client.key, client.key_secret             the pair every process of the session connects with
//   allowed/*.key                             the public certificates the coordinator admits (its allow list)
inline constexpr std::string_view coordinator_certificate = "coordinator";
inline constexpr std::string_view client_certificate = "client";
inline constexpr std::string_view allowed_directory = "allowed";
inline constexpr std::string_view nodes_directory = "nodes";  // nodes/NAME/: a node's own key directory

// The coordinator's side: its secret key, and the clients it admits by binary public key, each with its User-Id.
struct CurveServer {
  std::string secret_key;  // Z85
  std::map<std::string, std::string> allowed;
  std::string own_user;  // the User-Id of the directory's client.key: the coordinator host's own processes
};
// A client's side: the coordinator's public key and its own pair (Z85).
struct CurveClient {
  std::string server_key, public_key, secret_key;
};

// Creates `directory` (mode 0700) with both pairs and client.key admitted in allowed/. Throws mpx::ValueError if it
// already holds any of those files (keys are never overwritten) or a file cannot be written.
void make_key_directory(const std::string& directory);
// Adds node `name` to the key directory made by make_key_directory: its own pair in `nodes/NAME/` (a key directory a
// node's processes connect with: client.key* and the coordinator's public key), and its public key in allowed/ as
// NAME.key. Its User-Id is NAME, which binds the node's messages to it. Throws mpx::ValueError for a name that is not
// plain, keys of that node already there, or a directory without coordinator.key.
void make_node_key_directory(const std::string& directory, const std::string& name);
// Read from a key directory. Each throws mpx::ValueError naming the file that is missing or malformed; the server's
// also when allowed/ admits nobody.
CurveServer load_curve_server(const std::string& directory);
CurveClient load_curve_client(const std::string& directory);

// Socket options: the server's before it binds, a client's before it connects.
void make_curve_server(zmq::socket_ref socket, const CurveServer& keys);
void make_curve_client(zmq::socket_ref socket, const CurveClient& keys);

// ZAP (RFC 27): libzmq asks the REP socket bound at `zap_endpoint` in the server's context whether to admit a
// connection. The coordinator's ROUTER asks in `zap_domain`.
inline constexpr const char* zap_endpoint = "inproc://zeromq.zap.01";
inline constexpr std::string_view zap_domain = "mpx";

// Answers the ZAP request waiting on `handler`: 200 with the allowed key's User-Id for a CURVE request of mpx's domain
// whose key is in `allowed`, else 400. Returns whether it admitted, or nullopt if no request was waiting.
std::optional<bool> serve_zap(zmq::socket_ref handler, const std::map<std::string, std::string>& allowed);

// Handshakes that fail before ZAP is asked (a client without CURVE, one with a wrong server key, a garbled
// handshake): `server` reports them to a monitor at `monitor_endpoint`, where a PAIR socket connects to read them.
// ZAP's own refusals are counted where they are answered.
void monitor_handshake_failures(zmq::socket_ref server, const std::string& monitor_endpoint);
// Reads every event waiting on `monitor`; returns how many were handshake failures.
std::size_t take_handshake_failures(zmq::socket_ref monitor);

// What a received frame says about the connection it came on: the User-Id ZAP gave it (empty if none), and whether it
// came over the network (tcp or ipc, where ZeroMQ records the peer's address) rather than inproc.
struct Credentials {
  std::string user_id;
  bool network = false;
};
Credentials credentials_of(const zmq::message_t& frame);

// The kinds a network peer that ZAP did not authenticate may send on a CURVE coordinator: those that only read the
// coordinator's counters. Everything else changes state (trace control included).
constexpr bool open_to_unauthenticated(Kind kind) noexcept {
  return kind == Kind::ping || kind == Kind::stats || kind == Kind::metrics;
}

}  // namespace mpx::wire
