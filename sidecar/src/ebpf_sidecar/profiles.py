"""Reading a stack-sampling program's counts into symbolized samples.

A program with a manifest ``profile`` section (the catalog's ``profile``)
counts samples in the kernel per (process, cgroup, user stack id, kernel
stack id); the stacks live once each in a BPF_STACK_TRACE map. Every read
takes the counts with BPF_MAP_LOOKUP_AND_DELETE_BATCH (through the map's
MapReader, so the key decoders name the container and pod as for metrics),
walks the stacks they reference, symbolizes them (:mod:`ebpf_sidecar.symbols`)
and then deletes every stack no count references any more: the stack map holds
one interval's stacks, never a growing history. A stack still referenced by a
count taken since the read stays for the next one.

A stack id below zero is no stack: -EFAULT (none to take: a kernel thread's
user stack, the kernel stack of a sample taken in user mode) adds no frames;
any other error is a lost stack (the map was full, or its bucket taken) and
becomes one frame ``[lost user stack]`` / ``[lost kernel stack]``, so the
samples still count. A stack that vanished between count and read is
``[lost ... stack]`` too.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ebpf_sidecar.catalog import ProfileSpec, Program
from ebpf_sidecar.maps import MapReader
from ebpf_sidecar.symbols import Frame, Symbolizer
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

LOST_USER = "[lost user stack]"
LOST_KERNEL = "[lost kernel stack]"


@dataclass(frozen=True)
class Sample:
    pid: int
    comm: str
    container_id: str
    pod_uid: str
    frames: tuple[Frame, ...]  # leaf first: kernel frames, then user frames
    count: int


@dataclass
class Read:
    """One interval's samples and what could not be counted or named."""

    samples: list[Sample] = field(default_factory=list)
    # the counts map was full: samples not counted, since the program loaded
    dropped_total: int = 0
    # frames that kept only a module and address, in this read
    unresolved_frames: int = 0

    @property
    def total(self) -> int:
        return sum(s.count for s in self.samples)


def profile_spec(program: Program) -> ProfileSpec:
    if program.profile is None:
        raise ValueError(f"program {program.name!r} samples no stacks (no profile section)")
    return program.profile


class StackReader:
    """Reads and clears one loaded instance's samples; one reader per instance.

    :meth:`prefetch`, called more often than :meth:`read` (every second by
    the server), symbolizes the user stacks counted so far while their
    processes still run: a process that lives a second or more gets names
    even when it exits before the interval's read.
    """

    def __init__(self, program: Program, bpf: Any, counts: MapReader, symbolizer: Symbolizer):
        self.spec = profile_spec(program)
        self.counts = counts
        self.stacks = bpf[self.spec.stack_map.encode()]
        self.symbolizer = symbolizer
        self._lock = threading.Lock()
        # (pid, user stack id) -> frames, symbolized ahead of the read
        self._early: dict[tuple[int, int], tuple[Frame, ...]] = {}

    def read(self) -> Read:
        with self._lock:
            try:
                return self._read()
            finally:
                self._early.clear()  # stack ids are deleted and reused after a read

    def prefetch(self) -> None:
        with self._lock:
            for key in self.counts.table:
                pid = int(getattr(key, self.counts.spec.pid_field))
                uid = int(getattr(key, self.spec.user_stack_field))
                if uid >= 0 and (pid, uid) not in self._early:
                    self._early[(pid, uid)] = self._user(pid, uid)

    def _read(self) -> Read:
        spec = self.spec
        snap = pb.MapSnapshot()
        self.counts.read(snap, clear=True)
        cols = {c.field: _values(c) for c in [*snap.key_columns, *snap.value_columns]}
        pids = cols[self.counts.spec.pid_field]
        users, kernels = cols[spec.user_stack_field], cols[spec.kernel_stack_field]
        counts = cols[spec.count_field]
        comms = cols.get("comm", [""] * len(pids))
        containers = cols.get("container_id", [""] * len(pids))
        pods = cols.get("pod_uid", [""] * len(pids))
        self.symbolizer.next_read()
        before = self.symbolizer.unresolved
        kernel_frames: dict[int, tuple[Frame, ...]] = {}
        user_frames: dict[tuple[int, int], tuple[Frame, ...]] = {}
        out = Read(dropped_total=snap.dropped_updates)
        for i, pid in enumerate(pids):
            uid, kid = int(users[i]), int(kernels[i])
            if kid not in kernel_frames:
                kernel_frames[kid] = self._kernel(kid)
            if (pid, uid) not in user_frames:
                early = self._early.get((int(pid), uid))
                user_frames[(pid, uid)] = early or self._user(int(pid), uid)
            out.samples.append(
                Sample(
                    pid=int(pid),
                    comm=str(comms[i]),
                    container_id=str(containers[i]),
                    pod_uid=str(pods[i]),
                    frames=kernel_frames[kid] + user_frames[(pid, uid)],
                    count=int(counts[i]),
                )
            )
        self._delete_unreferenced()
        out.unresolved_frames = self.symbolizer.unresolved - before
        return out

    def _addresses(self, stack_id: int) -> list[int] | None:
        try:
            return [int(a) for a in self.stacks.walk(stack_id)]
        except KeyError:
            return None

    def _kernel(self, stack_id: int) -> tuple[Frame, ...]:
        if stack_id == -errno.EFAULT:
            return ()
        addrs = self._addresses(stack_id) if stack_id >= 0 else None
        if addrs is None:
            return (Frame(LOST_KERNEL, "", 0, False, True),)
        return tuple(self.symbolizer.kernel(addrs))

    def _user(self, pid: int, stack_id: int) -> tuple[Frame, ...]:
        if stack_id == -errno.EFAULT:
            return ()
        addrs = self._addresses(stack_id) if stack_id >= 0 else None
        if addrs is None:
            return (Frame(LOST_USER, "", 0, False, False),)
        return tuple(self.symbolizer.user(pid, addrs))

    def _delete_unreferenced(self) -> None:
        """Every stack no count references now (those counted since the read stay)."""
        spec = self.spec
        referenced: set[int] = set()
        table = self.counts.table
        for key in table:
            referenced.add(int(getattr(key, spec.user_stack_field)))
            referenced.add(int(getattr(key, spec.kernel_stack_field)))
        stale = [k for k in self.stacks if int(k.value) not in referenced]
        for k in stale:
            with contextlib.suppress(KeyError):
                del self.stacks[k]


def _values(column: pb.Column) -> list[Any]:
    return list(column.uints or column.ints or column.strings)


def folded(samples: Iterable[Sample]) -> dict[str, int]:
    """Folded stacks (``comm;root;...;leaf`` → count), the format flame graph tools read."""
    out: dict[str, int] = {}
    for s in samples:
        names = [s.comm or "?", *(f.function for f in reversed(s.frames))]
        line = ";".join(n.replace(";", ":") for n in names)
        out[line] = out.get(line, 0) + s.count
    return out
