"""A bounded, expiring cache of per-process values read from /proc/<pid>/<file>.

Shared by the decoders that resolve a pid (``pid``, ``pid_cgroup``). Values
expire after ``ttl`` seconds because pids are reused and exec renames a
process; a pid with no /proc entry (exited) yields the empty string.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ebpf_sidecar.decoders.base import Column


class PidFileCache:
    def __init__(
        self,
        file: str,
        parse: Callable[[bytes], str | None],
        ttl: float = 10.0,
        max_entries: int = 65536,
        proc: str = "/proc",
    ) -> None:
        self.file = file
        self.parse = parse
        self.ttl = ttl
        self.max_entries = max_entries
        self.proc = proc
        self.entries: dict[int, tuple[str, float]] = {}

    def get(self, pid: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        cached = self.entries.get(pid)
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        try:
            with open(f"{self.proc}/{pid}/{self.file}", "rb") as f:
                value = self.parse(f.read())
        except OSError:
            value = None
        if value is None:
            self.entries.pop(pid, None)
            return ""
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[pid] = (value, now)
        return value

    def decode(self, column: Column) -> list[str]:
        now = time.monotonic()
        out = []
        for v in column:
            try:
                pid = int(v)
            except (TypeError, ValueError):
                out.append("")
                continue
            out.append(self.get(pid, now) if pid > 0 else "")
        return out
