#!/usr/bin/env bash
# Puts this machine back into the state a new machine of its kind starts in,
# as far as the project's setup and tests change it, so that CI (which runs on
# the developer's machine) fails where a new user's machine would: a step that
# only an earlier run performed (a tracefs mount, the kernel-header links)
# must be redone by the project's own scripts.
#
# What a new machine has (checked, see ../shared/DESIGN.md): tracefs and
# debugfs unmounted, bpffs unmounted, no /lib/modules/$(uname -r), no network
# namespaces, loop devices, nftables tables or test cgroups. Installed
# packages and the Go module cache stay: they are slow to fetch and a new
# machine's setup installs them the same way.
#
# Run by .ci/run before `make test`. It changes machine-wide state: do not run
# it on a host whose other users need those mounts, namespaces or devices.
set -euo pipefail

log() { printf '[reset] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "needs root"; exit 1; }

mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }

unmount_all() {
  local path=$1
  while mounted "$path"; do
    log "unmounting $path"
    umount "$path" || umount -l "$path"
  done
}

# Test cgroups are named so that they can be told from the machine's own
# (kubelet-shaped trees start with kubepods, the others with ebpf-test- or
# e2e-); processes left in them are killed first, then the tree is removed
# deepest first.
remove_test_cgroups() {
  local hierarchy dir sub
  for hierarchy in /sys/fs/cgroup /sys/fs/cgroup/*/; do
    [ -d "$hierarchy" ] || continue
    for dir in "$hierarchy"/kubepods* "$hierarchy"/ebpf-test-* "$hierarchy"/e2e-*; do
      [ -d "$dir" ] || continue
      log "removing test cgroup $dir"
      while IFS= read -r sub; do
        if [ -f "$sub/cgroup.procs" ]; then
          xargs -r kill -KILL <"$sub/cgroup.procs" 2>/dev/null || true
        fi
      done < <(find "$dir" -depth -type d)
      for _ in $(seq 50); do
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$dir" ] || break
        sleep 0.1
      done
      [ ! -d "$dir" ] || { log "cannot remove $dir"; exit 1; }
    done
  done
}

unmount_all /sys/kernel/debug/tracing
unmount_all /sys/kernel/tracing
unmount_all /sys/kernel/debug

if mounted /sys/fs/bpf; then
  log "removing pinned BPF objects and unmounting /sys/fs/bpf"
  find /sys/fs/bpf -mindepth 1 -depth -exec rm -rf {} + 2>/dev/null || true
  unmount_all /sys/fs/bpf
fi

# The links setup makes to Debian's generic headers (setup.sh link_kernel_headers).
modules=/lib/modules/$(uname -r)
for link in "$modules/build" "$modules/source"; do
  if [ -L "$link" ] && [[ "$(readlink "$link")" == /usr/src/linux-headers-* ]]; then
    log "removing $link"
    rm -f "$link"
  fi
done
rmdir "$modules" 2>/dev/null || true
rmdir /lib/modules 2>/dev/null || true

if command -v ip >/dev/null; then
  for ns in $(ip netns list | awk '{print $1}'); do
    log "deleting network namespace $ns"
    ip netns delete "$ns"
  done
fi
# `ip netns add` bind-mounts /run/netns on first use and leaves it.
unmount_all /run/netns

if command -v losetup >/dev/null && [ -n "$(losetup -n -O NAME)" ]; then
  log "detaching loop devices: $(losetup -n -O NAME | tr '\n' ' ')"
  losetup -D
fi

if command -v nft >/dev/null && [ -n "$(nft list tables)" ]; then
  log "flushing nftables: $(nft list tables | tr '\n' ' ')"
  nft flush ruleset
fi

remove_test_cgroups

if [ -e /run/ebpf-sidecar ]; then
  log "removing /run/ebpf-sidecar"
  rm -rf /run/ebpf-sidecar
fi

# The sidecar's compile cache (--compile-cache) and the test sessions' own:
# a new machine has compiled nothing.
for cache in /var/cache/ebpf-sidecar /run/ebpfreceiver-test-compile-cache-*; do
  if [ -e "$cache" ]; then
    log "removing $cache"
    rm -rf "$cache"
  fi
done

# What is left must be what a new machine has.
problems=()
mounted /sys/kernel/tracing && problems+=("tracefs is mounted")
mounted /sys/kernel/debug && problems+=("debugfs is mounted")
mounted /sys/fs/bpf && problems+=("bpffs is mounted")
mounted /run/netns && problems+=("/run/netns is mounted")
[ -e "$modules/build" ] && problems+=("$modules/build exists")
if command -v ip >/dev/null && [ -n "$(ip netns list)" ]; then problems+=("network namespaces remain"); fi
if [ ${#problems[@]} -gt 0 ]; then
  log "the machine is not in a new machine's state: ${problems[*]}"
  exit 1
fi
log "the machine is in a new machine's state (tracefs unmounted, no header links, no test namespaces, loop devices, nftables tables or cgroups)"
