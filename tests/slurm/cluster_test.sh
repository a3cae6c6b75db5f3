#!/usr/bin/env bash
# Proves tests/slurm/cluster.sh: brings up a real 3-node Slurm cluster (one network namespace per node), and checks
# what mpx's Slurm launcher will rely on:
#   - srun -N3 runs one task per node, task i on node h(i+1), each with its own hostname and its node's address;
#     with --ntasks-per-node=2, tasks 0 and 1 run on h1, 2 and 3 on h2, and so on;
#   - every task sees the job's SLURM_* variables (task 0's whole environment is printed once, for reference);
#   - a task reaches a TCP listener of task 0 on the first node's NodeAddr (asked of slurmctld; no DNS), and
#     resolves the first node's name to it;
#   - sbatch --wait runs a batch script (on h1) whose srun -N3 reaches all three nodes;
#   - cluster.sh down leaves no process, namespace, bridge or slot behind.
# Exits 77 (skipped) when not root, when Slurm or munge is not installed, or when this machine cannot make network
# namespaces (an unprivileged container).
#
# Usage: cluster_test.sh   (meson runs it as the `slurm_cluster` test, see tests/meson.build)
set -euo pipefail

test_name=slurm_cluster
needs=(slurmctld slurmd srun sbatch scontrol munged ip pgrep)
# shellcheck source=tests/slurm/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
nodes=3
# Debian's python3, whatever python3 comes first on the PATH.
python=/usr/bin/python3
[[ -x $python ]] || skip "$python is not installed"

# ---- up ------------------------------------------------------------------------------------------------------------
start=${EPOCHREALTIME/./}   # microseconds
bash "$cluster" up "$nodes" "$cdir"
echo "up $nodes: $(((${EPOCHREALTIME/./} - start) / 1000)) ms"
eval "$(bash "$cluster" env "$cdir")"
# shellcheck source=/dev/null
slot=$(source "$cdir/cluster.env" && echo "$slot")
sinfo -N
cd "$work"   # the tasks' SLURM_SUBMIT_DIR

# Every step is bounded: a lost node must fail the test, not hang it until meson's timeout.
run() { timeout 60 "$@"; }

# NodeAddr of node $1, as slurmctld knows it.
node_addr() { scontrol show -o node "$1" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2; }

# ---- srun: one task per node, each in its node's namespace ----------------------------------------------------------
# shellcheck disable=SC2016  # expanded by the tasks
out=$(run srun -N"$nodes" --ntasks-per-node=1 \
  sh -c 'echo $SLURM_PROCID $(hostname) $(ip -4 -o addr show eth0 | awk "{print \$4}")' | sort -n)
echo "srun -N$nodes (procid hostname address):"
indent <<<"$out"
[[ $(echo "$out" | wc -l) == "$nodes" ]] || fail "expected $nodes lines from srun"
for ((i = 0; i < nodes; i++)); do
  read -r procid host addr <<<"$(echo "$out" | sed -n "$((i + 1))p")"
  [[ $procid == "$i" ]] || fail "task ids are not 0..$((nodes - 1))"
  # Slurm's default block distribution: task i on the i-th node. (mpx: task 0, the coordinator, runs on h1.)
  [[ $host == "h$((i + 1))" ]] || fail "task $i ran on $host, not h$((i + 1))"
  [[ ${addr%/*} == "$(node_addr "$host")" ]] || fail "task $i on $host sees address $addr, not its NodeAddr"
done

# Several tasks per node (mpx runs more than one process on a node), in blocks: tasks 0 and 1 on h1, 2 and 3 on h2...
# shellcheck disable=SC2016  # expanded by the tasks
out=$(run srun -N"$nodes" --ntasks-per-node=2 sh -c 'echo $SLURM_PROCID $(hostname)' | sort -n | tr '\n' ' ')
expect=""
for ((i = 0; i < 2 * nodes; i++)); do expect+="$i h$((i / 2 + 1)) "; done
[[ $out == "$expect" ]] || fail "srun --ntasks-per-node=2 gave '$out', not '$expect'"

# ---- the tasks' environment ------------------------------------------------------------------------------------------
# srun -l prefixes each line with the task id.
envs=$(run srun -N"$nodes" --ntasks-per-node=1 -l env)
echo "task 0's environment:"
echo "$envs" | sed -n 's/^0: //p' | sort | indent
for ((i = 0; i < nodes; i++)); do
  task_env=$(echo "$envs" | sed -n "s/^$i: //p")
  for expect in SLURM_PROCID="$i" SLURM_NTASKS="$nodes" SLURM_NNODES="$nodes" SLURM_NODEID="$i" SLURM_LOCALID=0 \
    SLURM_JOB_NODELIST="h[1-$nodes]" SLURM_NODELIST="h[1-$nodes]" SLURM_STEP_NODELIST="h[1-$nodes]" \
    SLURM_SUBMIT_DIR="$work" SLURMD_NODENAME="h$((i + 1))" SLURM_CONF="$SLURM_CONF"; do
    grep -qxF -- "$expect" <<<"$task_env" || fail "task $i's environment lacks $expect"
  done
  for name in SLURM_JOB_ID SLURM_STEP_ID SLURM_SRUN_COMM_HOST SLURM_SRUN_COMM_PORT SLURM_LAUNCH_NODE_IPADDR; do
    grep -q "^$name=." <<<"$task_env" || fail "task $i's environment lacks $name"
  done
done

# ---- TCP from every task to task 0 -----------------------------------------------------------------------------------
out=$(run srun -N"$nodes" --ntasks-per-node=1 "$python" "$here/tcp_task.py" 47011 | sort)
echo "TCP to task 0:"
indent <<<"$out"
for ((i = 1; i < nodes; i++)); do
  grep -qF "task 0 on h1: got '$i h$((i + 1))' from $(node_addr "h$((i + 1))")" <<<"$out" ||
    fail "task 0 did not hear from task $i on h$((i + 1))"
  grep -qF "task $i on h$((i + 1)): connected to h1 NodeAddr=$(node_addr h1):47011" <<<"$out" ||
    fail "task $i did not connect to h1's NodeAddr"
  grep -qF "gethostbyname(h1)=$(node_addr h1) " <<<"$out" || fail "task $i could not resolve h1"
  grep -qF "reply 'welcome $i'" <<<"$out" || fail "task $i got no reply from task 0"
done

# ---- sbatch: the batch script runs on h1, and its srun reaches every node --------------------------------------------
cat >"$work/job.sh" <<'EOF'
#!/bin/sh
echo "batch $(hostname) $SLURM_JOB_NODELIST"
srun sh -c 'echo step $SLURM_PROCID $(hostname) launch=$SLURM_LAUNCH_NODE_IPADDR'
EOF
run sbatch --wait -N"$nodes" --ntasks-per-node=1 -o "$work/job.out" "$work/job.sh"
echo "sbatch --wait output:"
indent <"$work/job.out"
grep -qxF "batch h1 h[1-$nodes]" "$work/job.out" || fail "the batch script did not run on h1"
for ((i = 0; i < nodes; i++)); do
  grep -qxF "step $i h$((i + 1)) launch=$(node_addr h1)" "$work/job.out" || fail "the batch step's task $i is missing"
done

# ---- down: nothing left ----------------------------------------------------------------------------------------------
bash "$cluster" down "$cdir"
# A daemon's zombie may linger until init reaps it: only running processes count.
# (pgrep -f matches no zombie: a zombie's command line is empty.)
left=$(pgrep -af -- "$cdir/" || true)
[[ -z "$left" ]] || fail "processes left after down: $left"
if ip netns list | grep -q "^mpxs${slot}h"; then fail "namespaces left after down: $(ip netns list)"; fi
if ip link show "mpxs${slot}br" >/dev/null 2>&1; then fail "bridge mpxs${slot}br left after down"; fi
[[ ! -e "/run/mpx-slurm/slot$slot" ]] || fail "slot $slot still claimed after down"
bash "$cluster" down "$cdir"   # idempotent
echo "slurm_cluster: ok"
