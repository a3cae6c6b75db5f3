# What the Slurm tests share (sourced): skipping where Slurm cannot run, failing with a name, and a work directory
# whose cluster is brought down, with its logs shown on failure, however the test ends.
# The caller sets `test_name` and `needs` (programs it runs) before sourcing; it gets $here, $cluster, $work, $cdir.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cluster=$here/cluster.sh

skip() {
  echo "$test_name: $*; skipped"
  exit 77
}
[[ $(id -u) == 0 ]] || skip "needs root (network namespaces, slurmd as root)"
for prog in "${needs[@]}"; do
  command -v "$prog" >/dev/null || skip "$prog is not installed (tools/install-deps.sh installs it)"
done
unshare --net true 2>/dev/null || skip "cannot create network namespaces here"

indent() { sed 's/^/  /'; }

fail() {
  echo "$test_name: FAIL: $*" >&2
  exit 1
}

work=$(mktemp -d "/tmp/mpx-slurm.XXXXXX")
cdir=$work/cluster

# On failure, the cluster's logs (before down, which keeps them, and the rm, which does not).
cleanup() {
  local status=$? f
  if ((status != 0 && status != 77)); then
    for f in "$cdir"/log/*.log; do
      [[ -f "$f" ]] || continue
      echo "--- $f (last 30 lines)" >&2
      tail -n 30 "$f" >&2
    done
  fi
  bash "$cluster" down "$cdir" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # on a signal, exit, which runs the EXIT trap
