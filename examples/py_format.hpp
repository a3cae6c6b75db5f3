// Python's print() formatting for the shared memory examples: floats as repr() writes them, lists as [a, b, c].
#pragma once

#include <charconv>
#include <cmath>
#include <string>
#include <vector>

// Python's repr of a float: the shortest text that reads back the same, with ".0" when it has no fraction.
inline std::string py_float(double d) {
  char buffer[400];
  const double magnitude = std::fabs(d);
  // repr() writes plain digits from 1e-4 up to 1e16, and exponents outside that range.
  const auto format = (magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16)) ? std::chars_format::fixed
                                                                                  : std::chars_format::scientific;
  auto end = std::to_chars(buffer, buffer + sizeof buffer, d, format).ptr;
  std::string s(buffer, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

inline std::string py_repr(double d) { return py_float(d); }
inline std::string py_repr(int i) { return std::to_string(i); }

// print(list): [0.0, 100.0, 200.0] or [0, -1, -2].
template <class T>
std::string py_list(const std::vector<T>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + py_repr(items[i]);
  return out + "]";
}
