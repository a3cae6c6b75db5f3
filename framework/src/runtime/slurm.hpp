// Launching with Slurm (framework/docs/distributed.md, "Slurm"): `srun -N3 ./app` with MPX_KEYS set runs main once.
// Task 0 becomes the coordinator's process; every other task becomes a node. They meet through files in the key
// directory, which a Slurm cluster shares between its hosts as it shares the program: task 0 makes a key for each
// other task, listens on the address of its host that faces srun's, and writes its endpoint to
// `DIR/slurm-JOB.STEP.endpoint`; the others wait for that file and join with their keys.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "runtime/node_agent.hpp"

namespace mpx::runtime {

struct SlurmJob {
  long task = 0;       // SLURM_PROCID
  long tasks = 0;      // SLURM_NTASKS
  std::string step;    // "JOB.STEP"
  std::string keys;    // the shared key directory (MPX_KEYS)
  std::string srun_host;  // SLURM_SRUN_COMM_HOST or SLURM_LAUNCH_NODE_IPADDR: an address of srun's host

  std::string endpoint_file() const { return keys + "/slurm-" + step + ".endpoint"; }
  std::string node_name(long other_task) const { return "slurm-" + step + "-" + std::to_string(other_task); }
};

// The job this process is a task of, when mpx should form one session of its tasks: under srun with more than one
// task, MPX_KEYS set, and MPX_SLURM not "0". nullopt otherwise (a plain program, or srun of independent copies).
std::optional<SlurmJob> slurm_job();
// Task 0, before its coordinator starts: a key for every other task, the chosen keys, and a tcp endpoint on the
// address of this host that faces srun's host (any port).
void prepare_slurm_coordinator(const SlurmJob& job);
// Task 0, once its coordinator listens at `endpoint`: writes the endpoint file (atomically).
void publish_slurm_endpoint(const SlurmJob& job, const std::string& endpoint);
// Task 0, at exit: removes the endpoint file and the keys it made.
void remove_slurm_files(const SlurmJob& job);
// Any other task: waits (at most `timeout`) for task 0's endpoint file, and returns the node mode to serve in.
// Throws TimeoutError if it does not appear.
NodeMode slurm_node_mode(const SlurmJob& job, std::chrono::seconds timeout);

}  // namespace mpx::runtime
