// The direct path of a Pipe end in this process (PROTOCOL.md, "Pipes: the direct path"): a reading end listens on a
// unix socket of the session directory; a writing end, once the coordinator grants it an epoch, connects there and
// writes its messages straight into the kernel, as Python's Pipe does. The coordinator stays the authority for holders,
// EOF and readiness; this file only moves messages, and hands the end back to the relay path whenever in doubt.
//
// Messages go into a shared-memory ring (shm/pipe_ring.hpp) that the writer passes over the connection; the connection
// itself carries wake-ups, the messages that did not fit in the ring, and the epoch's end.
//
// Why a plain unix stream socket and not a ZeroMQ pair: a write lands in the kernel (or the shared ring) before send()
// returns, so a writer that exits (or is killed) right after sending loses nothing, and the reader learns that a
// writer is finished from the stream's own end, which comes after every byte it wrote. A ZeroMQ socket would hold the
// messages in its I/O thread.
#pragma once

#include <cstdint>
#include <string>
#include <thread>

#include <sys/types.h>

#include "services/pipe_direct.hpp"
#include "shm/pipe_ring.hpp"

namespace mpx::detail {

struct ConnectionState;

struct DirectReader {
  pid_t owner = 0;
  std::string path;  // the socket; its control file is next to it
  int listen_fd = -1;
  int conn_fd = -1;  // the connection of `epoch`, while `reading`
  services::direct::Control control;
  bool reading = false;
  std::uint64_t epoch = 0;
  std::uint64_t finished = 0;  // the latest epoch read to its end
  std::uint64_t received = 0;  // messages taken from `epoch`'s ring and connection
  shm::PipeRing ring;  // `epoch`'s ring, unless the writer could not make one (then all is on the connection)
  bool on_socket = false;      // the next messages are on the connection (the ring said so), not in the ring
  bool ended = false;          // the connection reached its end: what is left in the ring and buffer is the last
  bool broken = false;         // a length no writer of ours wrote: end the epoch like a dead writer's
  // Bytes read and not framed yet are buffer[start, end). The buffer only grows: resizing a std::string zero-fills
  // it, which for a 64 KiB read per message would cost more than the read.
  std::string buffer;
  std::size_t start = 0;
  std::size_t end = 0;
  void clear() noexcept { start = end = 0; }

  DirectReader();
  ~DirectReader();
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;
  // In a forked child: the descriptors are closed already (at fork); forget them without touching the parent's files.
  void forget();
};

struct DirectWriter {
  pid_t owner = 0;
  int fd = -1;
  services::direct::Control control;
  shm::PipeRing ring;
  bool on_socket = false;  // the ring was full: messages go on the connection until it has room again
  std::uint64_t epoch = 0;
  std::uint32_t ask_every = 1;  // relay sends between two requests for an epoch; doubles while refused
  std::uint32_t since_ask = 0;
  std::thread::id relay_thread;  // the thread of the last relayed send
  bool relayed = false;

  DirectWriter();
  ~DirectWriter();
  DirectWriter(const DirectWriter&) = delete;
  DirectWriter& operator=(const DirectWriter&) = delete;
  void forget();
};

enum class DirectRead { message, timeout, ended };

// Reader side. Listening starts with the first recv or poll of a readable end without a readiness mirror, in a
// session whose coordinator is on this host; false when this end does not (or cannot) listen.
bool direct_listen(ConnectionState& s);
// The coordinator answered pipe_direct: accept that epoch's connection.
void direct_enter(ConnectionState& s, std::uint64_t epoch);
// Frames what the connection has into s.unread, waiting up to `timeout_ms` (-1: no limit) for one message or the
// connection's end; at the end the epoch is over and the coordinator is told (pipe_direct_end).
DirectRead direct_read(ConnectionState& s, std::int64_t timeout_ms);
// Stops listening: first collects every message the writer has counted in the control word (they are in flight and
// will arrive without the writer doing anything more) and gives them, with anything else unread, back to the
// coordinator, where the end's other holders (or its next one) read them.
void direct_unlisten(ConnectionState& s);

// Writer side: sends `message` straight to the reader if an epoch is (or can now be) running; false: relay it.
bool direct_send(ConnectionState& s, const std::string& message);
// Ends this process's epoch on the end (hand-over, close): the reader reads to the stream's end, then back to relay.
void direct_stop_writing(ConnectionState& s);
// Records that a send went through the coordinator (only the thread that sent it may then start an epoch, so the
// relayed messages reach the coordinator before the request that starts it).
void direct_note_relayed(ConnectionState& s);

}  // namespace mpx::detail
