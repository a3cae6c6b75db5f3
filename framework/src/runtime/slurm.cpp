#include "runtime/slurm.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mpx/errors.hpp>

#include "runtime/runtime.hpp"
#include "runtime/security.hpp"
#include "wire/curve.hpp"

namespace mpx::runtime {

namespace {
namespace fs = std::filesystem;

std::string variable(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

long number(const char* name) {
  const auto text = variable(name);
  char* end = nullptr;
  const long n = std::strtol(text.c_str(), &end, 10);
  return !text.empty() && end && *end == '\0' ? n : -1;
}

// The address of this host that traffic to `peer` leaves from: a UDP socket's connect sends nothing, but chooses the
// route and so the local address. A cluster host often has several networks; this is the one srun's host is on.
std::string address_facing(const std::string& peer) {
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  if (peer.empty() || ::inet_pton(AF_INET, peer.c_str(), &to.sin_addr) != 1) return "0.0.0.0";
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "0.0.0.0";
  sockaddr_in local{};
  socklen_t size = sizeof local;
  std::string address = "0.0.0.0";
  char text[INET_ADDRSTRLEN] = {0};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &size) == 0 &&
      ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text) != nullptr) {
    address = text;
  }
  ::close(fd);
  return address;
}
}  // namespace

std::optional<SlurmJob> slurm_job() {
  if (variable("MPX_SLURM") == "0") return std::nullopt;
  SlurmJob job;
  job.task = number("SLURM_PROCID");
  job.tasks = number("SLURM_NTASKS");
  job.keys = keys_directory();
  const auto id = variable("SLURM_JOB_ID");
  if (job.task < 0 || job.tasks < 2 || id.empty() || job.keys.empty()) return std::nullopt;
  job.step = id + "." + (variable("SLURM_STEP_ID").empty() ? "0" : variable("SLURM_STEP_ID"));
  job.srun_host = variable("SLURM_SRUN_COMM_HOST");
  if (job.srun_host.empty()) job.srun_host = variable("SLURM_LAUNCH_NODE_IPADDR");
  return job;
}

void prepare_slurm_coordinator(const SlurmJob& job) {
  // Keys left by an earlier step of the same number (a crashed run) would be refused: they are never overwritten.
  remove_slurm_files(job);
  for (long task = 1; task < job.tasks; ++task) wire::make_node_key_directory(job.keys, job.node_name(task));
  set_keys(job.keys);
  set_coordinator_endpoint("tcp://" + address_facing(job.srun_host) + ":*");
}

void publish_slurm_endpoint(const SlurmJob& job, const std::string& endpoint) {
  const std::string path = job.endpoint_file();
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << endpoint << "\n";
    if (!out.flush()) throw ValueError("mpx: cannot write the Slurm endpoint file '" + temporary + "'");
  }
  std::error_code error;
  fs::rename(temporary, path, error);
  if (error) throw ValueError("mpx: cannot write the Slurm endpoint file '" + path + "': " + error.message());
}

void remove_slurm_files(const SlurmJob& job) {
  std::error_code ignored;
  fs::remove(job.endpoint_file(), ignored);
  for (long task = 1; task < job.tasks; ++task) {
    fs::remove_all(fs::path(job.keys) / wire::nodes_directory / job.node_name(task), ignored);
    fs::remove(fs::path(job.keys) / wire::allowed_directory / (job.node_name(task) + ".key"), ignored);
  }
}

NodeMode slurm_node_mode(const SlurmJob& job, std::chrono::seconds timeout) {
  // Task 0 runs on another host: only the shared file system tells when it listens (inotify does not see another
  // host's writes on NFS), so this looks again every 20 ms, within the deadline.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string path = job.endpoint_file();
  for (;;) {
    std::ifstream in(path);
    std::string endpoint;
    if (in >> endpoint && endpoint.starts_with("tcp://")) {
      return NodeMode{endpoint, (fs::path(job.keys) / wire::nodes_directory / job.node_name(job.task)).string()};
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw TimeoutError("mpx: Slurm task " + std::to_string(job.task) + ": task 0 did not write " + path + " within " +
                         std::to_string(timeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace mpx::runtime
