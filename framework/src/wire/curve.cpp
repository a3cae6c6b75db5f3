#include "wire/curve.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpx/errors.hpp>

namespace mpx::wire {

namespace {
namespace fs = std::filesystem;

constexpr std::size_t max_certificate_bytes = 64 * 1024;  // a certificate is a few hundred bytes
constexpr std::string_view public_suffix = ".key";
constexpr std::string_view secret_suffix = ".key_secret";

// The binary key a Z85 key spells, or nullopt if it does not spell one.
std::optional<std::string> z85_to_binary(std::string_view z85) {
  if (z85.size() != z85_key_chars) return std::nullopt;
  std::string z(z85);
  std::string binary(curve_key_bytes, '\0');
  if (zmq_z85_decode(reinterpret_cast<std::uint8_t*>(binary.data()), z.c_str()) == nullptr) return std::nullopt;
  return binary;
}

std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return std::string(s.substr(first, last - first + 1));
}

// A ZPL value: quoted ("..." or '...') as czmq writes it, or bare as pyzmq writes metadata.
std::string unquote(std::string value) {
  if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front()) {
    return value.substr(1, value.size() - 2);
  }
  return value;
}

std::string banner(bool secret) {
  char when[32] = "";
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  if (::localtime_r(&now, &local) != nullptr) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &local);
  std::string b = "#   ****  Generated on " + std::string(when) + " by mpx  ****\n";
  if (secret) {
    b += "#   ZeroMQ CURVE **Secret** Certificate\n"
         "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n";
  } else {
    b += "#   ZeroMQ CURVE Public Certificate\n"
         "#   Exchange securely, or use a secure mechanism to verify the contents\n"
         "#   of this file after exchange.\n\n";
  }
  return b;
}

std::string certificate_text(const Certificate& c, bool secret) {
  std::string text = banner(secret) + "metadata\n";
  for (const auto& [key, value] : c.metadata) text += "    " + key + " = \"" + value + "\"\n";
  text += "curve\n    public-key = \"" + c.public_key + "\"\n";
  if (secret) text += "    secret-key = \"" + c.secret_key + "\"\n";
  return text;
}

// Creates `path` with `mode`, never replacing a file that is there.
void write_new_file(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    throw ValueError("mpx: cannot create the certificate file '" + path + "': " + std::strerror(errno) +
                     (errno == EEXIST ? " (keys are never overwritten: remove it first)" : ""));
  }
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      throw ValueError("mpx: cannot write the certificate file '" + path + "': " + std::strerror(error));
    }
    written += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

std::string file_in(const std::string& directory, std::string_view name, std::string_view suffix) {
  return (fs::path(directory) / (std::string(name) + std::string(suffix))).string();
}
}  // namespace

Certificate generate_certificate(const std::string& name) {
  char public_key[z85_key_chars + 1] = {};
  char secret_key[z85_key_chars + 1] = {};
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    throw ValueError(std::string("mpx: cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno()) +
                     " (is libzmq built with CURVE?)");
  }
  return Certificate{public_key, secret_key, {{"name", name}}};
}

Certificate load_certificate(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ValueError("mpx: cannot read the certificate file '" + path + "': " + std::strerror(errno));
  std::string text(max_certificate_bytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max_certificate_bytes) {
    throw ValueError("mpx: '" + path + "' is not a certificate (over " + std::to_string(max_certificate_bytes) +
                     " bytes)");
  }
  Certificate c;
  std::string section;
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    const std::string content = trim(line);
    if (content.empty() || content.front() == '#') continue;
    if (line.front() != ' ' && line.front() != '\t') {  // a section starts at the margin, its entries are indented
      section = content;
      continue;
    }
    const auto equals = content.find('=');
    if (equals == std::string::npos) continue;
    const std::string key = trim(std::string_view(content).substr(0, equals));
    std::string value = unquote(trim(std::string_view(content).substr(equals + 1)));
    if (section == "metadata") {
      c.metadata.emplace_back(key, std::move(value));
    } else if (section == "curve" && (key == "public-key" || key == "secret-key")) {
      if (!z85_to_binary(value)) {
        throw ValueError("mpx: " + path + ":" + std::to_string(number) + ": " + key +
                         " is not a CURVE key (40 Z85 characters)");
      }
      (key == "public-key" ? c.public_key : c.secret_key) = std::move(value);
    }
  }
  if (c.public_key.empty()) throw ValueError("mpx: '" + path + "' is not a certificate: it has no curve public-key");
  return c;
}

void save_certificate(const std::string& base, const Certificate& certificate) {
  write_new_file(base + std::string(public_suffix), certificate_text(certificate, false), 0644);
  if (!certificate.secret_key.empty()) {
    write_new_file(base + std::string(secret_suffix), certificate_text(certificate, true), 0600);
  }
}

std::string certificate_name(const Certificate& certificate, const std::string& path) {
  for (const auto& [key, value] : certificate.metadata) {
    if (key == "name" && !value.empty()) return value;
  }
  std::string stem = fs::path(path).filename().string();
  if (stem.ends_with(public_suffix)) stem.resize(stem.size() - public_suffix.size());
  return stem;
}

void make_key_directory(const std::string& directory) {
  std::error_code error;
  fs::create_directories(fs::path(directory) / allowed_directory, error);
  if (error) throw ValueError("mpx: cannot create the key directory '" + directory + "': " + error.message());
  ::chmod(directory.c_str(), 0700);
  for (const auto name : {coordinator_certificate, client_certificate}) {
    for (const auto suffix : {public_suffix, secret_suffix}) {
      const std::string path = file_in(directory, name, suffix);
      if (fs::exists(path)) {
        throw ValueError("mpx: the key directory '" + directory + "' already holds " + path +
                         " (keys are never overwritten: choose another directory or remove it)");
      }
    }
  }
  const auto coordinator = generate_certificate(std::string(coordinator_certificate));
  const auto client = generate_certificate(std::string(client_certificate));
  save_certificate(file_in(directory, coordinator_certificate, ""), coordinator);
  save_certificate(file_in(directory, client_certificate, ""), client);
  save_certificate((fs::path(directory) / allowed_directory / client_certificate).string(),
                   Certificate{client.public_key, {}, client.metadata});
}

void make_node_key_directory(const std::string& directory, const std::string& name) {
  const bool plain = !name.empty() && name.size() <= 64 &&
                     std::all_of(name.begin(), name.end(), [](unsigned char c) {
                       return std::isalnum(c) || c == '-' || c == '_' || c == '.';
                     }) &&
                     name.front() != '.';
  if (!plain || name == client_certificate || name == coordinator_certificate) {
    throw ValueError("mpx: '" + name + "' cannot name a node: use letters, digits, '-', '_' and '.', and not '" +
                     std::string(client_certificate) + "' or '" + std::string(coordinator_certificate) + "'");
  }
  const auto server = load_certificate(file_in(directory, coordinator_certificate, public_suffix));
  const fs::path node_directory = fs::path(directory) / nodes_directory / name;
  const std::string allowed_path = (fs::path(directory) / allowed_directory / name).string();
  if (fs::exists(node_directory) || fs::exists(allowed_path + std::string(public_suffix))) {
    throw ValueError("mpx: the key directory '" + directory + "' already has keys for node '" + name +
                     "' (keys are never overwritten)");
  }
  std::error_code error;
  fs::create_directories(node_directory, error);
  if (error) throw ValueError("mpx: cannot create '" + node_directory.string() + "': " + error.message());
  ::chmod((fs::path(directory) / nodes_directory).c_str(), 0700);
  ::chmod(node_directory.c_str(), 0700);
  // The node's own pair, under the file names every client directory uses; its name is the User-Id it is bound by.
  const auto client = generate_certificate(name);
  save_certificate(file_in(node_directory.string(), coordinator_certificate, ""), Certificate{server.public_key, {}, server.metadata});
  save_certificate(file_in(node_directory.string(), client_certificate, ""), client);
  save_certificate(allowed_path, Certificate{client.public_key, {}, client.metadata});
}

CurveServer load_curve_server(const std::string& directory) {
  const std::string secret_path = file_in(directory, coordinator_certificate, secret_suffix);
  const auto own = load_certificate(secret_path);
  if (own.secret_key.empty()) throw ValueError("mpx: '" + secret_path + "' has no curve secret-key");
  CurveServer server{own.secret_key, {}, {}};
  const fs::path allowed = fs::path(directory) / allowed_directory;
  std::error_code error;
  for (fs::directory_iterator it(allowed, error), end; !error && it != end; it.increment(error)) {
    const std::string path = it->path().string();
    if (!path.ends_with(public_suffix) || !it->is_regular_file()) continue;  // as czmq: *.key, never *.key_secret
    const auto certificate = load_certificate(path);
    server.allowed[*z85_to_binary(certificate.public_key)] = certificate_name(certificate, path);
  }
  if (error) throw ValueError("mpx: cannot read the allow list '" + allowed.string() + "': " + error.message());
  if (server.allowed.empty()) {
    throw ValueError("mpx: the allow list '" + allowed.string() + "' admits nobody: it holds no *.key certificate");
  }
  const std::string client_path = file_in(directory, client_certificate, public_suffix);
  if (fs::exists(client_path)) server.own_user = certificate_name(load_certificate(client_path), client_path);
  return server;
}

CurveClient load_curve_client(const std::string& directory) {
  const auto server = load_certificate(file_in(directory, coordinator_certificate, public_suffix));
  const std::string own_path = file_in(directory, client_certificate, secret_suffix);
  const auto own = load_certificate(own_path);
  if (own.secret_key.empty()) throw ValueError("mpx: '" + own_path + "' has no curve secret-key");
  return CurveClient{server.public_key, own.public_key, own.secret_key};
}

void make_curve_server(zmq::socket_ref socket, const CurveServer& keys) {
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  socket.set(zmq::sockopt::zap_domain, std::string(zap_domain));
}

void make_curve_client(zmq::socket_ref socket, const CurveClient& keys) {
  socket.set(zmq::sockopt::curve_serverkey, keys.server_key);
  socket.set(zmq::sockopt::curve_publickey, keys.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

std::optional<bool> serve_zap(zmq::socket_ref handler, const std::map<std::string, std::string>& allowed) {
  // [version, request id, domain, address, identity, mechanism, credentials...]
  constexpr std::size_t max_frames = 16;
  std::vector<zmq::message_t> frames;
  for (bool more = true; more;) {
    zmq::message_t frame;
    if (!handler.recv(frame, frames.empty() ? zmq::recv_flags::dontwait : zmq::recv_flags::none)) return std::nullopt;
    more = frame.more();
    if (frames.size() < max_frames) frames.push_back(std::move(frame));
  }
  const auto text = [&](std::size_t i) { return i < frames.size() ? frames[i].to_string() : std::string(); };
  std::string user_id;
  bool admitted = false;
  if (frames.size() == 7 && text(0) == "1.0" && text(2) == zap_domain && text(5) == "CURVE") {
    if (auto it = allowed.find(text(6)); it != allowed.end()) {
      admitted = true;
      user_id = it->second;
    }
  }
  // The reply: [version, request id, status code, status text, user id, metadata]
  const std::string reply[] = {"1.0", text(1), admitted ? "200" : "400",
                               admitted ? "OK" : "the client key is not in the coordinator's allow list", user_id};
  for (const auto& frame : reply) handler.send(zmq::buffer(frame), zmq::send_flags::sndmore);
  handler.send(zmq::message_t(), zmq::send_flags::none);
  return admitted;
}

void monitor_handshake_failures(zmq::socket_ref server, const std::string& monitor_endpoint) {
  if (zmq_socket_monitor(server.handle(), monitor_endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0) {
    throw zmq::error_t();
  }
}

std::size_t take_handshake_failures(zmq::socket_ref monitor) {
  std::size_t failures = 0;
  for (;;) {
    zmq::message_t event;  // [u16 event, u32 value][endpoint]
    if (!monitor.recv(event, zmq::recv_flags::dontwait)) return failures;
    bool more = event.more();
    while (more) {
      zmq::message_t rest;
      (void)monitor.recv(rest);
      more = rest.more();
    }
    std::uint16_t id = 0;
    if (event.size() >= sizeof id) std::memcpy(&id, event.data(), sizeof id);
    if (id & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)) ++failures;
  }
}

Credentials credentials_of(const zmq::message_t& frame) {
  auto* message = const_cast<zmq_msg_t*>(frame.handle());
  Credentials c;
  if (const char* user = zmq_msg_gets(message, "User-Id"); user != nullptr) c.user_id = user;
  c.network = zmq_msg_gets(message, "Peer-Address") != nullptr;
  return c;
}

}  // namespace mpx::wire
