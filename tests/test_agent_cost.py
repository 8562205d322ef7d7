"""The agent's own cost in the receiver's self-metrics, against the kernel's accounting.

BPF run counts are checked against a workload that fires a hook a known
number of times; the sidecar's CPU time and RSS against /proc/<pid>.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import (
    Process,
    SyscallChild,
    expose_self_telemetry,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    start_sidecar,
    value,
    wait_for,
    wait_started,
)

RUNS = "otelcol_receiver_ebpf_program_runs_total"
RUN_TIME = "otelcol_receiver_ebpf_program_run_time_total"
MISSES = "otelcol_receiver_ebpf_program_recursion_misses_total"
CPU = "otelcol_receiver_ebpf_sidecar_cpu_time_total"
RSS = "otelcol_receiver_ebpf_sidecar_memory_rss"
SYS_ENTER = {"program": "syscalls", "hook": "raw_tracepoint:sys_enter"}


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of /proc/<pid>/stat, in seconds (whole clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(x for x in status if x.startswith("VmRSS:")).split()[1]) * 1024


def test_program_runs_and_sidecar_usage_match_the_kernels_accounting(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    proc, sock = sidecar
    pid = proc.proc.pid
    # the sidecar holds run-time statistics on with an fd of its own
    links = {os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()}
    assert "anon_inode:bpf-stats" in links
    port, telemetry = free_port(), free_port()
    cfg = pipeline_config(
        {
            "endpoint": f"unix://{sock}",
            "collection_interval": "1s",
            "programs": [{"name": "syscalls"}],
        },
        port,
    )
    expose_self_telemetry(cfg, telemetry)
    col = start_collector(cfg, tmp_path)
    child = SyscallChild("e2e-cost", 20000)
    try:
        wait_started(col, "the syscalls program")
        before = wait_for(
            "the runs self-metric",
            lambda: value(scrape(telemetry), RUNS, **SYS_ENTER),
            60,
        )
        samples = scrape(telemetry)
        hooks = {lab["hook"] for n, lab, _ in samples if n == RUNS and lab["program"] == "syscalls"}
        assert hooks == {"raw_tracepoint:sys_enter", "raw_tracepoint:sys_exit"}
        assert value(samples, MISSES, **SYS_ENTER) is not None, "recursion misses has a series"

        child.run()  # exactly child.n getppid() calls, each entering sys_enter
        grown = wait_for(
            "the runs self-metric to count the workload's calls",
            lambda: (
                v
                if (v := value(scrape(telemetry), RUNS, **SYS_ENTER)) is not None
                and v - before >= child.n
                else None
            ),
            30,
        )
        assert grown - before >= child.n
        assert (value(scrape(telemetry), RUN_TIME, **SYS_ENTER) or 0) > 0

        # CPU time: the sidecar's total at its latest snapshot lies between
        # /proc before a snapshot and /proc after the scrape (ticks truncate).
        tick = 1 / os.sysconf("SC_CLK_TCK")
        cpu_before = _proc_cpu_s(pid)
        wait_for(
            "a snapshot after reading /proc",
            lambda: v if (v := value(scrape(telemetry), CPU)) and v >= cpu_before else None,
            30,
        )
        rss_before = _vm_rss(pid)
        samples = scrape(telemetry)
        cpu, rss = value(samples, CPU), value(samples, RSS)
        cpu_after, rss_after = _proc_cpu_s(pid), _vm_rss(pid)
        assert cpu is not None and rss is not None
        assert cpu_before <= cpu <= cpu_after + 2 * tick
        # RSS moves a little between the snapshot and the reads: 5 %
        low, high = min(rss_before, rss_after), max(rss_before, rss_after)
        assert low * 0.95 <= rss <= high * 1.05, (rss, rss_before, rss_after)
    finally:
        child.close()
        col.stop()


def test_no_run_time_stats_holds_no_stats_fd(tmp_path: Path) -> None:
    sock = tmp_path / "sidecar.sock"
    proc = start_sidecar(sock, tmp_path / "sidecar.log", "--no-run-time-stats")
    try:
        links = {os.readlink(f) for f in Path(f"/proc/{proc.proc.pid}/fd").iterdir()}
        assert "anon_inode:bpf-stats" not in links
    finally:
        assert proc.stop() == 0, proc.output()
