#include "wire/interrupted.hpp"

#include <system_error>

namespace mpx::wire {

int poll(pollfd* fds, std::size_t count, std::int64_t timeout_ms, const char* what) {
  const int ready = retry_interrupted(timeout_ms, [&](int left) { return ::poll(fds, count, left); });
  if (ready < 0) throw std::system_error(errno, std::generic_category(), what);
  return ready;
}

int poll(zmq::pollitem_t* items, std::size_t count, std::int64_t timeout_ms) {
  const int ready =
      retry_interrupted(timeout_ms, [&](int left) { return zmq_poll(items, static_cast<int>(count), left); });
  if (ready < 0) throw zmq::error_t();
  return ready;
}

bool recv_frame(zmq::socket_ref socket, zmq::message_t& frame, zmq::recv_flags flags) {
  const int n = retry_interrupted(
      -1, [&](int) { return zmq_msg_recv(frame.handle(), socket.handle(), static_cast<int>(flags)); });
  if (n >= 0) return true;
  if (zmq_errno() == EAGAIN) return false;
  throw zmq::error_t();
}

bool send_frame(zmq::socket_ref socket, zmq::message_t& frame, zmq::send_flags flags) {
  const int n = retry_interrupted(
      -1, [&](int) { return zmq_msg_send(frame.handle(), socket.handle(), static_cast<int>(flags)); });
  if (n >= 0) return true;
  if (zmq_errno() == EAGAIN) return false;
  throw zmq::error_t();
}

}  // namespace mpx::wire
