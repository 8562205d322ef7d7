"""process: processes created and exited, counted exactly for one parent.

A parent with a comm of its own starts THREADS threads (which are not
processes and must count in neither metric) and then N children, each a
copy of /bin/true under a name of its own, one after another. The kernel's
own count, /proc/stat `processes` (total_forks), counts every task created on
the machine, threads included, so it only bounds ours from above.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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

N = 200
THREADS = 20
CREATED = "ebpf_process_created_total"
EXITS = "ebpf_process_exits_total"

PARENT = r"""
import ctypes, subprocess, sys, threading
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
child, n, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.stdin.readline()
started = [threading.Thread(target=lambda: None) for _ in range(threads)]
for t in started:
    t.start()
for t in started:
    t.join()
for _ in range(n):
    subprocess.run([child], check=True)
"""


def forks_total() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise AssertionError("/proc/stat has no processes line")


def test_created_and_exited_processes_are_counted_exactly(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    _, sock = sidecar
    port = free_port()
    tag = os.getpid() % 100_000
    parent_comm, child_comm = f"e2e-par-{tag}", f"e2e-true-{tag}"
    child = tmp_path / child_comm  # exec names the process after the file
    shutil.copy("/bin/true", child)
    receiver = {
        "endpoint": f"unix://{sock}",
        "collection_interval": "1s",
        "programs": [{"name": "process"}],
    }
    col = start_collector(pipeline_config(receiver, port), tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, parent_comm, str(child), str(N), str(THREADS)],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(f"first {CREATED} scrape", with_a_fork(lambda: value(scrape(port), CREATED)), 30)
        kernel_before = forks_total()
        assert parent.stdin
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.wait(60) == 0
        kernel = forks_total() - kernel_before

        def counts() -> tuple[float, float, float]:
            s = scrape(port)
            return (
                value(s, CREATED, process_executable_name=parent_comm) or 0,
                value(s, EXITS, process_executable_name=child_comm) or 0,
                value(s, EXITS, process_executable_name=parent_comm) or 0,
            )

        wait_for(
            f"{N} exits of {child_comm} and the exit of {parent_comm}",
            lambda: (c := counts())[1] >= N and c[2] >= 1,
            15,
        )
        time.sleep(2.5)  # two more snapshots: nothing more is counted
        created, child_exits, parent_exits = counts()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        col.stop()
    print(
        f"created={created:.0f} child_exits={child_exits:.0f} "
        f"parent_exits={parent_exits:.0f} proc_stat_forks={kernel}"
    )
    # Exact: both names exist only in this test. The parent's threads are not
    # processes: they count neither as created nor, when they exit, as exits
    # (only the thread group leader's exit counts, once).
    assert created == N
    assert child_exits == N
    assert parent_exits == 1
    # total_forks counts the parent's threads and every other task created
    # on the machine meanwhile, so it is at least ours.
    assert kernel >= N + THREADS
