"""Programs that outlive a crashed sidecar: BPF links and maps pinned in bpffs.

BCC attaches a TRACEPOINT_PROBE with a perf-event fd and ioctl(SET_BPF): the
attachment dies with the process. Here every hook is a BPF link instead
(BPF_LINK_CREATE on a perf event for classic tracepoints,
BPF_RAW_TRACEPOINT_OPEN for raw ones), and a link pinned in bpffs keeps its
program attached, and the program its maps, after the process that made it
is gone. A sidecar pins each shared instance under
``<root>/<instance key>/``:

- ``link_<n>``: the hooks (keeping the programs attached and counting);
- ``map_<name>``: the maps the manifest reads, and their dropped counters;
- ``prog_<n>``: the BPF programs, by the layout's hook list, so that a
  successor reads their run-time statistics (opening them by id from the
  links would take CAP_SYS_ADMIN, which it no longer has);
- ``meta``: a 4-entry u64 array: attach time (ns since the epoch), heartbeat
  (ns since the epoch), owner pid, owner start time (clock ticks after boot,
  so a new process that got the same pid is not taken for the owner);
- ``layout``: a 1-entry array holding JSON: each map's key and value types as
  BCC described them at compile time, so a successor reads the maps with the
  same layouts without compiling anything.

bpffs holds only BPF objects, no plain files, hence the two arrays.
"""

from __future__ import annotations

import ctypes as ct
import errno
import json
import logging
import os
import platform
import shutil
import struct
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BPFFS = Path("/sys/fs/bpf")
DEFAULT_ROOT = BPFFS / "ebpfreceiver"
# Pins whose owner died longer ago than this (by its last heartbeat) are
# removed: nobody is going to adopt them, and they cost kernel memory and
# per-event CPU while nobody reads them.
DEFAULT_LEASE_S = 60.0
# How often a living sidecar refreshes the heartbeat of what it owns.
HEARTBEAT_S = 5.0

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # bpf, perf_event_open
_BPF_MAP_CREATE, _BPF_OBJ_PIN, _BPF_OBJ_GET, _BPF_LINK_CREATE = 0, 6, 7, 28
_BPF_MAP_TYPE_ARRAY = 2
_BPF_PERF_EVENT = 41  # enum bpf_attach_type
_PERF_TYPE_TRACEPOINT = 2
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_FLAG_FD_CLOEXEC = 8
_ATTR_SIZE = 128  # larger than any field used; the kernel checks the tail is zero

META_ATTACH, META_HEARTBEAT, META_PID, META_START = range(4)
LAYOUT_MAX = 64 * 1024

_libc = ct.CDLL(None, use_errno=True)


class PinError(OSError):
    """A bpf() call on pins failed."""


def _syscall(which: int) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise PinError(
            errno.ENOSYS,
            f"pinning is not implemented for {platform.machine()}; run with --pin-dir ''",
        )
    return numbers[which]


def _bpf(cmd: int, attr: ct.Array[ct.c_char], what: str) -> int:
    res = _libc.syscall(_syscall(0), cmd, attr, _ATTR_SIZE)
    if res < 0:
        err = ct.get_errno()
        raise PinError(err, f"{what}: {os.strerror(err)}")
    return int(res)


def _attr(data: bytes) -> ct.Array[ct.c_char]:
    return ct.create_string_buffer(data.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)


def obj_pin(fd: int, path: Path) -> None:
    name = ct.create_string_buffer(os.fsencode(path))
    _bpf(_BPF_OBJ_PIN, _attr(struct.pack("<QI", ct.addressof(name), fd)), f"pinning {path}")


def obj_get(path: Path) -> int:
    name = ct.create_string_buffer(os.fsencode(path))
    return _bpf(_BPF_OBJ_GET, _attr(struct.pack("<QII", ct.addressof(name), 0, 0)), f"{path}")


def create_array(value_size: int, entries: int) -> int:
    attr = _attr(struct.pack("<IIIIII", _BPF_MAP_TYPE_ARRAY, 4, value_size, entries, 0, 0))
    return _bpf(_BPF_MAP_CREATE, attr, "creating a metadata array")


def _update(fd: int, index: int, value: bytes) -> None:
    from ebpf_sidecar.libbpf import lib

    key = ct.c_uint32(index)
    buf = ct.create_string_buffer(value, len(value))
    if lib.bpf_update_elem(fd, ct.byref(key), buf, 0) != 0:
        err = ct.get_errno()
        raise PinError(err, f"writing pinned metadata: {os.strerror(err)}")


def _lookup(fd: int, index: int, size: int) -> bytes:
    from ebpf_sidecar.libbpf import lib

    key = ct.c_uint32(index)
    buf = ct.create_string_buffer(size)
    if lib.bpf_lookup_elem(fd, ct.byref(key), buf) != 0:
        err = ct.get_errno()
        raise PinError(err, f"reading pinned metadata: {os.strerror(err)}")
    return buf.raw


def link_tracepoint(prog_fd: int, category: str, event: str, tracefs: Path) -> int:
    """A BPF link attaching ``prog_fd`` to a classic tracepoint (kernel 5.15+)."""
    tp_id = int((tracefs / "events" / category / event / "id").read_text())
    # struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type, size, config
    attr = ct.create_string_buffer(struct.pack("<IIQ", _PERF_TYPE_TRACEPOINT, 64, tp_id), 64)
    # cpu 0 and any pid, as libbpf does: a tracepoint program runs on every CPU
    pfd = _libc.syscall(_syscall(1), attr, -1, 0, -1, _PERF_FLAG_FD_CLOEXEC)
    if pfd < 0:
        err = ct.get_errno()
        raise PinError(err, f"perf_event_open({category}:{event}): {os.strerror(err)}")
    try:
        link = _bpf(
            _BPF_LINK_CREATE,
            _attr(struct.pack("<IIII", prog_fd, pfd, _BPF_PERF_EVENT, 0)),
            f"BPF_LINK_CREATE on tracepoint {category}:{event}",
        )
        if _libc.ioctl(pfd, _PERF_EVENT_IOC_ENABLE, 0) != 0:
            err = ct.get_errno()
            os.close(link)
            raise PinError(err, f"enabling tracepoint {category}:{event}: {os.strerror(err)}")
        return link
    finally:
        os.close(pfd)  # the link holds the perf event from now on


def link_raw_tracepoint(prog_fd: int, name: str) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: its fd is a link, pinnable like any other."""
    from bcc.libbcc import lib

    fd = int(lib.bpf_attach_raw_tracepoint(prog_fd, name.encode()))
    if fd < 0:
        raise PinError(-fd, f"attaching raw tracepoint {name}: {os.strerror(-fd)}")
    return fd


def ensure_bpffs(root: Path) -> bool:
    """bpffs mounted where ``root`` lives; mounted here (CAP_SYS_ADMIN) if missing."""
    mount = BPFFS if root.is_relative_to(BPFFS) else root.parent
    if _is_bpffs(mount):
        return True
    log.info("bpffs is not mounted; mounting it at %s", mount)
    result = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(mount)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not _is_bpffs(mount):
        why = " ".join(result.stderr.split()) or "not a bpf file system afterwards"
        log.warning(
            "bpffs is not mounted at %s and mounting it failed (%s): programs will not "
            "survive a crash of the sidecar. Mount it first (mount -t bpf bpf %s; in "
            "Kubernetes a hostPath volume of /sys/fs/bpf) or give the sidecar CAP_SYS_ADMIN",
            mount,
            why,
            mount,
        )
        return False
    return True


def _is_bpffs(path: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if left.split()[4] == str(path) and right.split()[0] == "bpf":
            return True
    return False


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks after boot; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22


@dataclass
class Meta:
    attach_time_ns: int
    heartbeat_ns: int
    pid: int
    start: int

    def owner_alive(self) -> bool:
        return self.pid > 0 and process_start(self.pid) == self.start


class PinDir:
    """One instance's folder in bpffs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._meta_fd: int | None = None

    def _meta(self) -> int:
        if self._meta_fd is None:
            self._meta_fd = obj_get(self.path / "meta")
        return self._meta_fd

    def read_meta(self) -> Meta:
        fd = self._meta()
        values = [struct.unpack("<Q", _lookup(fd, i, 8))[0] for i in range(4)]
        return Meta(*values)

    def write_owner(self) -> None:
        fd = self._meta()
        pid = os.getpid()
        _update(fd, META_PID, struct.pack("<Q", pid))
        _update(fd, META_START, struct.pack("<Q", process_start(pid) or 0))
        self.heartbeat()

    def heartbeat(self) -> None:
        _update(self._meta(), META_HEARTBEAT, struct.pack("<Q", time.time_ns()))

    def create(self, attach_time_ns: int, layout: dict[str, Any]) -> None:
        """Make the folder with its metadata; links and maps are pinned by the caller."""
        self.path.mkdir(mode=0o700, parents=True)
        meta = create_array(8, 4)
        try:
            _update(meta, META_ATTACH, struct.pack("<Q", attach_time_ns))
            obj_pin(meta, self.path / "meta")
        finally:
            os.close(meta)
        data = json.dumps(layout).encode()
        if len(data) + 4 > LAYOUT_MAX:
            raise PinError(errno.E2BIG, f"the layout of {self.path.name} is too large to pin")
        blob = create_array(LAYOUT_MAX, 1)
        try:
            _update(blob, 0, struct.pack("<I", len(data)) + data.ljust(LAYOUT_MAX - 4, b"\0"))
            obj_pin(blob, self.path / "layout")
        finally:
            os.close(blob)
        self.write_owner()

    def layout(self) -> dict[str, Any]:
        fd = obj_get(self.path / "layout")
        try:
            raw = _lookup(fd, 0, LAYOUT_MAX)
        finally:
            os.close(fd)
        (n,) = struct.unpack_from("<I", raw)
        result: dict[str, Any] = json.loads(raw[4 : 4 + n])
        return result

    def pin(self, fd: int, name: str) -> None:
        obj_pin(fd, self.path / name)

    def get(self, name: str) -> int:
        return obj_get(self.path / name)

    def remove(self) -> None:
        """Unpin everything: links go, so the programs detach once no fd holds them."""
        if self._meta_fd is not None:
            os.close(self._meta_fd)
            self._meta_fd = None
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        if self._meta_fd is not None:
            os.close(self._meta_fd)
            self._meta_fd = None


def sweep(root: Path, lease_s: float, keep: Collection[str] = ()) -> list[str]:
    """Remove instances whose owner is dead and whose lease ran out; their names."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    now = time.time_ns()
    for path in sorted(root.iterdir()):
        if path.name in keep:
            continue
        pins = PinDir(path)
        try:
            meta = pins.read_meta()
        except (OSError, struct.error):
            # no readable metadata: a folder a crash left half made
            meta = Meta(0, 0, 0, 0)
        try:
            if meta.owner_alive():
                continue
            if (now - meta.heartbeat_ns) / 1e9 <= lease_s:
                continue
        finally:
            pins.close()
        log.info(
            "removing pinned program instance %s: its sidecar died more than %.0fs ago",
            path.name,
            lease_s,
        )
        pins.remove()
        removed.append(path.name)
    return removed
