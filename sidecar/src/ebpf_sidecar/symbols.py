"""Stack addresses to function names: BCC's symbolizer for user frames, kallsyms for kernel ones.

User frames go through BCC's per-process symbol cache (``bcc_symcache_new``,
the code behind ``BPF.sym``): it reads ``/proc/<pid>/maps`` and the ELF
symbol tables (and debuglink / build-id debug files) of the mapped files,
through ``/proc/<pid>/root`` for processes in other mount namespaces
(containers), and demangles C++ names. One cache per process, keyed by pid
and start time (a reused pid gets a fresh one), at most ``max_processes`` of
them: the least recently used is freed (BCC's own ``BPF._sym_caches`` would
grow without bound). A frame missing from a process's modules makes its
cache reread the mappings once per read (a library loaded since); a process
whose mappings are gone (it exited before its samples were read) keeps
what its cache already knew, and frames it cannot name stay unresolved.

Kernel frames come from ``/proc/kallsyms`` through the ``ksym`` decoder's
table (:data:`ebpf_sidecar.decoders.ksym.KSYMS`, opened while the sidecar
could still read real addresses).

An unresolved frame keeps its module (the mapped file) and its address, as
``<module>+0x<offset>`` or ``0x<address>`` when not even the module is known;
a user address in no mapping ends its stack (see :meth:`Symbolizer.user`).
"""

from __future__ import annotations

import ctypes as ct
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from ebpf_sidecar import pins
from ebpf_sidecar.decoders import ksym

DEFAULT_MAX_PROCESSES = 512
DEFAULT_MAX_FRAMES = 65536  # named frames kept across reads, about 200 bytes each
KERNEL_MODULE = "[kernel.kallsyms]"


@dataclass(frozen=True)
class Frame:
    function: str
    module: str  # the mapped file's path ("" if unknown), or KERNEL_MODULE
    address: int
    resolved: bool
    kernel: bool


class _ProcessSymbols:
    """BCC's symbol cache of one process."""

    def __init__(self, pid: int) -> None:
        from bcc import SymbolCache

        self.pid = pid
        self.cache: Any = SymbolCache(pid)
        self.refreshed_for = -1  # the read that last refreshed the mappings

    def resolve(self, addr: int) -> tuple[str | None, int, str]:
        name, offset, module = self.cache.resolve(addr, True)
        return (
            name.decode(errors="replace") if name else None,
            int(offset),
            module.decode(errors="replace") if module else "",
        )

    def refresh(self) -> None:
        from bcc.libbcc import lib

        lib.bcc_symcache_refresh(self.cache.cache)

    def free(self) -> None:
        from bcc.libbcc import lib

        if self.cache.cache:
            lib.bcc_free_symcache(self.cache.cache, self.pid)
            self.cache.cache = ct.c_void_p(None)


class _Caches(LRUCache[tuple[int, int], _ProcessSymbols]):
    def popitem(self) -> tuple[tuple[int, int], _ProcessSymbols]:
        key, value = super().popitem()
        value.free()
        return key, value


class Symbolizer:
    """Names for the frames of stacks; one instance per reader, thread-safe."""

    def __init__(
        self, max_processes: int = DEFAULT_MAX_PROCESSES, max_frames: int = DEFAULT_MAX_FRAMES
    ) -> None:
        self._caches = _Caches(maxsize=max_processes)
        self._lock = threading.Lock()
        self._read = 0
        self._starts: dict[int, int | None] = {}  # pid -> start time, in this read
        # (pid, start time, address) -> a named frame
        self._frames: LRUCache[tuple[int, int | None, int], Frame] = LRUCache(maxsize=max_frames)
        self.unresolved = 0  # frames that kept only a module and address, ever

    def next_read(self) -> None:
        """A new read of samples: a cache may refresh its mappings once in it."""
        with self._lock:
            self._read += 1
            self._starts.clear()

    def _named(self, pid: int, proc: _ProcessSymbols | None, addr: int) -> Frame:
        """A user frame, from the frames named before when it was (hot stacks recur)."""
        key = (pid, self._starts.get(pid), addr)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._user_frame(proc, addr)
            if frame.resolved:
                self._frames[key] = frame
        return frame

    def _process(self, pid: int) -> _ProcessSymbols | None:
        # one look at /proc/<pid>/stat per process and read
        if pid not in self._starts:
            self._starts[pid] = pins.process_start(pid)
        start = self._starts[pid]
        key = (pid, start if start is not None else -1)
        found = self._caches.get(key)
        if found is None:
            if start is None:
                # gone before its first read: nothing left to read its maps from
                return None
            found = _ProcessSymbols(pid)
            self._caches[key] = found
        return found

    def user(self, pid: int, addresses: Iterable[int]) -> list[Frame]:
        """Leaf first. An address in no mapping of the process ends the stack:
        a return address is always in mapped code, so the frame pointer chain
        broke there (code built without frame pointers) and what follows is
        garbage; the frame is kept (as its address), the rest dropped."""
        with self._lock:
            proc = self._process(pid)
            frames = []
            for addr in addresses:
                frame = self._named(pid, proc, addr)
                frames.append(frame)
                if not frame.resolved and not frame.module:
                    break
            return frames

    def _user_frame(self, proc: _ProcessSymbols | None, addr: int) -> Frame:
        if proc is None:
            self.unresolved += 1
            return Frame(hex(addr), "", addr, False, False)
        name, offset, module = proc.resolve(addr)
        if name is None and not module and proc.refreshed_for != self._read:
            proc.refreshed_for = self._read
            proc.refresh()
            name, offset, module = proc.resolve(addr)
        if name is not None:
            return Frame(name, module, addr, True, False)
        self.unresolved += 1
        if module:
            return Frame(f"{os.path.basename(module)}+{offset:#x}", module, addr, False, False)
        return Frame(hex(addr), "", addr, False, False)

    def kernel(self, addresses: Iterable[int]) -> list[Frame]:
        frames = []
        for addr in addresses:
            name = ksym.KSYMS.name(addr)
            resolved = not name.startswith("0x")
            if not resolved:
                self.unresolved += 1
            frames.append(Frame(name, KERNEL_MODULE, addr, resolved, True))
        return frames

    def close(self) -> None:
        with self._lock:
            while self._caches:
                self._caches.popitem()
