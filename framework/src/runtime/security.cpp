#include "runtime/security.hpp"

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>

#include <mpx/errors.hpp>

#include "runtime/runtime.hpp"
#include "wire/transport.hpp"

namespace mpx::runtime {

namespace {
constexpr const char* keys_variable = "MPX_KEYS";
constexpr const char* insecure_variable = "MPX_INSECURE_TCP";

bool insecure_tcp() {
  const char* v = std::getenv(insecure_variable);
  return v != nullptr && std::string_view(v) == "1";
}

std::string how_to_make_keys(std::string_view endpoint) {
  return "mpx: the coordinator endpoint " + std::string(endpoint) +
         " is tcp://, which mpx secures with CURVE keys, and this session has none: make a key directory with "
         "`mpx-run keygen DIR`, then run with MPX_KEYS=DIR (or call mpx::set_keys(\"DIR\"), or give the topology file "
         "[coordinator] keys = \"DIR\"). MPX_INSECURE_TCP=1 allows plain tcp on a trusted network, with a warning";
}

std::mutex keys_mutex;
std::map<std::string, wire::CurveClient> client_keys;  // by key directory: read once per process
pid_t warned_pid = 0;                                   // the process that warned about its insecure connection
}  // namespace

std::string keys_directory() {
  if (const auto& chosen = state().session.keys; !chosen.empty()) return chosen;
  const char* v = std::getenv(keys_variable);
  if (v == nullptr || *v == '\0') return {};
  // Absolute, so that a child told it (security.hpp) finds it from any working directory.
  std::error_code error;
  const auto absolute = std::filesystem::absolute(v, error);
  return error ? std::string(v) : absolute.string();
}

std::string checked_key_directory(const std::string& directory, KeyRole role) {
  if (directory.empty()) throw ValueError("mpx: the key directory is an empty path");
  std::error_code error;
  const auto absolute = std::filesystem::absolute(directory, error);
  if (error || !std::filesystem::is_directory(absolute, error)) {
    throw ValueError("mpx: the key directory '" + directory + "' is not a directory (make one with `mpx-run keygen " +
                     directory + "`)");
  }
  if (role == KeyRole::coordinator) (void)wire::load_curve_server(absolute.string());
  (void)wire::load_curve_client(absolute.string());
  return absolute.string();
}

void require_keys_for(std::string_view endpoint) {
  if (wire::transport_of(endpoint) != wire::Transport::tcp || !keys_directory().empty() || insecure_tcp()) return;
  throw ValueError(how_to_make_keys(endpoint));
}

std::optional<wire::CurveServer> coordinator_curve(std::string_view endpoint) {
  if (wire::transport_of(endpoint) != wire::Transport::tcp) return std::nullopt;
  require_keys_for(endpoint);
  if (const auto keys = keys_directory(); !keys.empty()) return wire::load_curve_server(keys);
  std::cerr << "mpx: WARNING: the coordinator binds " << endpoint << " without CURVE (" << insecure_variable
            << "=1): anyone who reaches that port can act as any process of this session\n";
  return std::nullopt;
}

void configure_connection(zmq::socket_ref socket, const std::string& endpoint) {
  wire::configure(socket, endpoint);
  if (wire::transport_of(endpoint) != wire::Transport::tcp || endpoint != state().session.coordinator_endpoint) return;
  require_keys_for(endpoint);
  std::lock_guard lock(keys_mutex);
  if (const auto keys = keys_directory(); !keys.empty()) {
    auto it = client_keys.find(keys);
    if (it == client_keys.end()) it = client_keys.emplace(keys, wire::load_curve_client(keys)).first;
    wire::make_curve_client(socket, it->second);
    return;
  }
  if (warned_pid == self_pid()) return;
  warned_pid = self_pid();
  std::cerr << "mpx: WARNING: process " << self_pid() << " connects to the coordinator at " << endpoint
            << " without CURVE (" << insecure_variable << "=1)\n";
}

}  // namespace mpx::runtime
