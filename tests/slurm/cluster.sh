#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for testing mpx's Slurm launcher: slurmctld and a private munged in the
# root network namespace, and one slurmd per compute node, each in its own network namespace (its own address and
# TCP ports) and UTS namespace (its own hostname), joined by a bridge. srun, sbatch and sinfo run in the root
# namespace and reach every node through the bridge.
#
# Usage:
#   cluster.sh up N DIR   start a cluster of N compute nodes (h1..hN); config, state and logs go under DIR, which it
#                         creates. Returns once all N nodes are idle; fails (printing the logs, and taking down what
#                         it started) if they are not within MPX_SLURM_UP_TIMEOUT seconds (default 60). Each node
#                         has MPX_SLURM_CPUS CPUs for Slurm (default 8, whatever this machine has: Slurm refuses a
#                         step with more tasks on a node than it has CPUs, even with --overcommit).
#   cluster.sh down DIR   stop everything `up` started in DIR and remove its namespaces, veths and bridge. Idempotent:
#                         succeeds when the cluster is already down, half up, or DIR does not exist. Keeps DIR's logs.
#   cluster.sh env DIR    print the line to eval before running srun/sbatch/sinfo against the cluster:
#                         eval "$(cluster.sh env DIR)"   (export SLURM_CONF=DIR/etc/slurm.conf)
#
# Needs root (network namespaces, a bridge, slurmd as root) and the Debian packages slurmctld, slurmd, slurm-client
# and munge (tools/install-deps.sh). It changes nothing in /etc: slurm.conf names every node's address (NodeAddr), so
# Slurm needs no DNS; the nodes see a hosts file naming all nodes, mounted over /etc/hosts in their own mount
# namespaces only; and munged runs with its own key and socket under DIR, beside any system munged.
#
# Several clusters may be up at once (two test runs, say): each claims a free slot K in /run/mpx-slurm (under a
# lock), which names its bridge mpxsKbr, its namespaces mpxsKhI and root-side veths mpxsKvI, picks its subnet
# 10.77.K.0/24 (controller 10.77.K.1, node hI 10.77.K.(10+I)) and its slurmctld port 17000+K.
set -euo pipefail

readonly registry=/run/mpx-slurm   # slot claims; on tmpfs, so it vanishes on reboot together with the namespaces
readonly max_slots=16
readonly max_nodes=200             # node addresses 10.77.K.11 .. 10.77.K.210
readonly slurmd_port=6818          # the same in every node: each node has its own network stack

die() { echo "cluster.sh: $*" >&2; exit 1; }

usage() {
  echo "usage: cluster.sh up N DIR | down DIR | env DIR" >&2
  exit 2
}

# Names and addresses of slot $1 (see the header).
bridge_of() { echo "mpxs${1}br"; }
netns_of() { echo "mpxs${1}h${2}"; }
veth_of() { echo "mpxs${1}v${2}"; }
ctl_addr_of() { echo "10.77.${1}.1"; }
node_addr_of() { echo "10.77.${1}.$((10 + $2))"; }

# Reads DIR/cluster.env (written by `up` before it starts anything) into slot, nodes and dir. Fails if absent.
load_state() {
  local d=$1
  [[ -f "$d/cluster.env" ]] || return 1
  # shellcheck source=/dev/null
  source "$d/cluster.env"
}

# ---- processes -----------------------------------------------------------------------------------------------------

# Starts a daemon in the background, detached from our session (it must outlive `up`, and a Ctrl-C in the caller's
# terminal must not reach it), and records its pid in DIR/pids/NAME. setsid does not fork here (a background job of
# a non-interactive shell is no process group leader), nor do nsenter and unshare without --fork, and sh ends in
# exec: so $! is the daemon's own pid.
start_daemon() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/pids/$name"
}

# Whether pid $1 runs: exists and is no zombie. Our daemons outlive `up`, so their parent is init, which may take its
# time to reap them (this machine's init does): a zombie is gone for us.
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }   # the fields after "(comm) "; the first is the state
  [[ "${stat%% *}" != Z ]]
}

# The pid `start_daemon` recorded for daemon $1, if that pid still runs program $2 (a pid file may outlive its
# process, and the pid be reused by now).
recorded_pid() {
  local pid
  pid=$(cat "$dir/pids/$1" 2>/dev/null) || return 0
  if running "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]; then echo "$pid"; fi
  return 0
}

# The namespaces of slot $1 that exist now, whatever their number (so this also finds those of a slot whose DIR is
# gone), and every process in them: slurmd, its slurmstepds and their tasks.
netns_list() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^mpxs${1}h[0-9]+\$" || true; }
netns_pids() {
  local ns pid
  for ns in $(netns_list "$1"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      if running "$pid"; then echo "$pid"; fi
    done
  done
}

# Stops the processes that the command `$@` lists: TERM, then KILL those left after 10 s. The command runs again at
# every poll, so a process forked meanwhile (a slurmstepd finishing a task, say) is caught too.
stop_all() {
  local deadline=$((SECONDS + 10)) sig=TERM signaled=" " pids pid
  while pids=$("$@") && [[ -n "$pids" ]]; do
    if ((SECONDS >= deadline)); then
      if [[ $sig == KILL ]]; then
        echo "cluster.sh: still running after SIGKILL: ${pids//$'\n'/ }" >&2
        return 0
      fi
      sig=KILL signaled=" " deadline=$((SECONDS + 5))
    fi
    for pid in $pids; do
      [[ "$signaled" == *" $pid "* ]] && continue
      kill "-$sig" "$pid" 2>/dev/null || true
      signaled+="$pid "
    done
    sleep 0.1
  done
}

# ---- network -------------------------------------------------------------------------------------------------------

# The bridge, and per node a namespace with lo and eth0 (one end of a veth whose other end is on the bridge).
net_up() {
  local br i ns veth
  br=$(bridge_of "$slot")
  ip link add "$br" type bridge
  ip addr add "$(ctl_addr_of "$slot")/24" dev "$br"
  ip link set "$br" up
  for ((i = 1; i <= nodes; i++)); do
    ns=$(netns_of "$slot" "$i")
    veth=$(veth_of "$slot" "$i")
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$br" up
    ip -n "$ns" addr add "$(node_addr_of "$slot" "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$(ctl_addr_of "$slot")"
  done
}

# Removes every namespace of slot $1 after stopping the processes in them, then the bridge. Deleting a namespace
# deletes its veth pair.
net_down() {
  local s=$1 ns br
  stop_all netns_pids "$s"
  for ns in $(netns_list "$s"); do ip netns del "$ns" 2>/dev/null || true; done
  br=$(bridge_of "$s")
  if ip link show "$br" >/dev/null 2>&1; then ip link del "$br" 2>/dev/null || true; fi
}

# ---- slots ---------------------------------------------------------------------------------------------------------

# Claims a free slot for DIR $1, writes DIR/cluster.env (the slot, node count and DIR, which `down` reads) and prints
# the slot's number. A slot is free when unclaimed, or when its claim names a DIR whose cluster.env no longer points
# back at it (the DIR was deleted without `down`); such a slot's leftovers are removed first. cluster.env is written
# under the lock, so that another `up` never sees a claim without it and takes the slot for a stale one.
claim_slot() {
  local d=$1 s owner
  mkdir -p "$registry"
  exec 9>"$registry/lock"
  flock -w 30 9 || die "could not lock $registry/lock"
  for ((s = 0; s < max_slots; s++)); do
    if [[ -f "$registry/slot$s" ]]; then
      owner=$(cat "$registry/slot$s")
      if [[ -f "$owner/cluster.env" ]] && grep -qx "slot=$s" "$owner/cluster.env"; then continue; fi
      # The DIR was deleted without `down` (its cluster.env is gone): stop what is left of that cluster. Its
      # slurmctld and munged are found by the DIR in their command lines, having no pid files any more.
      stop_all stale_root_pids "$owner"
      net_down "$s"
    fi
    echo "$d" >"$registry/slot$s"
    printf 'slot=%s\nnodes=%s\ndir=%q\n' "$s" "$nodes" "$d" >"$d/cluster.env"
    exec 9>&-
    echo "$s"
    return 0
  done
  exec 9>&-
  die "all $max_slots slots in $registry are taken (clusters still up?)"
}

# slurmctld and munged processes whose command line names files under DIR $1.
stale_root_pids() {
  local p
  for p in /proc/[0-9]*; do
    running "${p#/proc/}" || continue
    case "$(cat "$p/comm" 2>/dev/null)" in
      slurmctld | munged) tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$1/" && echo "${p#/proc/}" ;;
    esac
  done
  return 0
}

release_slot() {
  local s=$1 d=$2
  if [[ -f "$registry/slot$s" && "$(cat "$registry/slot$s")" == "$d" ]]; then rm -f "$registry/slot$s"; fi
}

# ---- configuration -------------------------------------------------------------------------------------------------

write_slurm_conf() {
  local i cpus=${MPX_SLURM_CPUS:-8}
  cat >"$dir/etc/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh (slot $slot). One machine, one network namespace per node.
ClusterName=mpxs$slot
# slurmctld runs in the root namespace, in a UTS namespace named "ctl" (it must find its own name here), reached
# through the bridge's address. The port is per slot: slurmctld listens on every address of the root namespace.
SlurmctldHost=ctl($(ctl_addr_of "$slot"))
SlurmctldPort=$((17000 + slot))
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root

# Our own munged (its socket under DIR), not the system's.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket

StateSaveLocation=$dir/state/slurmctld
SlurmdSpoolDir=$dir/state/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true

# No cgroups or systemd (none in a container): track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# A node that was down (slurmd restarted, say) is usable again as soon as it registers.
ReturnToService=2
# All nodes share this machine's hardware: take the node lines below as they are (their CPUs, not the machine's).
SlurmdParameters=config_overrides
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60

EOF
  for ((i = 1; i <= nodes; i++)); do
    echo "NodeName=h$i NodeAddr=$(node_addr_of "$slot" "$i") CPUs=$cpus State=UNKNOWN" >>"$dir/etc/slurm.conf"
  done
  echo "PartitionName=all Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$dir/etc/slurm.conf"
}

# The /etc/hosts and /etc/resolv.conf a node sees. The hosts file names every node and the controller, so a task
# can resolve hI as on a real cluster. The host's DNS server is unreachable from a node's namespace (it has a route to
# the bridge only), so a lookup of any other name would wait for DNS timeouts (10 s); nameserver 127.0.0.1, where
# nothing listens in the namespace, makes it fail at once.
write_node_etc() {
  local i
  {
    echo "# Written by tests/slurm/cluster.sh: the hosts file of the nodes (slot $slot)."
    echo "127.0.0.1 localhost"
    echo "$(ctl_addr_of "$slot") ctl"
    for ((i = 1; i <= nodes; i++)); do echo "$(node_addr_of "$slot" "$i") h$i"; done
  } >"$dir/etc/hosts"
  {
    echo "# Written by tests/slurm/cluster.sh: no DNS in the test cluster."
    echo "nameserver 127.0.0.1"
  } >"$dir/etc/resolv.conf"
}

# ---- up ------------------------------------------------------------------------------------------------------------

# Polls `$@` until it succeeds, at most until $deadline (SECONDS), and fails at once if one of the daemons started
# so far has exited (nothing will get better then).
poll_until() {
  local f
  while ! "$@" >/dev/null 2>&1; do
    for f in "$dir"/pids/*; do
      running "$(cat "$f")" || die "${f##*/} exited (see its log below)"
    done
    ((SECONDS < deadline)) || die "timed out after ${MPX_SLURM_UP_TIMEOUT:-60} s waiting for: $*"
    sleep 0.2
  done
}

munge_ready() { munge -n -S "$dir/munge/munge.socket" | unmunge -S "$dir/munge/munge.socket"; }
slurmctld_ready() { scontrol ping | grep -q 'is UP'; }
# All $nodes nodes idle (sinfo prints one line per node and state; "idle" without a "*" or "~" suffix).
nodes_idle() { [[ "$(sinfo -h -N -t idle -o '%N %t' | grep -c ' idle$')" == "$nodes" ]]; }

# The logs of a failed `up`: the daemons' log files, and their stderr (NAME.out) where a daemon has no log file, or
# failed before opening it. (Slurm daemons run with -D write every line to both.)
print_logs() {
  local f
  echo "cluster.sh: --- sinfo ---" >&2
  # (sinfo retries for seconds when slurmctld is not up; no need to when we know it is not running.)
  if [[ -n "$(recorded_pid slurmctld slurmctld)" ]]; then sinfo -N 2>&1 | sed 's/^/  /' >&2 || true; fi
  for f in "$dir"/log/*; do
    [[ -s "$f" ]] || continue
    [[ "$f" == *.out && -s "${f%.out}.log" ]] && continue
    echo "cluster.sh: --- $f (last 40 lines) ---" >&2
    tail -n 40 "$f" | sed 's/^/  /' >&2
  done
}

cmd_up() {
  [[ $# == 2 && "$1" =~ ^[1-9][0-9]*$ ]] || usage
  nodes=$1
  ((nodes <= max_nodes)) || die "at most $max_nodes nodes"
  [[ "${MPX_SLURM_CPUS:-8}" =~ ^[1-9][0-9]*$ ]] || die "MPX_SLURM_CPUS must be a positive number"
  [[ $(id -u) == 0 ]] || die "needs root (network namespaces, a bridge, slurmd as root)"
  local prog
  for prog in slurmctld slurmd srun sinfo scontrol munged mungekey munge unmunge ip nsenter unshare setsid flock; do
    command -v "$prog" >/dev/null || die "$prog not found (tools/install-deps.sh installs it)"
  done
  mkdir -p "$2"
  dir=$(cd "$2" && pwd)
  if [[ -f "$dir/cluster.env" ]]; then die "a cluster is already up in $dir (cluster.sh down $dir first)"; fi
  # Unix socket paths (munged's, and slurmd's step sockets under the spool dir) must fit sun_path's 108 bytes.
  ((${#dir} <= 60)) || die "DIR path too long for unix sockets (${#dir} > 60 characters): $dir"
  rm -rf "${dir:?}"/{etc,state,run,log,munge,pids}
  mkdir -p "$dir"/{etc,state,run,log,munge,pids}
  # munged wants its socket's directory searchable by all (every user's srun talks to it); the key stays 0600.
  chmod 755 "$dir" "$dir/munge"

  # The slot is claimed, and cluster.env written, before anything starts: `down` can clean up a half-started cluster.
  slot=$(claim_slot "$dir")
  trap 'status=$?; if ((status != 0)); then print_logs; cmd_down "$dir"; fi' EXIT
  trap 'exit 130' INT TERM   # runs the EXIT trap
  export SLURM_CONF="$dir/etc/slurm.conf"
  local deadline=$((SECONDS + ${MPX_SLURM_UP_TIMEOUT:-60}))

  net_up
  write_slurm_conf
  write_node_etc

  mungekey --create --keyfile="$dir/munge/munge.key"
  start_daemon munged munged --foreground --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
  poll_until munge_ready

  # slurmctld accepts only a host named in SlurmctldHost: give it the name "ctl" in its own UTS namespace.
  # -c: a new cluster, no state to recover.
  # shellcheck disable=SC2016  # $1 is sh's argument
  start_daemon slurmctld unshare --uts sh -c 'hostname ctl && exec slurmctld -D -c -f "$1"' sh "$SLURM_CONF"
  poll_until slurmctld_ready

  # Each slurmd in its node's network namespace (nsenter, not `ip netns exec`, which also remounts /sys), its own
  # UTS namespace, so the node's tasks see hostname hI, and its own mount namespace, where the cluster's hosts file
  # and resolv.conf cover /etc's (see write_node_etc). unshare makes the mounts private: /etc stays untouched outside.
  local i
  for ((i = 1; i <= nodes; i++)); do
    mkdir -p "$dir/state/slurmd-h$i"
    # shellcheck disable=SC2016  # $1, $2 and $3 are sh's arguments
    start_daemon "slurmd-h$i" nsenter --net="/run/netns/$(netns_of "$slot" "$i")" unshare --uts --mount sh -c '
      hostname "$1" &&
      mount --bind "$3/hosts" /etc/hosts &&
      mount --bind "$3/resolv.conf" /etc/resolv.conf &&
      exec slurmd -D -f "$2" -N "$1"' sh "h$i" "$SLURM_CONF" "$dir/etc"
  done
  poll_until nodes_idle
  trap - EXIT
}

# ---- down ----------------------------------------------------------------------------------------------------------

# Everything of this cluster's Slurm: what runs in its namespaces, and slurmctld.
slurm_pids() {
  netns_pids "$slot"
  recorded_pid slurmctld slurmctld
}

cmd_down() {
  [[ $# == 1 ]] || usage
  [[ -d "$1" ]] || return 0
  dir=$(cd "$1" && pwd)
  load_state "$dir" || return 0
  # Slurm first (the nodes' processes and slurmctld), then munged, which they use until they stop.
  stop_all slurm_pids
  stop_all recorded_pid munged munged
  net_down "$slot"
  rm -f "$dir/pids"/*
  release_slot "$slot" "$dir"
  rm -f "$dir/cluster.env"
}

cmd_env() {
  [[ $# == 1 ]] || usage
  local d
  d=$(cd "$1" 2>/dev/null && pwd) || die "no directory $1"
  [[ -f "$d/cluster.env" ]] || die "no cluster is up in $d"
  printf 'export SLURM_CONF=%q\n' "$d/etc/slurm.conf"
}

[[ $# -ge 1 ]] || usage
command=$1; shift
case "$command" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  env) cmd_env "$@" ;;
  *) usage ;;
esac
