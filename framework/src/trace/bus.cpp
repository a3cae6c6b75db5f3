#include "trace/bus.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <time.h>
#include <unistd.h>
#include <msgpack.hpp>
#include <zmq.hpp>

#include <mpx/errors.hpp>

#include "trace/lane_ring.hpp"
#include "wire/kinds.hpp"

namespace mpx::trace {

namespace detail {
std::atomic<bool> active{false};
}

namespace {

// Body frames larger than this are not copied on the traced thread; the record shows their size instead.
constexpr std::size_t max_copied_frame = 64 * 1024;
// How often the sink thread looks at PUB subscriptions and writes a drop count that changed.
constexpr auto sink_tick = std::chrono::milliseconds(50);
// How often the sink drains the processes' trace rings while any exist: nothing wakes it when a process writes one,
// and a ring must not fill between two looks at the rates a queue's lane reaches (millions of items a second).
constexpr auto lane_tick = std::chrono::milliseconds(2);
// Bytes of trace ring per record the `queue:N` option buffers: a record without a body is 56.
constexpr std::uint64_t lane_ring_bytes_per_record = 64;
constexpr auto drops_interval = std::chrono::seconds(1);

// What the traced thread queues: raw fields only; naming and encoding happen on the sink thread.
struct Pending {
  enum class Type : std::uint8_t { message, gauge } type = Type::message;
  std::uint64_t ts_ns = 0;
  Direction direction = Direction::in;
  std::uint64_t from = 0, to = 0;
  std::uint16_t kind = 0;
  std::uint64_t object = 0;
  std::uint64_t correlation = 0;
  std::uint64_t size = 0;
  bool has_body = false;
  bool lane = false;
  std::vector<std::string> frames;  // copied body frames (bodies on only)
  std::string_view gauge_name;      // a literal
  std::int64_t value = 0;
};

std::uint64_t now_ns() noexcept { return wire::monotonic_ns(); }

std::int64_t wall_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string_view service_of(std::uint16_t kind) noexcept {
  if (kind >= 20 && kind < 40) return "queue";
  if (kind >= 40 && kind < 45) return "lock";
  if (kind >= 45 && kind < 50) return "semaphore";
  if (kind >= 50 && kind < 55) return "event";
  if (kind >= 55 && kind < 60) return "condition";
  if (kind >= 60 && kind < 70) return "barrier";
  if (kind >= 70 && kind < 90) return "pipe";
  if (kind >= 90 && kind < 120) return "pool";
  if (kind >= 120 && kind < 130) return "shm";
  if (kind >= 130 && kind < 160) return "manager";
  if (kind >= 160 && kind < 180) return "topology";
  if (kind >= 180 && kind < 200) return "trace";
  return {};
}

class Bus {
 public:
  void start(const Options& options) {
    stop();
    std::FILE* file = nullptr;
    if (!options.file.empty()) {
      file = std::fopen(options.file.c_str(), "wb");
      if (!file) throw Error("mpx: cannot open trace file " + options.file + ": " + std::strerror(errno));
    }
    auto context = std::make_unique<zmq::context_t>(1);
    std::optional<zmq::socket_t> pub;
    std::string pub_endpoint;
    if (!options.pub.empty()) {
      try {
        pub.emplace(*context, zmq::socket_type::xpub);
        pub->set(zmq::sockopt::sndhwm, options.hwm);
        pub->set(zmq::sockopt::xpub_verbose, 1);  // every subscriber's arrival, so each gets the actor table
        // A plain PUB drops silently at the high-water mark; with nodrop a full subscriber makes a dontwait send fail
        // instead, so the record is dropped here, where it is counted.
        pub->set(zmq::sockopt::xpub_nodrop, 1);
        pub->set(zmq::sockopt::linger, 200);      // a closing drop count still reaches live subscribers
        pub->bind(options.pub);
        pub_endpoint = pub->get(zmq::sockopt::last_endpoint);
      } catch (const zmq::error_t& e) {
        if (file) std::fclose(file);
        throw Error("mpx: cannot bind trace endpoint " + options.pub + ": " + e.what());
      }
    }
    std::lock_guard lock(mutex_);
    options_ = options;
    keep_.clear();
    if (!options.kinds.empty()) {
      keep_.assign(std::size_t{1} << 16, false);
      for (const auto& name : options.kinds) {
        if (auto kind = kind_number(name)) keep_[*kind] = true;  // parse() rejected unknown names
      }
    }
    body_limit_.store(options.body, std::memory_order_relaxed);
    spec_ = options.to_string();
    pub_endpoint_ = pub_endpoint;
    file_ = file;
    context_ = std::move(context);
    pub_ = std::move(pub);
    queue_.clear();
    recorded_ = 0;
    dropped_.store(0);
    lane_dropped_.store(0);
    pub_dropped_.store(0);
    stopping_ = false;
    running_ = true;
    // The coordinator is an actor of its own in every trace.
    actors_[coordinator_actor] = format::Actor{coordinator_actor, ::getpid(), "coordinator"};
    header_actors_.clear();
    for (const auto& [id, a] : actors_) header_actors_.push_back(a);
    new_actors_.clear();
    thread_ = std::thread([this] { sink(); });
    detail::active.store(true, std::memory_order_relaxed);
  }

  void stop() {
    detail::active.store(false, std::memory_order_relaxed);
    {
      std::lock_guard lock(mutex_);
      if (!running_) return;
      running_ = false;
      stopping_ = true;
      // Writers ask for a new ring from now on; the sink drains these once more, then removes them.
      for (auto& lane : lanes_) lane->ring->close();
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // The traced thread's whole cost when on: one lock, one push (or a drop), rarely a wake-up.
  void push(Pending&& p) noexcept {
    try {
      std::unique_lock lock(mutex_);
      if (!running_) return;
      // The kind filter, under the lock that start() sets it with; a filtered message is not a drop.
      if (p.type == Pending::Type::message && !keep_.empty() && !keep_[p.kind]) return;
      if (queue_.size() >= options_.queue) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      const bool was_empty = queue_.empty();
      queue_.push_back(std::move(p));
      ++recorded_;
      lock.unlock();
      // The sink drains the whole queue per wake-up, so only the first record of a batch needs to wake it.
      if (was_empty) wake_.notify_one();
    } catch (...) {
      dropped_.fetch_add(1, std::memory_order_relaxed);  // out of memory: a lost record, not a failed send
    }
  }

  bool bodies() const noexcept { return body_limit_.load(std::memory_order_relaxed) > 0; }

  std::optional<std::pair<std::string, std::uint64_t>> open_lane_ring(std::uint64_t actor, const std::string& name) {
    std::lock_guard lock(mutex_);
    if (!running_) return std::nullopt;
    const std::uint64_t token = shm::random_u64() | 1;
    const std::uint64_t capacity = options_.queue * lane_ring_bytes_per_record;
    const auto body_bytes = static_cast<std::uint32_t>(options_.body == 0 ? 0 : std::min(max_copied_frame, 2 * options_.body + 64));
    auto entry = std::make_shared<LaneEntry>();
    entry->actor = actor;
    try {
      entry->ring = LaneRing::create(name, token, capacity, body_bytes);
    } catch (const std::exception&) {
      return std::nullopt;  // no room: that process's lane operations go unrecorded, and it is told so
    }
    lanes_.push_back(std::move(entry));
    return std::make_pair(name, token);
  }

  void lane_owner_died(std::uint64_t actor) {
    std::lock_guard lock(mutex_);
    for (auto& lane : lanes_) {
      if (lane->actor == actor) lane->retired = true;
    }
  }

  void actor(std::uint64_t id, std::int64_t pid, std::string_view name) {
    std::lock_guard lock(mutex_);
    auto& a = actors_[id];
    a = format::Actor{id, pid, std::string(name)};
    if (running_) new_actors_.push_back(a);
  }

  void set_name(std::uint64_t id, std::string_view name) {
    std::lock_guard lock(mutex_);
    names_[id] = std::string(name);
    ++names_version_;
  }

  std::string name_of(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto it = names_.find(id);
    return it == names_.end() ? std::string() : it->second;
  }

  Status status() {
    std::lock_guard lock(mutex_);
    Status s;
    s.on = running_;
    s.spec = running_ ? spec_ : std::string();
    s.pub_endpoint = running_ ? pub_endpoint_ : std::string();
    s.recorded = recorded_;
    s.dropped = dropped_.load() + lane_dropped_.load();
    s.pub_dropped = pub_dropped_.load();
    return s;
  }

 private:
  void write(std::string_view payload, std::string& file_buffer) {
    if (file_) format::append_framed(file_buffer, payload);
    if (pub_) {
      // Never wait for a subscriber: a full pipe loses this record for that subscriber, and it is counted.
      if (!pub_->send(zmq::const_buffer(payload.data(), payload.size()), zmq::send_flags::dontwait)) {
        pub_dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  void write(const format::MessageView& m, std::string& file_buffer) {
    if (!pub_) {
      if (file_) format::append_framed(file_buffer, m);
      return;
    }
    encoded_.clear();
    format::append_framed(encoded_, m);
    write(std::string_view(encoded_).substr(4), file_buffer);  // without the frame's length, which write() adds
  }

  // The object's name in records; valid until the next call.
  const std::string& object_name(std::uint16_t kind, std::uint64_t id) {
    static const std::string none;
    if (id == 0) return none;
    if (auto it = sink_names_.find(id); it != sink_names_.end()) return it->second;
    // Replies carry `ok`, which names no service: remember the name a request gave the id (ids are session-unique).
    if (!service_of(kind).empty()) return sink_names_.emplace(id, default_object_name(kind, id)).first->second;
    unremembered_name_ = default_object_name(kind, id);
    return unremembered_name_;
  }

  // One traced message, encoded straight into the file's buffer (and sent to subscribers): the sink's work per
  // message, so it builds no Message and no string of its own (a body's JSON text excepted).
  void write_message(const Pending& p, std::string& file_buffer) {
    std::string body;
    if (p.has_body) {
      std::vector<std::string_view> views(p.frames.begin(), p.frames.end());
      body = format::body_json(views, options_.body);
    }
    const format::MessageView m{p.ts_ns,  p.direction, p.from, p.to, p.kind,
                                wire::kind_name(static_cast<wire::Kind>(p.kind)),
                                p.object, object_name(p.kind, p.object), p.correlation, p.size,
                                p.has_body ? &body : nullptr, p.lane};
    write(m, file_buffer);
  }

  struct LaneEntry {
    std::uint64_t actor = 0;
    std::unique_ptr<LaneRing> ring;
    bool retired = false;  // its owner died: drained once more, then removed
  };

  // Reads every record of the processes' trace rings into `lane_records_` (their fixed parts; bodies stay in the
  // rings until release_lanes()), each ring's a run in time order starting at `lane_runs_`, and adds each queue's latest depth to
  // `batch`: one sample per queue and drain, not one per operation, which at a ring's rates would double the sink's
  // work for a curve no finer than the drain interval shows. Returns how many records it read.
  std::size_t read_lanes(const std::vector<std::shared_ptr<LaneEntry>>& lanes, std::vector<Pending>& batch) {
    const bool keep_bodies = options_.body > 0;
    lane_records_.clear();
    lane_bodies_.clear();
    lane_runs_.clear();
    lane_ends_.clear();
    std::unordered_map<std::uint64_t, Pending> depths;  // by queue
    for (const auto& lane : lanes) {
      lane_runs_.push_back(lane_records_.size());
      lane_ends_.push_back(lane->ring->read([&](const LaneRecord& r, std::string_view body) {
        if (!keep_.empty() && !keep_[r.kind]) return;
        lane_records_.push_back(r);
        if (keep_bodies) lane_bodies_.push_back(body);
        Pending& depth = depths[r.object];
        if (r.ts_ns >= depth.ts_ns) {
          depth.type = Pending::Type::gauge;
          depth.ts_ns = r.ts_ns;
          depth.object = r.object;
          depth.gauge_name = "depth";
          depth.value = r.depth;
        }
      }));
    }
    for (auto& [queue, depth] : depths) batch.push_back(std::move(depth));
    return lane_records_.size();
  }

  void release_lanes(const std::vector<std::shared_ptr<LaneEntry>>& lanes) {
    for (std::size_t i = 0; i < lane_ends_.size(); ++i) lanes[i]->ring->release(lane_ends_[i]);
    lane_ends_.clear();
  }

  // One lane record, written as write_message() writes a queued one, straight from the ring's record.
  void write_lane(std::size_t i, std::string& file_buffer) {
    const LaneRecord& r = lane_records_[i];
    const auto direction = r.direction == 0 ? Direction::in : Direction::out;
    std::string body;
    if (!lane_bodies_.empty()) {
      if (!lane_bodies_[i].empty()) {
        body = format::body_json({lane_bodies_[i]}, options_.body);
      } else {  // the item was larger than a ring keeps: its size, as a body
        msgpack::sbuffer note;
        msgpack::pack(note, "<" + std::to_string(r.size) + " bytes>");
        body = format::body_json({std::string_view(note.data(), note.size())}, options_.body);
      }
    }
    const format::MessageView m{r.ts_ns,
                                direction,
                                direction == Direction::in ? r.actor : coordinator_actor,
                                direction == Direction::in ? coordinator_actor : r.actor,
                                r.kind,
                                wire::kind_name(static_cast<wire::Kind>(r.kind)),
                                r.object,
                                object_name(r.kind, r.object),
                                0,
                                r.size,
                                lane_bodies_.empty() ? nullptr : &body,
                                true};
    write(m, file_buffer);
  }

  void sink() {
    std::string file_buffer;
    if (file_) {
      format::FileHeader header;
      header.wall_ns = wall_ns();
      header.mono_ns = now_ns();
      header.actors = header_actors_;
      format::append_framed(file_buffer, format::encode(header));
    }
    // A vector kept from one round to the next: its room is reused, where a deque would allocate every few records.
    std::vector<Pending> batch;
    std::vector<std::shared_ptr<LaneEntry>> lanes, retired;
    std::uint64_t retired_dropped = 0;  // drops counted by rings already removed
    std::vector<format::Actor> actors;
    std::uint64_t names_version = 0;
    std::uint64_t last_drops = 0, last_pub_drops = 0;
    auto last_drops_check = std::chrono::steady_clock::now();
    auto last_flush = last_drops_check;
    bool stopping = false;
    while (!stopping) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, lanes_.empty() ? sink_tick : lane_tick, [this] { return !queue_.empty() || stopping_; });
        std::move(queue_.begin(), queue_.end(), std::back_inserter(batch));
        queue_.clear();
        actors.swap(new_actors_);
        stopping = stopping_;
        lanes.assign(lanes_.begin(), lanes_.end());
        if (stopping) {
          retired.swap(lanes_);
        } else {
          for (auto it = lanes_.begin(); it != lanes_.end();) {
            if ((*it)->retired) {
              retired.push_back(std::move(*it));
              it = lanes_.erase(it);
            } else {
              ++it;
            }
          }
        }
        if (names_version != names_version_) {
          for (const auto& [id, name] : names_) sink_names_[id] = name;
          names_version = names_version_;
        }
      }
      for (const auto& a : actors) write(format::encode(a), file_buffer);
      actors.clear();
      // The rings' records happened while the queued ones did: the file keeps time order within a batch. Ordered by
      // (time, position), which keeps equal times in order as a stable sort would, moving 16 bytes instead of a record;
      // positions past the batch are lane records. The queued records and each ring's are runs already in time order
      // (one writer each, or the bus's mutex), so merging the runs does it: sorting them all was a tenth of the sink's
      // work at a lane's rates.
      order_.clear();
      const std::size_t queued = batch.size();
      if (const auto read = read_lanes(lanes, batch); read != 0 || batch.size() != queued) {
        for (std::size_t i = 0; i < batch.size(); ++i) order_.emplace_back(batch[i].ts_ns, i);
        for (std::size_t i = 0; i < read; ++i) order_.emplace_back(lane_records_[i].ts_ns, batch.size() + i);
        // Where each run ends: the queued records, the depth samples, then each ring's records.
        runs_.assign({queued, batch.size()});
        for (std::size_t i = 1; i < lane_runs_.size(); ++i) runs_.push_back(batch.size() + lane_runs_[i]);
        runs_.push_back(order_.size());
        std::size_t begin = 0;
        for (const std::size_t end : runs_) {
          const auto start = order_.begin() + static_cast<std::ptrdiff_t>(begin);
          const auto last = order_.begin() + static_cast<std::ptrdiff_t>(end);
          if (!std::is_sorted(start, last)) std::sort(start, last);  // a run is in order unless clocks disagree
          std::inplace_merge(order_.begin(), start, last);
          begin = end;
        }
        std::lock_guard lock(mutex_);
        recorded_ += read + (batch.size() - queued);  // with the depth samples
      } else {
        for (std::size_t i = 0; i < batch.size(); ++i) order_.emplace_back(0, i);
      }
      std::uint64_t lane_dropped = retired_dropped;
      for (const auto& lane : lanes) lane_dropped += lane->ring->dropped();
      for (const auto& lane : retired) {
        retired_dropped += lane->ring->dropped();
        lane->ring->close();
        shm::unlink(lane->ring->name());
      }
      retired.clear();
      lane_dropped_.store(lane_dropped, std::memory_order_relaxed);
      if (pub_) answer_subscribers();
      for (const auto& [ts, index] : order_) {
        if (index >= batch.size()) {
          write_lane(index - batch.size(), file_buffer);
          if (file_buffer.size() >= (1u << 16)) flush(file_buffer, false);
          continue;
        }
        const Pending& p = batch[index];
        if (p.type == Pending::Type::gauge) {
          write(format::encode(format::Gauge{p.ts_ns, object_name(0, p.object), std::string(p.gauge_name), p.value}),
                file_buffer);
        } else {
          write_message(p, file_buffer);
        }
        if (file_buffer.size() >= (1u << 16)) flush(file_buffer, false);
      }
      batch.clear();
      release_lanes(lanes);  // the lane records are written: their room goes back to the writers
      const auto now = std::chrono::steady_clock::now();
      if (now - last_drops_check >= drops_interval || stopping) {
        last_drops_check = now;
        const auto d = dropped_.load() + lane_dropped_.load(), pd = pub_dropped_.load();
        // A periodic count only when it changed; the closing one always, so every trace ends with its total.
        if (d != last_drops || pd != last_pub_drops || stopping) {
          write(format::encode(format::Drops{now_ns(), d, pd}), file_buffer);
          last_drops = d;
          last_pub_drops = pd;
        }
      }
      const bool tick_flush = now - last_flush >= drops_interval;
      if (tick_flush) last_flush = now;
      flush(file_buffer, tick_flush || stopping);
    }
    if (file_) std::fclose(file_);
    file_ = nullptr;
    pub_.reset();
    context_.reset();
  }

  void flush(std::string& buffer, bool to_disk) {
    if (!file_) return;
    if (!buffer.empty()) {
      if (std::fwrite(buffer.data(), 1, buffer.size(), file_) != buffer.size()) {
        // A full disk: what did not fit is lost, and said so in the drop count.
        dropped_.fetch_add(1, std::memory_order_relaxed);
      }
      buffer.clear();
    }
    if (to_disk) std::fflush(file_);
  }

  // A new live subscriber gets the actor table, since it missed the actor records sent before it came.
  void answer_subscribers() {
    bool subscribed = false;
    zmq::message_t m;
    while (pub_->recv(m, zmq::recv_flags::dontwait)) {
      if (m.size() > 0 && static_cast<const unsigned char*>(m.data())[0] == 1) subscribed = true;
    }
    if (!subscribed) return;
    std::vector<format::Actor> all;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, a] : actors_) all.push_back(a);
    }
    // The table ends with the drop counts so far: a subscriber knows the table is complete when they come.
    std::vector<std::string> table;
    for (const auto& a : all) table.push_back(format::encode(a));
    table.push_back(format::encode(format::Drops{now_ns(), dropped_.load() + lane_dropped_.load(), pub_dropped_.load()}));
    for (const auto& record : table) {
      if (!pub_->send(zmq::buffer(record), zmq::send_flags::dontwait)) {
        pub_dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  // Guarded by mutex_:
  Options options_;
  std::string spec_, pub_endpoint_;
  std::deque<Pending> queue_;
  std::uint64_t recorded_ = 0;
  bool running_ = false;
  bool stopping_ = false;
  std::map<std::uint64_t, format::Actor> actors_;
  std::vector<format::Actor> new_actors_;
  std::unordered_map<std::uint64_t, std::string> names_;
  std::uint64_t names_version_ = 0;
  std::vector<bool> keep_;  // by kind number, when Options::kinds filters; empty: every kind (read by the sink too:
                            // set only while it is not running)
  std::vector<std::shared_ptr<LaneEntry>> lanes_;  // the processes' trace rings
  // Set by start(), then owned by the sink thread until it ends:
  std::FILE* file_ = nullptr;
  std::unique_ptr<zmq::context_t> context_;
  std::optional<zmq::socket_t> pub_;
  std::vector<format::Actor> header_actors_;
  std::unordered_map<std::uint64_t, std::string> sink_names_;
  std::string unremembered_name_;                          // object_name()'s answer when it keeps none
  std::string encoded_;                                    // write_message()'s record, for subscribers
  std::vector<std::pair<std::uint64_t, std::size_t>> order_;  // the batch's records by (time, position)
  std::vector<std::size_t> runs_;                               // where each run of `order_` ends
  std::vector<LaneRecord> lane_records_;                         // the rings' records of this round (fixed parts)
  std::vector<std::string_view> lane_bodies_;                    // their bodies, in the rings (bodies on only)
  std::vector<std::size_t> lane_runs_;                           // where each ring's records start in lane_records_
  std::vector<std::uint64_t> lane_ends_;                         // where each ring's read ended: released once written
  std::thread thread_;

  std::atomic<std::size_t> body_limit_{0};  // read by traced threads without the lock
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> pub_dropped_{0};
  std::atomic<std::uint64_t> lane_dropped_{0};  // records the processes' trace rings had no room for
};

Bus& bus() {
  static Bus* b = new Bus;  // never destroyed: a hook may run during static destruction
  return *b;
}

}  // namespace

std::string default_object_name(std::uint16_t kind, std::uint64_t object_id) {
  if (object_id == 0) return {};
  auto service = service_of(kind);
  return std::string(service.empty() ? std::string_view("object") : service) + ":" + std::to_string(object_id);
}

void record(Direction direction, const wire::Envelope& envelope, std::uint64_t from, std::uint64_t to) noexcept {
  auto& b = bus();
  Pending p;
  p.ts_ns = now_ns();
  p.direction = direction;
  p.from = from;
  p.to = to;
  p.kind = static_cast<std::uint16_t>(envelope.header.kind);
  p.object = envelope.header.object;
  p.correlation = envelope.header.correlation;
  for (const auto& f : envelope.body) p.size += f.size();
  if (b.bodies()) {
    try {
      p.has_body = true;
      p.frames.reserve(envelope.body.size());
      for (const auto& f : envelope.body) {
        if (f.size() <= max_copied_frame) {
          p.frames.emplace_back(static_cast<const char*>(f.data()), f.size());
        } else {
          // Too big to copy here: a msgpack string that says how big, which the sink shows as such.
          msgpack::sbuffer note;
          msgpack::pack(note, "<" + std::to_string(f.size()) + " bytes>");
          p.frames.emplace_back(note.data(), note.size());
        }
      }
    } catch (...) {
      p.has_body = false;
      p.frames.clear();
    }
  }
  b.push(std::move(p));
}

void gauge(std::uint64_t object, std::string_view name, std::int64_t value) noexcept {
  Pending p;
  p.type = Pending::Type::gauge;
  p.ts_ns = now_ns();
  p.object = object;
  p.gauge_name = name;
  p.value = value;
  bus().push(std::move(p));
}

void actor(std::uint64_t id, std::int64_t pid, std::string_view name) { bus().actor(id, pid, name); }

std::optional<std::pair<std::string, std::uint64_t>> open_lane_ring(std::uint64_t actor, const std::string& name) {
  return bus().open_lane_ring(actor, name);
}
void lane_ring_owner_died(std::uint64_t actor) { bus().lane_owner_died(actor); }

void start(const Options& options) { bus().start(options); }
void stop() { bus().stop(); }
Status current_status() { return bus().status(); }
void set_object_name(std::uint64_t object_id, std::string_view name) { bus().set_name(object_id, name); }

std::string given_object_name(std::uint64_t object_id) { return bus().name_of(object_id); }

}  // namespace mpx::trace
