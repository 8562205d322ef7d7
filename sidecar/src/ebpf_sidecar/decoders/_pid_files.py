"""A bounded, expiring cache of per-process values read from /proc/<pid>/<file>.

Shared by the decoders that resolve a pid (``pid``, ``pid_cgroup``). Values
expire after ``ttl`` seconds because pids are reused and exec renames a
process; a pid with no /proc entry (exited) yields the empty string and is
not cached. A full cache evicts its least recently used value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

from ebpf_sidecar.decoders.base import Column


class PidFileCache:
    def __init__(
        self,
        file: str,
        parse: Callable[[bytes], str | None],
        ttl: float = 10.0,
        max_entries: int = 65536,
        proc: str = "/proc",
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.file = file
        self.parse = parse
        self.ttl = ttl
        self.proc = proc
        self.entries: TTLCache[int, str] = TTLCache(maxsize=max_entries, ttl=ttl, timer=timer)
        # cachetools caches are not thread-safe, and streams decode concurrently.
        self._lock = threading.Lock()

    def get(self, pid: int) -> str:
        with self._lock:
            cached = self.entries.get(pid)
        if cached is not None:
            return cached
        try:
            with open(f"{self.proc}/{pid}/{self.file}", "rb") as f:
                value = self.parse(f.read())
        except OSError:
            value = None
        if value is None:
            return ""
        with self._lock:
            self.entries[pid] = value
        return value

    def decode(self, column: Column) -> list[str]:
        out = []
        for v in column:
            try:
                pid = int(v)
            except (TypeError, ValueError):
                out.append("")
                continue
            out.append(self.get(pid) if pid > 0 else "")
        return out
