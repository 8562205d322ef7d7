"""``ksym``: a kernel text address to the name of the function holding it.

Symbols come from ``/proc/kallsyms`` (text symbols, types t/T/w/W), loaded
once into a sorted address list and looked up by bisection: an address
resolves to the nearest symbol at or below it. An address below the first
symbol, or more than ``MAX_OFFSET`` past its nearest symbol (likely a module
loaded since), is a miss: it becomes ``0x<hex address>`` (the failure value)
and reloads the table, at most once every ``RELOAD_INTERVAL`` seconds.
Reading real addresses needs CAP_SYSLOG (kptr_restrict shows zeros
otherwise), but only when the file is opened: the kernel decides with the
opener's credentials. The sidecar opens it at start (:meth:`Kallsyms.keep_open`)
and rereads that open file, so the decoder keeps working after it dropped
CAP_SYSLOG.
"""

from __future__ import annotations

import bisect
import io
import os
import threading
import time
from pathlib import Path

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

KALLSYMS = Path("/proc/kallsyms")
MAX_OFFSET = 1 << 20
RELOAD_INTERVAL = 10.0
_TEXT_TYPES = frozenset("tTwW")


class Kallsyms:
    def __init__(self, path: Path = KALLSYMS) -> None:
        self.path = path
        self._addrs: list[int] = []
        self._names: list[str] = []
        self._loaded_at: float | None = None
        self._lock = threading.Lock()
        self._kept_fd: int | None = None

    def keep_open(self) -> None:
        """Open the file now, while the process may see addresses, for every reload."""
        if self._kept_fd is None:
            self._kept_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def _text(self) -> str:
        if self._kept_fd is None:
            return self.path.read_text()
        os.lseek(self._kept_fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._kept_fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks).decode()

    def _load(self) -> None:
        pairs: list[tuple[int, str]] = []
        try:
            with io.StringIO(self._text()) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
                        continue
                    addr = int(parts[0], 16)
                    if addr:
                        pairs.append((addr, parts[2]))
        except (OSError, ValueError):
            pairs = []
        pairs.sort()
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]

    def _find(self, addr: int) -> str | None:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or addr - self._addrs[i] > MAX_OFFSET:
            return None
        return self._names[i]

    def name(self, addr: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._loaded_at is None:
                self._load()
                self._loaded_at = now
            found = self._find(addr)
            if found is None and now - self._loaded_at >= RELOAD_INTERVAL:
                self._load()
                self._loaded_at = now
                found = self._find(addr)
        return found if found is not None else hex(addr)


KSYMS = Kallsyms()


def decode_ksym(column: Column) -> list[str]:
    now = time.monotonic()
    out = []
    for v in column:
        try:
            out.append(KSYMS.name(int(v), now))
        except (TypeError, ValueError):
            out.append(str(v))
    return out


KSYM = Decoder("ksym", pb.FIELD_TYPE_STRING, decode_ksym, failure="0x<hex address>")
