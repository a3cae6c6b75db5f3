// PEP 475 for every blocking wait in mpx. A signal whose handler returns interrupts the system call a thread is
// blocked in (EINTR: poll, futex and ZeroMQ's waits are never restarted, SA_RESTART or not). The wait is not over for
// that: it goes on with what is left of its timeout, so neither EINTR nor a ZeroMQ error about it ever reaches the
// caller, and a timed wait still ends at its deadline.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>

#include <poll.h>
#include <zmq.hpp>

namespace mpx::wire {

// Calls `wait(left_ms)` again while it reports an interruption (a negative result with errno EINTR), each time with
// what is left of `timeout_ms` (-1: no limit, and left_ms is -1 too). Returns the first other result.
template <class Wait>
int retry_interrupted(std::int64_t timeout_ms, Wait&& wait) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(timeout_ms, 0));
  int left = timeout_ms < 0 ? -1 : static_cast<int>(std::min<std::int64_t>(timeout_ms, INT_MAX));
  for (;;) {
    const int result = wait(left);
    if (result >= 0 || errno != EINTR) return result;
    if (timeout_ms >= 0) {
      const auto rest = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      left = static_cast<int>(std::clamp<std::int64_t>(rest, 0, INT_MAX));
    }
  }
}

// poll(2) through retry_interrupted: how many descriptors are ready, 0 once timeout_ms (-1: no limit) has passed.
// Throws std::system_error naming `what` on any other failure.
int poll(pollfd* fds, std::size_t count, std::int64_t timeout_ms, const char* what);
// zmq_poll through retry_interrupted (cppzmq's zmq::poll throws zmq::error_t on EINTR); other failures throw
// zmq::error_t.
int poll(zmq::pollitem_t* items, std::size_t count, std::int64_t timeout_ms);

// One frame through retry_interrupted: ZeroMQ may report EINTR even for a non-blocking recv or send, while it takes
// its own commands. False if it would block (dontwait); other failures throw zmq::error_t.
bool recv_frame(zmq::socket_ref socket, zmq::message_t& frame, zmq::recv_flags flags = zmq::recv_flags::none);
bool send_frame(zmq::socket_ref socket, zmq::message_t& frame, zmq::send_flags flags);

}  // namespace mpx::wire
