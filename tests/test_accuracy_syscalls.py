"""syscalls: failed calls per syscall and errno against an exact loop.

(Entered calls per syscall and process are checked exactly by
test_pipeline.test_getppid_calls_are_counted_exactly.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Process, free_port, pipeline_config, scrape, start_collector, value, wait_for

N = 50_000

# getpriority(999, 0): no such "which", so EINVAL every time. Nothing else on
# the machine calls getpriority with a bad "which", so the (getpriority,
# EINVAL) series moves by exactly our calls.
FAILER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_getpriority = 140  # x86_64
for _ in range(int(sys.argv[1])):
    libc.syscall(SYS_getpriority, 999, 0)
assert ctypes.get_errno() == 22  # EINVAL
"""


def test_failed_calls_are_counted_by_errno_exactly(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    _, sock = sidecar
    port = free_port()
    col = start_collector(
        pipeline_config(
            {
                "endpoint": f"unix://{sock}",
                "collection_interval": "1s",
                "programs": [{"name": "syscalls"}],
            },
            port,
        ),
        tmp_path,
    )

    def einval() -> float:
        return (
            value(
                scrape(port),
                "ebpf_syscall_errors_total",
                syscall_name="getpriority",
                error_type="EINVAL",
            )
            or 0.0
        )

    try:
        wait_for(
            "first syscall error counts",
            lambda: value(scrape(port), "ebpf_syscall_errors_total"),
            30,
        )
        before = einval()
        subprocess.run([sys.executable, "-c", FAILER, str(N)], check=True)
        after = wait_for(
            f"{N} more EINVAL from getpriority", lambda: (v := einval()) >= before + N and v, 15
        )
        # exact: the kernel returns -EINVAL from each call and the program
        # counts each return in -4095..-1 once
        assert after - before == N
    finally:
        col.stop()
