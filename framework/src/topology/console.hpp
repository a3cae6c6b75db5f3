// mpx-run's terminal: supervision events, the actors' own output and the live status, written so that none of them
// overwrites or splits another.
//
// With a status line (stdout is a terminal and --status-every is on), the status is one line kept last on the screen.
// The actors inherit stdout and stderr from mpx-run, so the console puts pseudo-terminals behind this process's
// descriptors 1 and 2 (pseudo-terminals, not pipes: the actors still see a terminal, so their output stays
// line-buffered and shows as it happens) and relays them line by line: before a line it clears the status line,
// after it redraws it. Nothing ever moves the cursor up, so nothing already printed is erased. Without a status
// line, everything is written as it comes.
#pragma once

#include <mutex>
#include <string>
#include <thread>

namespace mpx::topology {

class Console {
 public:
  explicit Console(bool status_line);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  bool has_status_line() const noexcept { return status_line_; }
  // One line (no newline) to stderr, whole.
  void event(const std::string& line);
  // With a status line: it becomes `line` (cut to the terminal's width). Without: `text` is written to stdout whole.
  void status(const std::string& text);
  // Text to stdout, whole.
  void print(const std::string& text);
  // Gives descriptors 1 and 2 back, relays what the actors wrote last and clears the status line. Idempotent.
  void close();

 private:
  struct Stream {
    int relay = -1;    // the master it reads
    int fd = -1;       // where its lines go
    std::string held;  // the start of a line whose end has not come yet
  };
  void relay();
  // Reads what `s` has now; passes on every complete line, and a partial one when `all` or when it grew too long.
  // Called with relay_mutex_ held.
  void pump(Stream& s, bool all);
  // Writes `text` to `fd`, clearing the status line first and redrawing it after when `text` ends a line.
  void write_through(int fd, std::string_view text);
  void draw_status();

  bool status_line_ = false;
  int out_fd_ = 1;  // where stdout and stderr really go (the terminal, with a status line)
  int err_fd_ = 2;
  int out_relay_ = -1;  // the masters of the pseudo-terminals now behind descriptors 1 and 2
  int err_relay_ = -1;
  int wake_fd_ = -1;
  std::thread relay_thread_;
  std::mutex relay_mutex_;  // the streams: read by the relay thread, and before each event
  Stream streams_[2];       // stdout, stderr

  std::mutex mutex_;
  std::string status_;
  bool drawn_ = false;     // the status line is on the screen
  bool mid_line_ = false;  // the last output did not end its line: the status line waits for its end
};

}  // namespace mpx::topology
