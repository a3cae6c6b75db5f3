#include <mpx/queue.hpp>

#include "api/call.hpp"

namespace mpx::detail {

QueueCore::QueueCore(std::size_t maxsize, bool joinable) : maxsize_(maxsize) {
  auto reply = call(wire::make(wire::Kind::queue_create, 0, 0,
                               std::make_tuple(static_cast<std::uint64_t>(maxsize), joinable)),
                    0);
  auto [id] = reply.body_as<std::tuple<std::uint64_t>>();
  ref_ = ObjectRef{id, coordinator_endpoint()};
}

void QueueCore::put_bytes(std::string item, bool block, const Timeout& timeout) {
  if (closed_) throw ValueError("mpx: Queue " + std::to_string(ref_.id) + " is closed");
  if (maxsize() == 0) {
    // Unbounded: nothing to wait for, so the item is handed over without a round trip. Order per producer holds,
    // because one channel delivers in order.
    wire::Envelope e;
    e.header.kind = wire::Kind::queue_put_posted;
    e.header.object = ref_.id;
    e.body.emplace_back(encode(Object{}));
    e.body.emplace_back(item.data(), item.size());
    post(std::move(e));
    return;
  }
  const auto wait = wait_ms(block, timeout);
  auto e = wire::make(wire::Kind::queue_put, ref_.id, 0, std::make_tuple(wait));
  e.body.emplace_back(item.data(), item.size());
  (void)call(std::move(e), wait);
}

std::string QueueCore::get_bytes(bool block, const Timeout& timeout) {
  const auto wait = wait_ms(block, timeout);
  auto reply = call(wire::make(wire::Kind::queue_get, ref_.id, 0, std::make_tuple(wait)), wait);
  if (reply.body.size() != 2) throw ProtocolError("mpx: a queue_get reply without its item");
  return std::string(static_cast<const char*>(reply.body[1].data()), reply.body[1].size());
}

std::size_t QueueCore::qsize() const {
  auto reply = call(wire::make(wire::Kind::queue_size, ref_.id, 0, Object{}), 0);
  auto [size, maxsize] = reply.body_as<std::tuple<std::uint64_t, std::uint64_t>>();
  maxsize_ = maxsize;
  return size;
}

std::size_t QueueCore::maxsize() const {
  if (maxsize_ == static_cast<std::size_t>(-1)) (void)qsize();
  return maxsize_;
}

bool QueueCore::full() const {
  const auto size = qsize();
  return maxsize_ != 0 && size >= maxsize_;
}

void QueueCore::task_done_core() { (void)call(wire::make(wire::Kind::queue_task_done, ref_.id, 0, Object{}), 0); }

bool QueueCore::join_core(const Timeout& timeout) {
  const auto wait = wait_ms(true, timeout);
  try {
    (void)call(wire::make(wire::Kind::queue_join, ref_.id, 0, std::make_tuple(wait)), wait);
    return true;
  } catch (const TimeoutError&) {
    return false;
  }
}

}  // namespace mpx::detail
