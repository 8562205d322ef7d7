"""Write-behind maps: before a read, make the program write what each CPU still holds.

A program may add its most frequent updates into a small per-CPU cache and
write them into a map later (the manifest's ``write_behind``; bpf/cpu/cpu.c
shows the program's side): a context switch costs ~40 % less when `cpu`
does not look its process up in a hash on every switch (docs/overhead.md).
A read must still see every update made before it, so the sidecar raises a
barrier first: it bumps ``<prefix>_generation``, makes every CPU do a
context switch (the program writes its whole cache at the first event after
a bump, then stores the count in its CPU's ``<prefix>_flushed``), and waits
until every CPU shows the count. The hook must fire on every CPU at a
context switch (``sched_switch``) for the visit to reach it.

A CPU the sidecar may not run on (a cpuset that leaves it out) is not
visited: its cache is written at its own next context switch, so what its
processes did since their last write goes out one read late. Such CPUs are
named in the log once.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ebpf_sidecar.libbpf import online_cpus, read_u64, write_u64

log = logging.getLogger(__name__)

# How long a read waits for every CPU to write its cache. A CPU reached by
# the visiting thread writes it within microseconds; one held by a real-time
# task runs the visitor only when the kernel's fair server lets it (50 ms of
# every second by default).
BARRIER_TIMEOUT_S = 1.5
# Kernels do not raise sched_switch for every switch (bpf/cpu/cpu.c,
# untraced_slice): a CPU still silent after this long is visited again.
REVISIT_S = 0.05


class CpuVisitor:
    """A thread that moves itself onto each CPU this process may use, in turn.

    A thread arriving on a CPU is switched in there: that CPU runs its
    ``sched_switch`` programs. ``sched_setaffinity()`` returns once the thread
    runs on the new CPU, so when a visit ends every CPU has switched at least
    once since it began. The calls go through ctypes, which releases the GIL
    while the thread waits to be moved.
    """

    def __init__(self) -> None:
        self._libc = ct.CDLL(None, use_errno=True)
        self._wake = threading.Condition()
        self._requested = 0  # visits asked for
        self._started = 0  # visits begun
        self._thread: threading.Thread | None = None

    def visit(self) -> None:
        """Start a visit of every CPU (after the one under way, if any); does not wait."""
        with self._wake:
            self._requested += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ebpf-cpu-visitor", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    @staticmethod
    def allowed() -> set[int]:
        """The CPUs this process may run on (its main thread's affinity: the cpuset)."""
        return os.sched_getaffinity(os.getpid())

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._started == self._requested:
                    self._wake.wait()
                self._started = self._requested
            cpus = sorted(self.allowed())
            for cpu in cpus:
                self._set_affinity([cpu])
            self._set_affinity(cpus)

    def _set_affinity(self, cpus: Sequence[int]) -> None:
        words = (max(cpus) // 64) + 1
        mask = (ct.c_uint64 * words)()
        for cpu in cpus:
            mask[cpu // 64] |= 1 << (cpu % 64)
        if self._libc.sched_setaffinity(0, ct.sizeof(mask), ct.byref(mask)) != 0:
            err = ct.get_errno()  # the CPU went offline or out of the cpuset meanwhile
            log.debug("cannot move to CPUs %s: %s", list(cpus), os.strerror(err))


_visitor: CpuVisitor | None = None
_visitor_lock = threading.Lock()


def cpu_visitor() -> CpuVisitor:
    """The process's one visitor, started on first use."""
    global _visitor
    with _visitor_lock:
        if _visitor is None:
            _visitor = CpuVisitor()
        return _visitor


class WriteBehind:
    """The barrier of one write-behind map.

    ``tables``: the maps ``<prefix>_generation`` (u64[1]) and
    ``<prefix>_flushed`` (per-CPU u64[1]).
    """

    def __init__(self, tables: Sequence[Any], visitor: CpuVisitor | None = None) -> None:
        generation, self.flushed = tables
        self.generation_fd = int(generation.map_fd)
        self.visitor = visitor or cpu_visitor()
        self._lock = threading.Lock()
        self._reported: set[int] = set()

    def flush(self, timeout: float = BARRIER_TIMEOUT_S) -> list[int]:
        """Make every CPU write its cache; the CPUs that had not when the wait
        ended (not visited, or not reached in time)."""
        with self._lock:  # two readers must not hand out the same count
            generation = read_u64(self.generation_fd) + 1
            write_u64(self.generation_fd, generation)
        online = online_cpus()
        visited = self.visitor.allowed() & online
        deadline = time.monotonic() + timeout
        self.visitor.visit()
        revisit = time.monotonic() + REVISIT_S
        while True:
            flushed = self.flushed_counts()
            late = {c for c in online if c < len(flushed) and flushed[c] < generation}
            now = time.monotonic()
            if not late & visited or now >= deadline:
                break
            if now >= revisit:
                self.visitor.visit()
                revisit = now + REVISIT_S
            time.sleep(0.0002)
        for cpus, why in (
            (late - visited - self._reported, "not in this process's cpuset"),
            ((late & visited) - self._reported, f"not reached in {timeout} s"),
        ):
            if cpus:
                self._reported |= cpus
                log.warning(
                    "CPUs %s did not write their cached updates before a read (%s); what "
                    "their processes did since goes out after their next context switch",
                    sorted(cpus),
                    why,
                )
        return sorted(late)

    def flushed_counts(self) -> list[int]:
        """Per possible CPU, the barrier count it last wrote its cache for."""
        return list(self.flushed[ct.c_int(0)])  # as maps.sum_counter reads a counter
