#!/usr/bin/env bash
# Installs what bench/overhead.py needs beyond `make setup`: nginx and wrk for
# the throughput comparison, gcc for the small C workload helpers it builds.
# Idempotent: quick and silent when everything is there.
set -euo pipefail

PACKAGES=(nginx wrk gcc libc6-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
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
