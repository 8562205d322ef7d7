"""faults: page faults of one process against its minflt + majflt in /proc/<pid>/stat."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import Process, free_port, pipeline_config, scrape, start_collector, value, wait_for

PAGES = 20_000  # 78 MiB of fresh anonymous memory, one byte written per page
NAME = "ebpf_process_paging_faults_total"

# Told "go", the child maps fresh anonymous memory (without huge pages, so one
# fault per 4 KiB page) and writes one byte per page, then waits again. While
# it waits on stdin it takes no faults, so both counts are still at the edges
# of the window.
TOUCH = r"""
import ctypes, mmap, sys
ctypes.CDLL(None).prctl(15, b"e2e-faults", 0, 0, 0)
pages = int(sys.argv[1])
page = mmap.PAGESIZE
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
m = mmap.mmap(-1, pages * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
for off in range(0, pages * page, page):
    m[off] = 1
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.readline()
"""


def kernel_faults(pid: int) -> int:
    """minflt + majflt of the whole process (fields 10 and 12 of /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[7]) + int(fields[9])


def test_page_faults_match_proc_stat(sidecar: tuple[Process, Path], tmp_path: Path) -> None:
    _, sock = sidecar
    port = free_port()
    receiver = {
        "endpoint": f"unix://{sock}",
        "collection_interval": "1s",
        "programs": [{"name": "faults"}],
    }
    col = start_collector(pipeline_config(receiver, port), tmp_path)
    child: subprocess.Popen[str] | None = None
    try:
        wait_for(f"first {NAME} scrape", lambda: value(scrape(port), NAME), 30)
        # started after the program attached: its start-up faults give it a series
        child = subprocess.Popen(
            [sys.executable, "-c", TOUCH, str(PAGES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin and child.stdout
        pid = str(child.pid)
        assert child.stdout.readline().strip() == "ready"
        wait_for(f"{NAME} of pid {pid}", lambda: value(scrape(port), NAME, process_pid=pid), 30)
        time.sleep(2.5)  # two more snapshots: the child is idle, its count settled
        ours_before = value(scrape(port), NAME, process_pid=pid) or 0
        kernel_before = kernel_faults(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        kernel_after = kernel_faults(child.pid)
        wait_for(
            f"{PAGES} more faults of pid {pid}",
            lambda: (value(scrape(port), NAME, process_pid=pid) or 0) >= ours_before + PAGES,
            15,
        )
        time.sleep(2.5)
        ours_after = value(scrape(port), NAME, process_pid=pid) or 0
    finally:
        if child is not None:
            if child.stdin:
                child.stdin.close()
            child.wait(10)
        col.stop()
    ours = ours_after - ours_before
    kernel = kernel_after - kernel_before
    print(f"pages={PAGES} ours={ours:.0f} kernel={kernel}")
    assert kernel >= PAGES
    # The tracepoints fire at exception entry; the kernel counts in
    # mm_account_fault() once the fault is handled. They differ only for a
    # fault that fails (bad address: SIGSEGV, none here), one abandoned on a
    # fatal signal after VM_FAULT_RETRY (none here), or a get_user_pages()
    # fault taken on the task's behalf, which is accounted without an
    # exception (none in this child). So the counts should agree exactly; the
    # slack of 0.1% only absorbs such a rare event in the interpreter.
    assert abs(ours - kernel) <= max(2, kernel // 1000), (ours, kernel)
