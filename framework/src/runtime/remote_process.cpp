#include "runtime/remote_process.hpp"

#include <chrono>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>

#include <fcntl.h>
#include <unistd.h>

#include <mpx/errors.hpp>

#include "runtime/channel.hpp"
#include "wire/envelope.hpp"

namespace mpx::runtime {

namespace {
// How long a start or a signal on another node may take before it is an error: the agent answers at once unless its
// host is unreachable, and then the node is declared lost well within this.
constexpr auto node_request_wait = std::chrono::milliseconds(30'000);

wire::Envelope request_ok(wire::Envelope request, std::optional<std::chrono::milliseconds> timeout) {
  auto reply = Channel::current().request(std::move(request), timeout);
  return std::move(expect_ok(reply));
}
}  // namespace

std::uint64_t launch_on_node(std::uint32_t node, const LaunchSpec& spec, std::chrono::milliseconds also_wait) {
  wire::Envelope request = wire::make(wire::Kind::node_launch, 0, 0, std::make_tuple(node, std::uint64_t{0}));
  request.body.emplace_back(wire::frame_of(encode(spec)));
  auto reply = request_ok(std::move(request), node_request_wait + also_wait);
  return std::get<0>(reply.body_as<std::tuple<std::uint64_t>>());
}

int watch_remote_end(std::uint64_t actor) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "mpx: pipe2");
  std::thread([actor, out = fds[1]] {
    std::int32_t code = node_lost_exitcode;  // no answer at all: the session is ending
    try {
      auto reply =
          request_ok(wire::make(wire::Kind::node_wait, 0, 0, std::make_tuple(actor, std::int64_t{-1})), std::nullopt);
      code = std::get<0>(reply.body_as<std::tuple<std::int32_t>>());
    } catch (const std::exception&) {
    }
    (void)!::write(out, &code, sizeof code);
    ::close(out);
  }).detach();
  return fds[0];
}

int read_remote_exit(int fd) {
  std::int32_t code = node_lost_exitcode;
  if (::read(fd, &code, sizeof code) != sizeof code) code = node_lost_exitcode;
  return code;
}

void signal_remote(std::uint64_t actor, int signal) {
  (void)request_ok(wire::make(wire::Kind::node_signal, 0, 0, std::make_tuple(actor, std::int32_t{signal})),
                   node_request_wait);
}

std::vector<wire::NodeRow> list_nodes(std::uint64_t alive_at_least, std::int64_t timeout_ms) {
  auto reply = request_ok(wire::make(wire::Kind::node_list, 0, 0, std::make_tuple(alive_at_least, timeout_ms)),
                          std::chrono::milliseconds(timeout_ms) + node_request_wait);
  return reply.body_as<std::vector<wire::NodeRow>>();
}

std::vector<std::uint32_t> alive_nodes() {
  std::vector<std::uint32_t> ids;
  for (const auto& row : list_nodes(0, 0)) {
    if (std::get<3>(row) == "alive") ids.push_back(std::get<0>(row));
  }
  return ids;
}

}  // namespace mpx::runtime
