"""oom: a real OOM kill in a memory cgroup against oom_kill in /proc/vmstat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import (
    Process,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    value,
    wait_for,
    with_a_fork,
)

LIMIT = 32 << 20
VICTIM = "e2e-oom-victim"  # a comm of its own (PR_SET_NAME), at most 15 characters
NAME = "ebpf_oom_kills_total"

# Told "go", the victim writes 256 MiB into fresh memory, 8 times its cgroup's
# limit. With no swap to go to, the cgroup's OOM killer kills it (SIGKILL).
VICTIM_CODE = r"""
import ctypes, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
hog = bytearray(b"\x01") * (256 << 20)
sys.stdout.write("survived\n"); sys.stdout.flush()
"""


def vmstat_oom_kills() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, count = line.split()
        if name == "oom_kill":
            return int(count)
    raise AssertionError("/proc/vmstat has no oom_kill counter")


class MemoryCgroup:
    """A child memory cgroup with a hard limit and no swap, on v1 or v2."""

    def __init__(self, name: str, limit: int) -> None:
        self.path, self.v1 = self._root()
        self.path = self.path / name
        self.path.mkdir()
        if self.v1:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
            memsw = self.path / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # swap accounting on: no swap beyond the limit either
                memsw.write_text(str(limit))
        else:
            (self.path / "memory.max").write_text(str(limit))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    @staticmethod
    def _root() -> tuple[Path, bool]:
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
        for _, mnt, fstype, opts, *_ in mounts:
            if fstype == "cgroup" and "memory" in opts.split(","):
                return Path(mnt), True
        for _, mnt, fstype, *_ in mounts:
            root = Path(mnt)
            if fstype == "cgroup2" and "memory" in (root / "cgroup.controllers").read_text():
                subtree = root / "cgroup.subtree_control"
                if "memory" not in subtree.read_text().split():
                    subtree.write_text("+memory")
                return root, False
        raise AssertionError("no memory cgroup controller is mounted (v1 or v2)")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        # The killed task leaves the cgroup once reaped; rmdir may race with it.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextmanager
def oom_victim(comm: str) -> Iterator[Callable[[], None]]:
    """A process named ``comm`` in a memory cgroup of its own (LIMIT, no swap),
    ready; the function yielded tells it to allocate 8 times the limit and
    waits until the cgroup's OOM killer has killed it. Both go at exit."""
    cgroup = MemoryCgroup(f"e2e-oom-{os.getpid()}", LIMIT)
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM_CODE, comm],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def kill() -> None:
        assert victim.stdin
        victim.stdin.write("go\n")
        victim.stdin.flush()
        out, _ = victim.communicate(timeout=60)
        assert victim.returncode == -9, (victim.returncode, out)

    try:
        assert victim.stdin and victim.stdout
        assert victim.stdout.readline().strip() == "ready"
        cgroup.add(victim.pid)
        yield kill
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        cgroup.remove()


def test_oom_kill_is_counted_once(sidecar: tuple[Process, Path], tmp_path: Path) -> None:
    _, sock = sidecar
    port = free_port()
    # `process` is loaded alongside only as a sign of life: the oom map is empty
    # until a kill, and any snapshot means both programs are attached.
    receiver = {
        "endpoint": f"unix://{sock}",
        "collection_interval": "1s",
        "programs": [{"name": "oom"}, {"name": "process"}],
    }
    col = start_collector(pipeline_config(receiver, port), tmp_path)
    try:
        with oom_victim(VICTIM) as kill:
            wait_for(
                "the oom program attached",
                with_a_fork(lambda: value(scrape(port), "ebpf_process_created_total")),
                30,
            )
            ours_before = value(scrape(port), NAME, process_executable_name=VICTIM) or 0
            kernel_before = vmstat_oom_kills()
            kill()
            kernel = vmstat_oom_kills() - kernel_before
        ours = wait_for(
            f"{NAME} of {VICTIM}",
            lambda: value(scrape(port), NAME, process_executable_name=VICTIM),
            15,
        )
        time.sleep(2.5)  # two more snapshots: nothing more is counted
        settled = value(scrape(port), NAME, process_executable_name=VICTIM)
    finally:
        col.stop()
    print(f"ours={ours - ours_before:.0f} kernel={kernel}")
    # Exact: mark_victim fires once per kill, where the kernel counts oom_kill.
    # (No other OOM kill happens on the test machine in these seconds.)
    assert kernel == 1
    assert ours - ours_before == 1
    assert settled == ours
