/// \file
/// mpx/progress.hpp — mpx::ProgressBar: a ready-made terminal progress bar to pass as a map's progress callback.
///
///   pool.map(square, xs, std::nullopt, mpx::ProgressBar{"squares"});
///   for (auto y : pool.imap(square, xs, 1, mpx::ProgressBar{"squares"})) ...
///
/// It draws one line on stderr, redrawn in place: the label, done/total, the percentage, the rate (items per second
/// since the bar was made) and the time left. It redraws at most ten times a second and ends the line once
/// done == total. When stderr is not a terminal (a pipe, a file, a CI log) it writes nothing at all.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <cstddef>
#include <memory>
#include <string>

namespace mpx {

/// A terminal progress bar for a map's progress callback: count, percentage, rate and time left on stderr; silent
/// when stderr is not a terminal.
class MPX_API ProgressBar {
 public:
  /// A bar whose line starts with `label`; its rate counts from now.
  explicit ProgressBar(std::string label = {});

  /// The Progress callback: (items done, items in all); a total of 0 means unknown (no percentage, no time left).
  void operator()(std::size_t done, std::size_t total) const;

  /// The line the bar would draw for these counts after `elapsed_seconds` (without the leading carriage return).
  std::string line(std::size_t done, std::size_t total, double elapsed_seconds) const;

 private:
  struct State;
  std::shared_ptr<State> state_;  ///< shared: copies made by std::function draw one bar
};

}  ///< namespace mpx
