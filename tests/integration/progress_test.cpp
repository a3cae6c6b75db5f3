// Progress: the progress callback on imap, imap_unordered and starmap, and mpx::ProgressBar on a pipe (silent) and on
// a pseudo-terminal (count, total and rate drawn).
#include <catch2/catch.hpp>

#include <mpx/mpx.hpp>
#include <mpx/progress.hpp>

#include <chrono>
#include <cstddef>
#include <mutex>
#include <ranges>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pty.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }

// Records each (done, total) call.
struct Recorder {
  std::mutex mutex;
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  mpx::Progress callback() {
    return [this](std::size_t done, std::size_t total) {
      std::lock_guard lock(mutex);
      calls.emplace_back(done, total);
    };
  }
};

// Points stderr at `fd` for the scope, then puts it back.
class StderrTo {
 public:
  explicit StderrTo(int fd) : saved_(::dup(STDERR_FILENO)) { REQUIRE(::dup2(fd, STDERR_FILENO) == STDERR_FILENO); }
  ~StderrTo() {
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
  }
  StderrTo(const StderrTo&) = delete;
  StderrTo& operator=(const StderrTo&) = delete;

 private:
  int saved_;
};

// Everything readable on `fd` now (it must be non-blocking).
std::string drain(int fd) {
  std::string out;
  char buffer[4096];
  for (;;) {
    const auto n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace

TEST_CASE("imap, imap_unordered and starmap take a progress callback", "[progress]") {
  mpx::Pool pool(2);
  Recorder ordered;
  std::vector<int> ys;
  for (int y : pool.imap(square, std::views::iota(0, 10), 4, ordered.callback())) ys.push_back(y);
  CHECK(ys.size() == 10);
  // Chunks of 4, 4 and 2, counted as their results come in, against the input's size.
  CHECK(ordered.calls == std::vector<std::pair<std::size_t, std::size_t>>{{4, 10}, {8, 10}, {10, 10}});

  Recorder unordered;
  std::size_t count = 0;
  for (int y : pool.imap_unordered(square, std::vector<int>{1, 2, 3}, 1, unordered.callback())) count += y > 0;
  CHECK(count == 3);
  CHECK(unordered.calls == std::vector<std::pair<std::size_t, std::size_t>>{{1, 3}, {2, 3}, {3, 3}});

  // An input without a size: the total is 0 (unknown).
  Recorder unsized;
  auto evens = std::views::iota(0, 6) | std::views::filter([](int x) { return x % 2 == 0; });
  for (int y : pool.imap(square, evens, 1, unsized.callback())) (void)y;
  CHECK(unsized.calls.size() == 3);
  CHECK(unsized.calls.back() == std::pair<std::size_t, std::size_t>{3, 0});

  Recorder starred;
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}, {7, 8}};
  CHECK(pool.starmap(add, pairs, 2, starred.callback()) == std::vector<int>{3, 7, 11, 15});
  std::lock_guard lock(starred.mutex);
  REQUIRE(starred.calls.size() == 2);
  CHECK(starred.calls.back() == std::pair<std::size_t, std::size_t>{4, 4});
}

TEST_CASE("ProgressBar is silent when stderr is a pipe", "[progress]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
  {
    StderrTo redirected(fds[1]);
    mpx::Pool pool(2);
    CHECK(pool.map(square, std::views::iota(0, 20), 5, mpx::ProgressBar{"squares"}).size() == 20);
  }
  ::close(fds[1]);
  CHECK(drain(fds[0]).empty());
  ::close(fds[0]);
}

TEST_CASE("ProgressBar draws count, total and rate on a terminal", "[progress]") {
  int master = -1, slave = -1;
  REQUIRE(::openpty(&master, &slave, nullptr, nullptr, nullptr) == 0);
  REQUIRE(::fcntl(master, F_SETFL, O_NONBLOCK) == 0);
  std::string drawn;
  {
    StderrTo redirected(slave);
    mpx::Pool pool(2);
    mpx::ProgressBar bar{"squares"};
    std::vector<int> ys;
    for (int y : pool.imap(square, std::views::iota(0, 12), 3, bar)) ys.push_back(y);
    CHECK(ys.size() == 12);
  }
  ::close(slave);
  drawn = drain(master);
  ::close(master);
  INFO("drawn: " << drawn);
  CHECK(drawn.find("squares") != std::string::npos);
  CHECK(drawn.find("12/12") != std::string::npos);
  CHECK(drawn.find("100%") != std::string::npos);
  CHECK(drawn.find("/s") != std::string::npos);
  CHECK(drawn.find('\r') != std::string::npos);
}

TEST_CASE("ProgressBar's line: count, percentage, rate and time left", "[progress]") {
  mpx::ProgressBar bar{"job"};
  const std::string half = bar.line(50, 100, 10.0);
  CHECK(half.find("job [##########..........] 50/100  50% 5.0/s ETA 0:10") == 0);
  CHECK(bar.line(100, 100, 20.0).find("100/100 100% 5.0/s in 0:20") != std::string::npos);
  CHECK(bar.line(7, 0, 2.0) == "job 7 3.5/s");  // total unknown
}
