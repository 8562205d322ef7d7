"""``cgroup``: a cgroup v2 id to the cgroup's path, e.g. ``/kubepods.slice/...``.

The id is what ``bpf_get_current_cgroup_id()`` returns: the kernfs id of the
task's cgroup in the unified (v2) hierarchy, which is also the inode number
of the cgroup's directory. The sidecar finds the cgroup2 mount in
``/proc/self/mountinfo`` wherever it is (``/sys/fs/cgroup`` on a unified
host, ``/sys/fs/cgroup/unified`` on a hybrid one), walks it once and caches
id → path; the root cgroup is ``/``. Paths are relative to the hierarchy
root, as in ``/proc/<pid>/cgroup`` (prefixed by the mount's own root when
only a subtree is mounted).

An id the cache lacks triggers a new walk, at most once every
``REFRESH_INTERVAL`` seconds; a walk keeps the paths of cgroups removed since
(their ids are never reused), so counts of a deleted container keep their
identity. At most ``MAX_ENTRIES`` paths are kept (a walk stops there). An id
that is still unknown, or any id when there is no cgroup2 mount, becomes the
empty string (the failure value). A cgroup name that is not UTF-8 (anyone
allowed to make a cgroup can choose its bytes) shows its invalid bytes as
U+FFFD: the path is text on the wire, and one such name must not make the
whole map unencodable.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

MOUNTINFO = "/proc/self/mountinfo"
REFRESH_INTERVAL = 5.0
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class Mount:
    mountpoint: str  # where cgroup2 is mounted, e.g. /sys/fs/cgroup/unified
    root: str  # which cgroup the mount shows, "/" for the whole hierarchy


def _printable(name: str) -> str:
    """A name as os.scandir returns it (invalid bytes as surrogates) as valid text."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def find_mount(mountinfo_text: str) -> Mount | None:
    """The cgroup2 mount showing the most of the hierarchy (root "/" first)."""
    found: list[Mount] = []
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fstype = right.split(" ", 1)[0]
        fields = left.split()
        if fstype != "cgroup2" or len(fields) < 5:
            continue
        found.append(Mount(mountpoint=_unescape(fields[4]), root=_unescape(fields[3])))
    if not found:
        return None
    return min(found, key=lambda m: len(m.root))


class CgroupPaths:
    """id → path of every cgroup under the cgroup2 mount, refreshed on misses."""

    def __init__(
        self,
        mountinfo: str = MOUNTINFO,
        max_entries: int = MAX_ENTRIES,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.mountinfo = mountinfo
        self.max_entries = max_entries
        self.refresh_interval = refresh_interval
        self._paths: dict[int, str] = {}
        self._walked_at: float | None = None
        self._lock = threading.Lock()
        self.walks = 0

    def mount(self) -> Mount | None:
        try:
            # surrogateescape: a mount point's bytes, whatever they are, stay
            # usable as a path
            with open(self.mountinfo, errors="surrogateescape") as f:
                return find_mount(f.read())
        except OSError:
            return None

    def _walk(self) -> None:
        self.walks += 1
        mount = self.mount()
        if mount is None:
            return
        prefix = "" if mount.root == "/" else _printable(mount.root.rstrip("/"))
        fresh: dict[int, str] = {}
        try:
            fresh[os.stat(mount.mountpoint).st_ino] = prefix or "/"
        except OSError:
            return
        stack = [(mount.mountpoint, prefix)]
        while stack and len(fresh) < self.max_entries:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        path = f"{rel}/{_printable(entry.name)}"
                        fresh[entry.inode()] = path
                        stack.append((entry.path, path))
                        if len(fresh) >= self.max_entries:
                            break
            except OSError:  # removed while walking
                continue
        for cid, path in self._paths.items():  # keep removed cgroups while there is room
            if len(fresh) >= self.max_entries:
                break
            fresh.setdefault(cid, path)
        self._paths = fresh

    def path(self, cgroup_id: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        with self._lock:
            found = self._paths.get(cgroup_id)
            if found is None and (
                self._walked_at is None or now - self._walked_at >= self.refresh_interval
            ):
                self._walk()
                self._walked_at = now
                found = self._paths.get(cgroup_id)
        return found if found is not None else ""

    def all(self) -> dict[int, str]:
        """Every cgroup now (id -> path), walking the mount afresh."""
        with self._lock:
            self._walk()
            self._walked_at = time.monotonic()
            return dict(self._paths)

    def refresh_for(self, ids: Column, newest: float, min_interval: float) -> None:
        """Walk now if any of ``ids`` is unknown and the last walk began before
        ``newest`` (time.monotonic() of the newest event: a cgroup made after
        the walk), and at least ``min_interval`` ago.

        For events, decoded once when they happen: a container started a
        moment ago must not wait ``refresh_interval`` for its name, as a map's
        entries, decoded again at every snapshot, can.
        """
        now = time.monotonic()
        with self._lock:
            if self._walked_at is not None and (
                self._walked_at > newest or now - self._walked_at < min_interval
            ):
                return
            if all(not v or int(v) in self._paths for v in ids):
                return
            self._walk()
            self._walked_at = now

    def decode(self, column: Column) -> list[str]:
        now = time.monotonic()
        out = []
        for v in column:
            try:
                out.append(self.path(int(v), now))
            except (TypeError, ValueError):
                out.append("")
        return out


PATHS = CgroupPaths()

CGROUP = Decoder("cgroup", pb.FIELD_TYPE_STRING, PATHS.decode, failure='""')
