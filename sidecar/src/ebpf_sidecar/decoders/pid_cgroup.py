"""``pid_cgroup``: a process id to its cgroup v2 path, from ``/proc/<pid>/cgroup``.

The path is the one on the ``0::`` line (the unified hierarchy), e.g.
``/kubepods.slice/.../cri-containerd-<id>.scope``, relative to the cgroup
namespace of the sidecar (the host's when it runs with hostPID and the host
cgroup namespace). Chain it with ``container_id`` or ``pod_uid``. A pid with
no /proc entry (exited) or no ``0::`` line becomes the empty string (the
failure value). Paths are cached for ``TTL`` seconds, at most ``MAX_ENTRIES``.
For short-lived processes prefer a cgroup id in the BPF key and the
``cgroup`` decoder: the cgroup outlives the process.
"""

from __future__ import annotations

import time

from ebpf_sidecar.decoders import Column, Decoder, register
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

PROC = "/proc"
TTL = 10.0
MAX_ENTRIES = 65536

_cache: dict[int, tuple[str, float]] = {}


def unified_path(text: str) -> str | None:
    """The path of the ``0::`` line of a /proc/<pid>/cgroup text."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].split(" (deleted)")[0] or "/"
    return None


def process_cgroup(pid: int, now: float | None = None) -> str:
    now = time.monotonic() if now is None else now
    cached = _cache.get(pid)
    if cached is not None and now - cached[1] < TTL:
        return cached[0]
    try:
        with open(f"{PROC}/{pid}/cgroup") as f:
            path = unified_path(f.read())
    except OSError:
        path = None
    if path is None:
        _cache.pop(pid, None)
        return ""
    if len(_cache) >= MAX_ENTRIES:
        _cache.clear()
    _cache[pid] = (path, now)
    return path


def decode_pid_cgroup(column: Column) -> list[str]:
    now = time.monotonic()
    out = []
    for v in column:
        try:
            pid = int(v)
        except (TypeError, ValueError):
            out.append("")
            continue
        out.append(process_cgroup(pid, now) if pid > 0 else "")
    return out


PID_CGROUP = register(
    Decoder("pid_cgroup", pb.FIELD_TYPE_STRING, decode_pid_cgroup, failure='""')
)
