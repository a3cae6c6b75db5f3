/// \file
/// mpx/start_method.hpp — how a child process starts, and how many a host runs at once. mpx/process.hpp includes it;
/// it stands alone because the runtime and topology floors need these words without the Process API.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <string_view>

#include <mpx/detail/export.hpp>

namespace mpx {

/// How a child process starts (Python's start methods): fork copies this process; spawn runs the executable again
/// (posix_spawn of /proc/self/exe); forkserver forks from a single-threaded zygote started in init().
enum class StartMethod { fork, spawn, forkserver };

MPX_API std::string_view to_string(StartMethod method) noexcept;  ///< "fork", "spawn" or "forkserver".
/// Parses "fork", "spawn" or "forkserver"; anything else throws std::invalid_argument naming the value.
MPX_API StartMethod parse_start_method(std::string_view name);

/// Number of CPUs this process may run on (the affinity mask), at least 1.
MPX_API int cpu_count();

}  // namespace mpx
