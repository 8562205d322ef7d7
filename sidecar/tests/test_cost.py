"""The agent's own cost: BPF run-time statistics per program, the sidecar's CPU and RSS."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebpf_sidecar import cost
from ebpf_sidecar.programs import ProgramManager
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


@pytest.mark.parametrize(
    ("function", "hook"),
    [
        ("tracepoint__sched__sched_switch", "tracepoint:sched:sched_switch"),
        ("raw_tracepoint__sys_enter", "raw_tracepoint:sys_enter"),
        ("perf_event__cpu_clock", "perf_event:cpu-clock"),
        ("helper", "helper"),
    ],
)
def test_hooks_are_named_as_the_manifests_name_them(function: str, hook: str) -> None:
    assert cost.hook_of(function) == hook


@pytest.fixture
def run_time_stats(needs_root: None) -> Iterator[int]:
    fd = cost.enable_run_time_stats()
    assert fd is not None, "BPF_ENABLE_STATS refused (kernel 5.8+, CAP_SYS_ADMIN)"
    yield fd
    os.close(fd)


def _by_hook(costs: list[pb.ProgramCost]) -> dict[str, pb.ProgramCost]:
    return {c.hook: c for c in costs}


def test_runs_grow_by_at_least_the_hooks_firings(
    programs: ProgramManager, run_time_stats: int
) -> None:
    loaded = programs.acquire("syscalls", {})
    try:
        assert set(loaded.progs) == set(loaded.program.hooks)
        before = _by_hook(loaded.costs())
        n = 5000
        for _ in range(n):
            os.getppid()
        after = _by_hook(loaded.costs())
        for hook in ("raw_tracepoint:sys_enter", "raw_tracepoint:sys_exit"):
            # other processes' syscalls run it too: at least n
            assert after[hook].runs - before[hook].runs >= n
            assert after[hook].run_time_ns > before[hook].run_time_ns
            assert after[hook].program == "syscalls"
            assert after[hook].attach_time_unix_nano == loaded.attach_time_ns
    finally:
        programs.release(loaded)


def test_the_stats_end_with_their_fd_and_the_sysctl_is_left_alone() -> None:
    sysctl = Path("/proc/sys/kernel/bpf_stats_enabled")
    was = sysctl.read_text()
    fd = cost.enable_run_time_stats()
    assert fd is not None
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-stats"
        assert sysctl.read_text() == was
    finally:
        os.close(fd)
    assert sysctl.read_text() == was


def _proc_cpu_s(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_rss(status: str) -> int:
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_own_cpu_and_rss_agree_with_proc() -> None:
    usage = cost.SidecarUsage(run_time_stats=True)
    end = time.process_time() + 0.2
    while time.process_time() < end:  # some CPU time of our own to compare
        pass
    before = _proc_cpu_s(Path("/proc/self/stat").read_text())
    rss_before = _vm_rss(Path("/proc/self/status").read_text())
    c = usage.cost()
    after = _proc_cpu_s(Path("/proc/self/stat").read_text())
    rss_after = _vm_rss(Path("/proc/self/status").read_text())
    tick = 1 / os.sysconf("SC_CLK_TCK")
    # /proc/self/stat truncates to clock ticks
    assert before - tick <= c.cpu_time_ns / 1e9 <= after + 2 * tick
    assert min(rss_before, rss_after) - (1 << 20) <= c.memory_rss_bytes
    assert c.memory_rss_bytes <= max(rss_before, rss_after) + (1 << 20)
    assert c.start_time_unix_nano == usage.start_time_ns and c.run_time_stats
