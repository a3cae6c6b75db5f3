// The actor side of a topology, for mpx::init: a program started as a `task` actor runs its function and exits.
#pragma once

namespace mpx::detail {

// In a process that joined a session as a task actor: runs the registered function as the whole life of the process
// (never returns). Anywhere else: does nothing.
void run_if_task_actor();

}  // namespace mpx::detail
