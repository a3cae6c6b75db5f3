#include "topology/console.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <system_error>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace mpx::topology {

namespace {

void write_fully(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a closed terminal: there is no one left to tell
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

// Moves `from` onto `to` (a pipe's write end onto descriptor 1 or 2).
void replace_descriptor(int from, int to) {
  while (::dup2(from, to) < 0) {
    if (errno != EINTR) fail("mpx-run: dup2");
  }
}

// A partial line is held this long for its end before it is shown as it is.
constexpr int partial_line_wait_ms = 100;
// A line longer than this is shown in pieces.
constexpr std::size_t max_held_bytes = 64 * 1024;

}  // namespace

Console::Console(bool status_line) : status_line_(status_line) {
  if (!status_line_) return;
  std::fflush(stdout);
  std::fflush(stderr);
  out_fd_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  err_fd_ = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  int out[2], err[2];
  if (out_fd_ < 0 || err_fd_ < 0 || ::pipe2(out, O_CLOEXEC) != 0) fail("mpx-run: relaying the actors' output");
  if (::pipe2(err, O_CLOEXEC) != 0) fail("mpx-run: relaying the actors' output");
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) fail("mpx-run: eventfd");
  // dup2 clears close-on-exec on 1 and 2: every actor started from here on inherits the pipes.
  replace_descriptor(out[1], STDOUT_FILENO);
  replace_descriptor(err[1], STDERR_FILENO);
  ::close(out[1]);
  ::close(err[1]);
  out_pipe_ = out[0];
  err_pipe_ = err[0];
  ::fcntl(out_pipe_, F_SETFL, O_NONBLOCK);
  ::fcntl(err_pipe_, F_SETFL, O_NONBLOCK);
  relay_thread_ = std::thread([this] { relay(); });
}

Console::~Console() { close(); }

void Console::close() {
  if (!status_line_ || !relay_thread_.joinable()) return;
  std::fflush(stdout);
  std::fflush(stderr);
  // This process's write ends go; the actors' went with them (they have all ended), so the pipes hold all there is.
  replace_descriptor(out_fd_, STDOUT_FILENO);
  replace_descriptor(err_fd_, STDERR_FILENO);
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  relay_thread_.join();
  {
    std::lock_guard lock(mutex_);
    if (drawn_) write_fully(out_fd_, "\r\x1b[K");
    drawn_ = false;
    status_.clear();
    status_line_ = false;
  }
  ::close(out_pipe_);
  ::close(err_pipe_);
  ::close(wake_fd_);
  ::close(out_fd_);
  ::close(err_fd_);
  out_fd_ = STDOUT_FILENO;
  err_fd_ = STDERR_FILENO;
}

void Console::relay() {
  struct Stream {
    int pipe;
    int fd;
    std::string held;  // the start of a line whose end has not come yet
  } streams[] = {{out_pipe_, out_fd_, {}}, {err_pipe_, err_fd_, {}}};
  char buffer[16384];
  // Reads what `s` has now; passes on every complete line, and a partial one when `all` or when it grew too long.
  auto pump = [&](Stream& s, bool all) {
    for (;;) {
      const ssize_t n = ::read(s.pipe, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      s.held.append(buffer, static_cast<std::size_t>(n));
    }
    const auto end = s.held.rfind('\n');
    std::size_t upto = end == std::string::npos ? 0 : end + 1;
    if (all || s.held.size() > max_held_bytes) upto = s.held.size();
    if (upto == 0) return;
    write_through(s.fd, std::string_view(s.held).substr(0, upto));
    s.held.erase(0, upto);
  };
  for (;;) {
    pollfd fds[] = {{wake_fd_, POLLIN, 0}, {out_pipe_, POLLIN, 0}, {err_pipe_, POLLIN, 0}};
    const bool holding = !streams[0].held.empty() || !streams[1].held.empty();
    const int n = ::poll(fds, 3, holding ? partial_line_wait_ms : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents) {
      for (auto& s : streams) pump(s, true);
      return;
    }
    // Nothing more for a while: a partial line (a prompt, a progress dot) is shown as it is.
    for (auto& s : streams) pump(s, n == 0);
  }
}

void Console::write_through(int fd, std::string_view text) {
  std::lock_guard lock(mutex_);
  if (drawn_) {
    write_fully(out_fd_, "\r\x1b[K");
    drawn_ = false;
  }
  write_fully(fd, text);
  if (!text.empty()) mid_line_ = text.back() != '\n';
  draw_status();
}

void Console::draw_status() {
  if (!status_line_ || mid_line_ || status_.empty()) return;
  winsize size{};
  std::size_t width = 80;
  if (::ioctl(out_fd_, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) width = size.ws_col;
  // One column short of the width: a line that fills it would wrap, and "\r" would then clear only its last row.
  std::string line = status_.substr(0, width - 1);
  write_fully(out_fd_, "\r\x1b[K" + line);
  drawn_ = true;
}

void Console::event(const std::string& line) {
  // An event after a partial line starts on a line of its own.
  bool after_partial = false;
  {
    std::lock_guard lock(mutex_);
    after_partial = mid_line_;
  }
  write_through(err_fd_, (after_partial ? "\n" : "") + line + "\n");
}

void Console::status(const std::string& text) {
  if (!status_line_) {
    print(text);
    return;
  }
  std::lock_guard lock(mutex_);
  status_ = text;
  draw_status();
}

void Console::print(const std::string& text) { write_through(out_fd_, text); }

}  // namespace mpx::topology
