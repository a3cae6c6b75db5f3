// mpx/mpx.hpp — everything: Python's multiprocessing, in C++, over message passing.
#pragma once

#include <mpx/version.hpp>  // first: it stops a pre-C++20 build with one clear message

#include <mpx/errors.hpp>
#include <mpx/executor.hpp>
#include <mpx/function.hpp>
#include <mpx/handle.hpp>
#include <mpx/manager.hpp>
#include <mpx/object.hpp>
#include <mpx/pipe.hpp>
#include <mpx/process.hpp>
#include <mpx/queue.hpp>
#include <mpx/shared.hpp>
#include <mpx/sync.hpp>
#include <mpx/trace.hpp>
#include <mpx/topology.hpp>
#include <mpx/pool.hpp>
