// mpx::ProgressBar (include/mpx/progress.hpp).
#include <mpx/progress.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>

#include <unistd.h>

namespace mpx {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto redraw_every = std::chrono::milliseconds(100);

std::string clock_time(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(text, sizeof text, "%lld:%02lld", s / 60, s % 60);
  }
  return text;
}

}  // namespace

struct ProgressBar::State {
  std::string label;
  bool terminal = false;
  Clock::time_point start = Clock::now();
  std::mutex mutex;  // a bar shared by callbacks on several threads draws whole lines
  Clock::time_point last_draw{};
  bool finished = false;
};

ProgressBar::ProgressBar(std::string label) : state_(std::make_shared<State>()) {
  state_->label = std::move(label);
  state_->terminal = ::isatty(STDERR_FILENO) == 1;
}

std::string ProgressBar::line(std::size_t done, std::size_t total, double elapsed_seconds) const {
  std::string out = state_->label.empty() ? std::string() : state_->label + " ";
  const double rate = elapsed_seconds > 0 ? static_cast<double>(done) / elapsed_seconds : 0.0;
  char text[160];
  if (total > 0) {
    constexpr int width = 20;
    const double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    const int filled = static_cast<int>(fraction * width);
    out += "[" + std::string(static_cast<std::size_t>(filled), '#') + std::string(static_cast<std::size_t>(width - filled), '.') + "] ";
    std::snprintf(text, sizeof text, "%zu/%zu %3.0f%% %.1f/s", done, total, fraction * 100, rate);
    out += text;
    if (done >= total) {
      out += " in " + clock_time(elapsed_seconds);
    } else if (rate > 0) {
      out += " ETA " + clock_time(static_cast<double>(total - done) / rate);
    }
  } else {
    std::snprintf(text, sizeof text, "%zu %.1f/s", done, rate);
    out += text;
  }
  return out;
}

void ProgressBar::operator()(std::size_t done, std::size_t total) const {
  auto& s = *state_;
  if (!s.terminal) return;
  std::lock_guard lock(s.mutex);
  const auto now = Clock::now();
  const bool last = total > 0 && done >= total;
  if (s.finished || (!last && now - s.last_draw < redraw_every)) return;
  s.last_draw = now;
  s.finished = last;
  // "\r" redraws in place; "\x1b[K" clears what a longer earlier line left behind.
  const std::string text =
      "\r" + line(done, total, std::chrono::duration<double>(now - s.start).count()) + "\x1b[K" + (last ? "\n" : "");
  // One write: a partial line from a racing writer on stderr is the worst case, never an error.
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, text.data(), text.size());
}

}  // namespace mpx
