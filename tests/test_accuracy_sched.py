"""runqlat: run queue latency against the kernel's own sched_info accounting.

The kernel keeps, per thread, the total time it waited on a run queue
(``run_delay``, the second field of /proc/<pid>/task/<tid>/schedstat).
runqlat counts each wait as the delta the kernel adds to it at the switch-in
(from sched_info.last_queued), so the sum of our histogram over a window
should equal the sum of run_delay over all threads, less the waits of
queued tasks before they migrated to another CPU (the kernel adds those
when it dequeues the task, with no switch-in).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import (
    BUSY_WORKER,
    Process,
    Samples,
    busy_round,
    free_port,
    hear,
    pipeline_config,
    scrape,
    start_collector,
    wait_for,
)

# More busy processes than CPUs: each CPU has several runnable tasks, and the
# scheduler's slices (a few ms) make them wait for each other well past 1 ms.
WORKERS = 3 * (os.cpu_count() or 2)
BUSY_SECONDS = 3.0
ONE_MS_BOUND = "0.001048576"  # 2^20 ns, the first bucket bound at or above 1 ms


NAME = "ebpf_sched_runqueue_latency_seconds"


def histogram(samples: Samples) -> tuple[float, float, float]:
    """(count, sum in s, count of waits ≤ 2^20 ns) of the run queue histogram."""
    count = sum(v for n, _, v in samples if n == f"{NAME}_count")
    total = sum(v for n, _, v in samples if n == f"{NAME}_sum")
    short = sum(
        v for n, lab, v in samples if n == f"{NAME}_bucket" and lab.get("le") == ONE_MS_BOUND
    )
    return count, total, short


def run_delay_total() -> dict[str, int]:
    """run_delay (ns) of every thread on the machine, by /proc path."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/task/[0-9]*/schedstat"):
        try:
            out[str(stat)] = int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread exited while we looked
    return out


def test_runqueue_latency_matches_run_delay(sidecar: tuple[Process, Path], tmp_path: Path) -> None:
    _, sock = sidecar
    port = free_port()
    receiver = {
        "endpoint": f"unix://{sock}",
        "collection_interval": "1s",
        "programs": [{"name": "runqlat"}],
    }
    col = start_collector(pipeline_config(receiver, port), tmp_path)
    workers: list[subprocess.Popen[str]] = []
    try:
        wait_for(f"first {NAME} scrape", lambda: histogram(scrape(port))[0], 30)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", BUSY_WORKER, str(BUSY_SECONDS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        hear(workers, "ready")
        time.sleep(2.5)  # the workers' start-up waits land in a snapshot before the window
        before, proc_before = histogram(scrape(port)), run_delay_total()
        busy_round(workers)
        time.sleep(2.5)  # two more snapshots: every wait of the window is in
        after, proc_after = histogram(scrape(port)), run_delay_total()
    finally:
        for w in workers:
            if w.stdin:
                w.stdin.close()
            w.wait(10)
        col.stop()
    count = after[0] - before[0]
    ours_s = after[1] - before[1]
    over_1ms = count - (after[2] - before[2])
    # Threads that exited during the window are missing from proc_after; those
    # born in it started from 0.
    kernel_s = sum(v - proc_before.get(k, 0) for k, v in proc_after.items()) / 1e9
    worker_paths = {f"/proc/{w.pid}/task/{w.pid}/schedstat" for w in workers}
    workers_s = (
        sum(v - proc_before.get(k, 0) for k, v in proc_after.items() if k in worker_paths) / 1e9
    )
    print(
        f"waits={count:.0f} over_1ms={over_1ms:.0f} ours={ours_s:.4f}s "
        f"kernel={kernel_s:.4f}s (workers {workers_s:.4f}s)"
    )
    assert over_1ms > 0, (count, over_1ms)
    # Both measure the same intervals (enqueue at wakeup or preemption to
    # switch-in); on a quiet machine the totals agree within 0.3 % (12.19 s
    # vs 12.21 s). The histogram is machine-wide, so the bounds are:
    # at least the busy workers' own waits (which dwarf everything else),
    # less 5 % for the window's edges (/proc and our snapshots are read up
    # to 1 s apart, and waits in flight at an edge fall on one side only);
    # at most 1.25 x every thread's waits, as a thread that exited during the
    # window takes its run_delay with it (measured +12 % while other suites
    # ran). Once, after the OOM test, the machine-wide total was 1 s above
    # ours with a kernel thread (kdamond) showing 0.5 s of waits: not
    # understood, so other threads' waits bound only from above.
    assert 0.95 * workers_s <= ours_s <= 1.25 * kernel_s, (ours_s, workers_s, kernel_s)
