#!/usr/bin/env bash
# Installs the Debian packages mpx needs to build, test and run its tools. Idempotent: when everything is
# already installed it only checks (with dpkg-query) and exits 0 without touching apt.
set -euo pipefail

packages=(
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libsodium-dev catch2
  meson ninja-build pkg-config g++ python3 python3-zmq
  libtomlplusplus-dev libcli11-dev libcpp-httplib-dev graphviz doxygen cmake
  slurmctld slurmd slurm-client munge iproute2 procps
)
# The last line is for the Slurm test cluster (tests/slurm/cluster.sh). On a host with systemd, munge's postinst
# starts the system munged; the test cluster runs its own beside it (own key and socket). The slurmd and slurmctld
# services stay off: they start only with an /etc/slurm/slurm.conf, which nothing here writes.

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: dpkg-query not found; this script supports Debian/Ubuntu only." >&2
  echo "install-deps: install these packages by hand: ${packages[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-deps: installing missing packages: ${missing[*]}"

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: not root and sudo is not available; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo_cmd=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
