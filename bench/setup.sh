#!/usr/bin/env bash
# Installs what bench/overhead.py needs beyond `make setup`: nginx and wrk for
# the throughput comparison, gcc for the small C workload helpers it builds,
# and the peers the per-event table compares each program with: BCC's tools
# (bpfcc-tools) and bpftrace, at the versions pinned in scripts/versions.sh.
# Idempotent: quick and silent when everything is there.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/versions.sh
. "$ROOT/scripts/versions.sh"

# name or name=version (installed when missing or at another version)
PACKAGES=(nginx wrk gcc libc6-dev
  "bpfcc-tools=$BPFCC_TOOLS_DEB_VERSION" "bpftrace=$BPFTRACE_DEB_VERSION")

missing=()
for p in "${PACKAGES[@]}"; do
  name=${p%%=*}
  want=${p#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  case $have in
    "install ok installed "*) [ "$p" = "$name" ] || [ "${have##* }" = "$want" ] || missing+=("$p") ;;
    *) missing+=("$p") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  printf '[bench-setup] installing Debian packages: %s\n' "${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Do not let the package start the system nginx (port 80); the benchmark
  # runs its own on a free loopback port.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  trap 'if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
