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
#include <termios.h>
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

// Moves `from` onto `to` (a relay terminal onto descriptor 1 or 2, or the real one back).
void replace_descriptor(int from, int to) {
  while (::dup2(from, to) < 0) {
    if (errno != EINTR) fail("mpx-run: dup2");
  }
}

// A pseudo-terminal for the actors' stdout or stderr: they see a terminal (so their stdio stays line-buffered and
// their output shows as it happens) of the real one's size. Raw: the bytes reach the real terminal unchanged.
// Returns {master, slave}.
std::pair<int, int> open_relay_terminal(int real) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) fail("mpx-run: posix_openpt");
  char name[128];
  if (::ptsname_r(master, name, sizeof name) != 0) fail("mpx-run: ptsname_r");
  const int slave = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) fail("mpx-run: opening a pseudo-terminal");
  termios mode{};
  if (::tcgetattr(slave, &mode) == 0) {
    ::cfmakeraw(&mode);
    (void)::tcsetattr(slave, TCSANOW, &mode);
  }
  winsize size{};
  if (::ioctl(real, TIOCGWINSZ, &size) == 0) (void)::ioctl(slave, TIOCSWINSZ, &size);
  return {master, slave};
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
  if (out_fd_ < 0 || err_fd_ < 0) fail("mpx-run: relaying the actors' output");
  const auto [out_master, out_slave] = open_relay_terminal(out_fd_);
  const auto [err_master, err_slave] = open_relay_terminal(out_fd_);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) fail("mpx-run: eventfd");
  // dup2 clears close-on-exec on 1 and 2: every actor started from here on inherits the relay's terminals.
  replace_descriptor(out_slave, STDOUT_FILENO);
  replace_descriptor(err_slave, STDERR_FILENO);
  ::close(out_slave);
  ::close(err_slave);
  out_relay_ = out_master;
  err_relay_ = err_master;
  ::fcntl(out_relay_, F_SETFL, O_NONBLOCK);
  ::fcntl(err_relay_, F_SETFL, O_NONBLOCK);
  streams_[0] = {out_relay_, out_fd_, {}};
  streams_[1] = {err_relay_, err_fd_, {}};
  relay_thread_ = std::thread([this] { relay(); });
}

Console::~Console() { close(); }

void Console::close() {
  if (!status_line_ || !relay_thread_.joinable()) return;
  std::fflush(stdout);
  std::fflush(stderr);
  // This process's write ends go; the actors' went with them (they have all ended), so the relays hold all there is.
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
  ::close(out_relay_);
  ::close(err_relay_);
  ::close(wake_fd_);
  ::close(out_fd_);
  ::close(err_fd_);
  out_fd_ = STDOUT_FILENO;
  err_fd_ = STDERR_FILENO;
}

void Console::pump(Stream& s, bool all) {
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(s.relay, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: that is all for now; EIO: no one holds its other end any more
    s.held.append(buffer, static_cast<std::size_t>(n));
  }
  const auto end = s.held.rfind('\n');
  std::size_t upto = end == std::string::npos ? 0 : end + 1;
  if (all || s.held.size() > max_held_bytes) upto = s.held.size();
  if (upto == 0) return;
  write_through(s.fd, std::string_view(s.held).substr(0, upto));
  s.held.erase(0, upto);
}

void Console::relay() {
  for (;;) {
    pollfd fds[] = {{wake_fd_, POLLIN, 0}, {out_relay_, POLLIN, 0}, {err_relay_, POLLIN, 0}};
    bool holding = false;
    {
      std::lock_guard lock(relay_mutex_);
      holding = !streams_[0].held.empty() || !streams_[1].held.empty();
    }
    const int n = ::poll(fds, 3, holding ? partial_line_wait_ms : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    std::lock_guard lock(relay_mutex_);
    if (fds[0].revents) {
      for (auto& s : streams_) pump(s, true);
      return;
    }
    // Nothing more for a while: a partial line (a prompt, a progress dot) is shown as it is.
    for (auto& s : streams_) pump(s, n == 0);
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
  // What the actors wrote before the event comes first: an actor's last words before the line saying it ended.
  if (relay_thread_.joinable()) {
    std::lock_guard lock(relay_mutex_);
    for (auto& s : streams_) pump(s, false);
  }
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
