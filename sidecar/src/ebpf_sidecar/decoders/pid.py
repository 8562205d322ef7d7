"""``pid``: a process id to its executable name, from ``/proc/<pid>/comm``.

For a key holding a tgid (``bpf_get_current_pid_tgid() >> 32``) this is the
process's main thread name, as ``ps -o comm`` shows it. A pid with no /proc
entry (the process has exited) becomes the empty string (the failure value):
its name is unknown, not ``pid:<n>``. Names are cached for ``TTL`` seconds
(pids are reused and exec renames a process, so not forever), at most
``MAX_ENTRIES`` of them. /proc must be the host's (hostPID in Kubernetes).
"""

from __future__ import annotations

import time

from ebpf_sidecar.decoders import Column, Decoder, register
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

PROC = "/proc"
TTL = 10.0
MAX_ENTRIES = 65536

_cache: dict[int, tuple[str, float]] = {}


def process_name(pid: int, now: float | None = None) -> str:
    now = time.monotonic() if now is None else now
    cached = _cache.get(pid)
    if cached is not None and now - cached[1] < TTL:
        return cached[0]
    try:
        with open(f"{PROC}/{pid}/comm", "rb") as f:
            name = f.read().rstrip(b"\n").decode("utf-8", errors="replace")
    except OSError:
        _cache.pop(pid, None)
        return ""
    if len(_cache) >= MAX_ENTRIES:
        _cache.clear()
    _cache[pid] = (name, now)
    return name


def decode_pid(column: Column) -> list[str]:
    now = time.monotonic()
    out = []
    for v in column:
        try:
            pid = int(v)
        except (TypeError, ValueError):
            out.append("")
            continue
        out.append(process_name(pid, now) if pid > 0 else "")
    return out


PID = register(Decoder("pid", pb.FIELD_TYPE_STRING, decode_pid, failure='""'))
