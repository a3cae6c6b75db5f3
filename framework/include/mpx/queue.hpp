/// \file
/// mpx/queue.hpp — Queue, SimpleQueue and JoinableQueue (Python's multiprocessing queues). A Queue object is a handle
/// that can be passed to other processes.
///
/// Where the items live: a Queue's or SimpleQueue's in a shared-memory ring that the coordinator creates (the lane),
/// which processes on the coordinator's host read and write themselves, under a lock the coordinator recovers if its
/// holder dies; processes elsewhere reach the same ring through the coordinator (tracing records the ring's operations
/// where they happen). A JoinableQueue's puts go into its ring the same way, but its gets go through the coordinator,
/// which records who took what (a taker that dies before task_done() gives it back). Differences from Python that come
/// with the ring:
///  - An unbounded queue can still fill: the ring holds at least 256 MiB of items (more if the wire's message limit is
///    larger). Then put() waits for room as on a bounded queue, with its timeout, and put_nowait() raises mpx::Full.
///  - The ring's size is address space in every process that uses the queue; the pages its deepest backlog touched stay
///    allocated in /dev/shm until the session ends.
///  - As in Python, an item being got by a process that is killed is lost with it; an item whose put was cut short by a
///    kill is not in the queue; nothing is ever got twice. qsize() is exact.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>

#include <mpx/handle.hpp>

namespace mpx {

/// What a queue is made with: `mpx::Queue<int> jobs({.maxsize = 256, .name = "jobs"});`
struct QueueOptions {
  std::size_t maxsize = 0;  ///< items; 0: unbounded
  std::string name;         ///< the queue's name in traces (`queue:jobs`, not `queue:7`); empty: its id
};

namespace detail {

// The compiled side of every queue: items travel as encoded bytes.
class MPX_API QueueCore : public Handle {
 public:
  void put_bytes(std::string item, bool block, const Timeout& timeout);
  std::string get_bytes(bool block, const Timeout& timeout);
  // The same, in a buffer of the calling thread's that the next get on this thread reuses.
  std::string_view get_view(bool block, const Timeout& timeout);
  std::size_t qsize() const;
  std::size_t maxsize() const;
  // Raises mpx::ValueError on a closed handle that was used (Python's Queue closes its reader only once a put started
  // its feeder thread).
  bool empty() const { return empty_if_open(false); }
  bool full() const;
  // Python: this handle will put and get no more; later puts and gets through it raise ValueError at once. Other
  // handles (copies made before, handles in other processes) are unaffected.
  void close() { closed_ = true; }
  // Python's feeder-thread controls. mpx has no feeder thread (put hands the item over before it returns), so there
  // is nothing to join or cancel.
  void join_thread() const {}
  void cancel_join_thread() const {}

 protected:
  QueueCore(const QueueOptions& options, bool joinable);
  QueueCore(adopt_t, ObjectRef ref) : Handle(std::move(ref)) {}
  void task_done_core();
  bool join_core(const Timeout& timeout);
  bool empty_if_open(bool even_if_unused) const;

  // How get() turns the item into its T: `into` decodes `item` into `*out` (an std::optional<T>) or throws.
  struct Decoder {
    void (*into)(std::string_view item, void* out);
    void* out;
    const char* expected;  // typeid(T).name()
  };
  template <class T>
  T get_as(bool block, const Timeout& timeout) {
    std::optional<T> value;
    get_decoded(block, timeout, Decoder{&decode_into<T>, &value, typeid(T).name()});
    return std::move(*value);
  }

 private:
  template <class T>
  static void decode_into(std::string_view item, void* out) {
    static_cast<std::optional<T>*>(out)->emplace(decode<T>(item));
  }
  // Gets the next item and decodes it. An item that does not decode is not lost: it goes back to the head of the queue
  // (with any items lent to this thread behind it), and mpx::SerializationError names the queue, the expected type
  // and what the item holds.
  void get_decoded(bool block, const Timeout& timeout, const Decoder& decoder);
  void get_into(std::string& out, bool block, const Timeout& timeout, const Decoder* decoder = nullptr);
  [[noreturn]] void refuse(const std::string& item, const Decoder& decoder, const char* why) const;
  void check_open() const;
  bool closed_ = false;
  bool used_ = false;  // a put or get went through this handle
  mutable std::size_t maxsize_ = static_cast<std::size_t>(-1);  // cached: fixed at creation
};

}  // namespace detail

/// Python's multiprocessing.Queue. T is any Serializable type; Queue<mpx::Object> holds mixed values.
/// A full queue raises mpx::Full, an empty one mpx::Empty. Items from one producer arrive in the order they were put.
/// It also has, from its (undocumented, internal) base: qsize() (items now in the queue), maxsize(), empty(), full(),
/// close() (this handle puts and gets no more: later calls raise mpx::ValueError; other handles are unaffected), and
/// join_thread() / cancel_join_thread(), which do nothing: mpx has no feeder thread.
template <Serializable T>
class Queue : public detail::QueueCore {
 public:
  /// Creates a queue at the coordinator; maxsize 0 means unbounded (Python: Queue(maxsize=0)).
  explicit Queue(std::size_t maxsize = 0) : QueueCore(QueueOptions{maxsize, {}}, false) {}
  /// Creates a queue with a maxsize and a name (the name shows in traces and metrics).
  explicit Queue(const QueueOptions& options) : QueueCore(options, false) {}
  /// A handle to the existing queue `ref` (what a decoded argument is).
  Queue(adopt_t, ObjectRef ref) : QueueCore(adopt, std::move(ref)) {}

  /// Python's put(item, block, timeout): waits for room up to `timeout` (forever if none), then raises mpx::Full; with
  /// block false it raises mpx::Full at once.
  /// Encodes now, so a serialization error is raised here, at the caller.
  void put(const T& item, bool block = true, const Timeout& timeout = std::nullopt) {
    put_bytes(encode(item), block, timeout);
  }
  /// Python's get(block, timeout): waits for an item up to `timeout` (forever if none), then raises mpx::Empty; with
  /// block false it raises mpx::Empty at once.
  /// An item that is not a T (another process put another type) raises mpx::SerializationError and stays at the head
  /// of the queue, for a getter of the right type (a Queue<mpx::Object> handle of the same queue reads anything).
  T get(bool block = true, const Timeout& timeout = std::nullopt) { return get_as<T>(block, timeout); }
  /// put(item, false): raises mpx::Full at once if the queue is full.
  void put_nowait(const T& item) { put(item, false); }
  T get_nowait() { return get(false); }  ///< get(false): raises mpx::Empty at once if the queue is empty.

 protected:
  /// For JoinableQueue: a queue that counts unfinished tasks.
  Queue(const QueueOptions& options, bool joinable) : QueueCore(options, joinable) {}
};

/// Python's multiprocessing.SimpleQueue: unbounded, with get, put, empty and close.
/// close() and qsize() come from its internal base.
template <Serializable T>
class SimpleQueue : public detail::QueueCore {
 public:
  SimpleQueue() : QueueCore(QueueOptions{}, false) {}  ///< Creates an unbounded queue at the coordinator.
  /// Creates an unbounded queue with a name (options.maxsize is ignored: a SimpleQueue is unbounded).
  explicit SimpleQueue(const QueueOptions& options) : QueueCore(QueueOptions{0, options.name}, false) {}
  SimpleQueue(adopt_t, ObjectRef ref) : QueueCore(adopt, std::move(ref)) {}  ///< A handle to the existing queue `ref`.
  /// Appends `item`; never blocks (the queue is unbounded).
  void put(const T& item) { put_bytes(encode(item), true, std::nullopt); }
  T get() { return get_as<T>(true, std::nullopt); }  ///< Waits for the next item, as long as it takes.
  /// Python's SimpleQueue.close() closes its reader at once: empty() raises mpx::ValueError after it, used or not.
  bool empty() const { return empty_if_open(true); }
};

/// Python's multiprocessing.JoinableQueue. Unlike Python, an item taken by a process that dies before task_done() is
/// put back at the head of the queue, so nothing is lost.
template <Serializable T>
class JoinableQueue : public Queue<T> {
 public:
  /// Creates a joinable queue; maxsize 0 means unbounded.
  explicit JoinableQueue(std::size_t maxsize = 0) : Queue<T>(QueueOptions{maxsize, {}}, true) {}
  /// Creates a joinable queue with a maxsize and a name.
  explicit JoinableQueue(const QueueOptions& options) : Queue<T>(options, true) {}
  /// A handle to the existing joinable queue `ref`.
  JoinableQueue(adopt_t, ObjectRef ref) : Queue<T>(adopt, std::move(ref)) {}
  /// Raises mpx::ValueError when called more times than there were items.
  void task_done() { this->task_done_core(); }
  ///@{
  /// Blocks until every item put has been task_done(). join(timeout) returns false if the timeout passed first.
  void join() { (void)this->join_core(std::nullopt); }
  [[nodiscard]] bool join(std::chrono::duration<double> timeout) { return this->join_core(timeout); }
  ///@}
};

}  // namespace mpx
