"""Write-behind maps: a read sees what the CPUs still hold in their caches.

`cpu` adds context switches into a per-CPU cache and writes an entry into
process_cpu only when its slot is taken or the sidecar raises its barrier
(ebpf_sidecar.write_behind). A process that switched and then blocked has
its last switches only in a cache: a read without the barrier misses them
(tests/test_accuracy_cpu.py fails then), with it they are exact.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebpf_sidecar.libbpf import online_cpus
from ebpf_sidecar.programs import ProgramManager
from ebpf_sidecar.write_behind import CpuVisitor, WriteBehind
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from snapshots import column_sum

pytestmark = pytest.mark.usefixtures("needs_root")

# Blocks on stdin; "sleep n" makes n voluntary switches, then it says "done".
SLEEPER = r"""
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(int(line.split()[1])):
        time.sleep(0.0005)
    print("done", flush=True)
"""


class Sleeper:
    def __init__(self, comm: str, cpu: int) -> None:
        self.comm = comm
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SLEEPER, comm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        os.sched_setaffinity(self.proc.pid, {cpu})
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout
        return self.proc.stdout.readline().strip()

    def sleep(self, n: int) -> None:
        """n voluntary switches; returns once it blocks on its stdin again."""
        assert self.proc.stdin
        self.proc.stdin.write(f"sleep {n}\n")
        self.proc.stdin.flush()
        assert self._line() == "done"
        deadline = time.monotonic() + 10
        while Path(f"/proc/{self.proc.pid}/wchan").read_text() not in (
            "pipe_read",
            "anon_pipe_read",
        ):
            assert time.monotonic() < deadline, "the sleeper did not block on its stdin"
            time.sleep(0.001)

    def voluntary(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
        raise AssertionError("no voluntary_ctxt_switches")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def sleeper() -> Iterator[Sleeper]:
    s = Sleeper(f"wbehind{os.getpid() % 10000}", cpu=min(online_cpus()))
    yield s
    s.close()


def _voluntary(snap: pb.MapSnapshot, pid: int, comm: str) -> int:
    return column_sum(snap, "voluntary", pid=pid, comm=comm)


def test_a_read_sees_the_switches_still_cached(programs: ProgramManager, sleeper: Sleeper) -> None:
    loaded = programs.acquire("cpu", {})
    reader = loaded.readers["process_cpu"]
    assert reader.write_behind is not None, "process_cpu is read without its barrier"
    sleeper.sleep(1)  # its entry exists before the window opens
    first = pb.MapSnapshot()
    reader.read(first)
    kernel_first = sleeper.voluntary()
    sleeper.sleep(300)
    second = pb.MapSnapshot()
    reader.read(second)
    kernel_second = sleeper.voluntary()
    pid = sleeper.proc.pid
    ours = _voluntary(second, pid, sleeper.comm) - _voluntary(first, pid, sleeper.comm)
    # Every switch before a read is in it: the sleeper's last ones (and the
    # one that blocked it) were only in its CPU's cache when the read began.
    assert ours == kernel_second - kernel_first >= 300
    assert first.late_cpus == second.late_cpus == 0
    generation = reader.write_behind.flushed_counts()
    assert all(generation[c] == max(generation) > 0 for c in online_cpus()), generation


class _NoVisits(CpuVisitor):
    """A visitor allowed on the first CPU only, that moves nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self.visits = 0

    def visit(self) -> None:
        self.visits += 1

    @staticmethod
    def allowed() -> set[int]:
        return {min(online_cpus())}


BARRIER_MAPS = """
BPF_ARRAY(wb_generation, u64, 1);
BPF_PERCPU_ARRAY(wb_flushed, u64, 1);
"""


@pytest.fixture
def barrier_maps() -> Iterator[Any]:
    """The barrier's maps with no program behind them: no CPU ever answers."""
    from bcc import BPF

    b = BPF(text=BARRIER_MAPS.encode())
    try:
        yield b
    finally:
        b.cleanup()


def test_cpus_that_never_write_their_cache_are_named_once(
    barrier_maps: Any, caplog: pytest.LogCaptureFixture
) -> None:
    visitor = _NoVisits()
    barrier = WriteBehind([barrier_maps[b"wb_generation"], barrier_maps[b"wb_flushed"]], visitor)
    with caplog.at_level(logging.WARNING, logger="ebpf_sidecar.write_behind"):
        late = barrier.flush(timeout=0.2)
        assert late == sorted(online_cpus())
        assert visitor.visits >= 2, "a silent CPU it may run on is visited again"
        first = caplog.text
        barrier.flush(timeout=0.05)
    visited = min(online_cpus())
    assert f"CPUs [{visited}] did not write" in first and "not reached in 0.2 s" in first
    others = sorted(online_cpus() - {visited})
    if others:
        assert f"CPUs {others} did not write" in first and "not in this process's cpuset" in first
    assert caplog.text == first, "the same CPUs are reported again"
