/// \file
/// mpx/mpx.hpp — everything: Python's multiprocessing, in C++, over message passing.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <mpx/errors.hpp>
#include <mpx/executor.hpp>
#include <mpx/function.hpp>
#include <mpx/handle.hpp>
#include <mpx/keys.hpp>
#include <mpx/manager.hpp>
#include <mpx/metrics.hpp>
#include <mpx/nodes.hpp>
#include <mpx/object.hpp>
#include <mpx/pipe.hpp>
#include <mpx/process.hpp>
#include <mpx/progress.hpp>
#include <mpx/queue.hpp>
#include <mpx/shared.hpp>
#include <mpx/sync.hpp>
#include <mpx/trace.hpp>
#include <mpx/topology.hpp>
#include <mpx/pool.hpp>

/// \namespace mpx
/// Python's multiprocessing and concurrent.futures.ProcessPoolExecutor in C++20: processes, pools, queues, pipes,
/// locks, shared memory and managers, as message protocols between a coordinator and OS processes. Names follow
/// Python's in snake_case; exceptions mirror Python's and derive from mpx::Error. Call mpx::init first in main.
