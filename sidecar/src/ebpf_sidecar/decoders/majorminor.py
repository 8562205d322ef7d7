"""``majorminor``: a kernel-internal device number to the device's name (``loop3``).

Tracepoints (block:*, writeback, ...) report ``dev_t`` in the kernel's own
encoding, ``MKDEV(major, minor) = major << 20 | minor``, not the userspace
encoding of ``stat()``/``makedev()``. The name is the last component of the
``/sys/dev/block/MAJ:MIN`` link (``.../block/vda`` → ``vda``, ``.../vda/vda1``
→ ``vda1``), falling back to ``/proc/partitions``. A number neither knows (a
device already removed) becomes ``MAJ:MIN`` (the failure value), e.g. ``7:3``.

Names are cached for ``TTL`` seconds: device numbers are reused (a hot-plugged
NVMe disk may get the number of one removed before), so a cached name is looked
up again after a while; failures are not cached, so a device that appears
later is named on the next snapshot.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cachetools import TTLCache

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

MINOR_BITS = 20
MINOR_MASK = (1 << MINOR_BITS) - 1
TTL = 60.0
SYS_DEV_BLOCK = Path("/sys/dev/block")
PROC_PARTITIONS = Path("/proc/partitions")

# Bounded; a full cache evicts its least recently used name. cachetools
# caches are not thread-safe, and streams decode concurrently.
_names: TTLCache[int, str] = TTLCache(maxsize=4096, ttl=TTL, timer=time.monotonic)
_lock = threading.Lock()


def split(dev: int) -> tuple[int, int]:
    """(major, minor) of a kernel-internal dev_t."""
    return (dev >> MINOR_BITS) & 0xFFF, dev & MINOR_MASK


def _from_sysfs(major: int, minor: int) -> str | None:
    try:
        target = os.readlink(SYS_DEV_BLOCK / f"{major}:{minor}")
    except OSError:
        return None
    name = os.path.basename(target.rstrip("/"))
    return name or None


def _from_partitions(major: int, minor: int) -> str | None:
    try:
        lines = PROC_PARTITIONS.read_text().splitlines()
    except OSError:
        return None
    for line in lines[1:]:
        parts = line.split()
        if (
            len(parts) == 4
            and parts[0].isdigit()
            and parts[1].isdigit()
            and (int(parts[0]), int(parts[1])) == (major, minor)
        ):
            return parts[3]
    return None


def device_name(dev: int) -> str:
    with _lock:
        cached = _names.get(dev)
    if cached is not None:
        return cached
    major, minor = split(dev)
    name = _from_sysfs(major, minor) or _from_partitions(major, minor)
    if name is None:
        return f"{major}:{minor}"
    with _lock:
        _names[dev] = name
    return name


def decode_majorminor(column: Column) -> list[str]:
    names: dict[int, str] = {}
    out = []
    for v in column:
        dev = int(v)
        if dev not in names:
            names[dev] = device_name(dev)
        out.append(names[dev])
    return out


MAJORMINOR = Decoder("majorminor", pb.FIELD_TYPE_STRING, decode_majorminor, failure="MAJ:MIN")
