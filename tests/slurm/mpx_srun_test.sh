#!/usr/bin/env bash
# mpx's Slurm launcher on a real Slurm cluster (tests/slurm/cluster.sh: one network namespace per node):
#   - MPX_KEYS=keys srun -N3 cluster_map runs main once: task 0 (on h1) is the coordinator, tasks 1 and 2 join it as
#     nodes with keys task 0 made for them, and a pool spread over the three hosts maps 1000 squares right;
#   - the same from a batch script (sbatch --wait), whose srun runs on h1;
#   - nothing of the job is left in the key directory (the endpoint file, the tasks' keys), and no process.
# Exits 77 (skipped) when not root, when Slurm or munge is not installed, or when this machine cannot make network
# namespaces (an unprivileged container).
#
# Usage: mpx_srun_test.sh MPX_RUN CLUSTER_MAP   (meson runs it as the `slurm_mpx` test, see tests/meson.build)
set -euo pipefail

mpx_run=$1
app=$2
test_name=slurm_mpx
needs=(slurmctld slurmd srun sbatch munged ip)
# shellcheck source=tests/slurm/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
nodes=3
chmod 0755 "$work"
keys=$work/keys

bash "$cluster" up "$nodes" "$cdir"
eval "$(bash "$cluster" env "$cdir")"
"$mpx_run" keygen "$keys" >/dev/null
cd "$work"

# What cluster_map printed: its node list, the tasks each host ran, and the verdict.
check() {
  local out=$1 where=$2 host
  echo "$where:"
  sed 's/^/  /' <<<"$out"
  grep -q "^$nodes nodes:" <<<"$out" || fail "$where: the session did not have $nodes nodes"
  for ((i = 1; i <= nodes; i++)); do
    host="h$i"
    grep -qE "^node [0-9]+ \($host\): [0-9]+ tasks$" <<<"$out" || fail "$where: no task ran on $host"
  done
  grep -qx "all 1000 squares right" <<<"$out" || fail "$where: the squares are not right"
  # Nothing of the job stays in the key directory: task 0 removes its endpoint file and the tasks' keys.
  [[ -z "$(find "$keys" -name 'slurm-*')" ]] || fail "$where: left in $keys: $(find "$keys" -name 'slurm-*')"
}

# ---- srun from this host ---------------------------------------------------------------------------------------------
out=$(MPX_KEYS=$keys timeout 120 srun -N"$nodes" --ntasks-per-node=1 "$app" 2>&1) || fail "srun failed: $out"
check "$out" "srun -N$nodes cluster_map"

# ---- the same inside sbatch: the batch script (and its srun) runs on h1 ---------------------------------------------
cat >"$work/job.sh" <<JOB
#!/bin/sh
MPX_KEYS=$keys srun -N$nodes --ntasks-per-node=1 $app
JOB
chmod +x "$work/job.sh"
timeout 120 sbatch --wait -N"$nodes" -o "$work/batch.out" "$work/job.sh" >/dev/null || fail "sbatch failed: $(cat "$work/batch.out" 2>/dev/null)"
check "$(cat "$work/batch.out")" "sbatch: srun -N$nodes cluster_map"

# ---- no process of the job is left: the nodes' agents exit when task 0's session ends ------------------------------
if pgrep -f -- "^$app" >/dev/null; then
  fail "processes of the job are still running: $(pgrep -af -- "^$app")"
fi
echo "slurm_mpx: ok"
