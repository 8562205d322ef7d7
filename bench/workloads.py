"""The workloads of bench/overhead.py: which one triggers which hook, and running them.

Each workload is a mode of the C helper ``bench/ovhbench.c`` (compiled with cc at
bench time): a tight loop of one operation that fires the hook a known number of
times, timed inside the helper so neither Python nor process start-up is in the
number.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ebpf_sidecar import kernel

BENCH = Path(__file__).resolve().parent
HELPER_SOURCE = BENCH / "ovhbench.c"
# The helper's comm; the counting program compares it byte by byte. Unique to
# this bench process (15 characters at most), so a helper of another bench run
# on the same machine is not counted as this one's.
HELPER_COMM = f"ovhbench{os.getpid() % 10**7}"


@dataclass(frozen=True)
class Workload:
    name: str
    # What one operation is, for the table's legend.
    op: str
    # Hooks (manifest strings) this workload is meant to trigger: regexes.
    hooks: tuple[str, ...]
    # Operations of a calibration run; scaled to the target run time after.
    calibration_ops: int
    # Extra helper arguments, filled in by the context that runs it.
    args: tuple[str, ...] = ()
    # Tracepoint field name -> value: count only events whose field equals the
    # value (e.g. the loop device's dev for block events, which complete in
    # interrupt or kworker context, not in the helper's). Hooks without such
    # a field are counted when the current comm is the helper's.
    field_filter: tuple[tuple[str, int], ...] = field(default=())
    # Other workloads whose hooks this one fires as well (exec forks and exits).
    also_fires: tuple[str, ...] = ()
    # More rounds for workloads whose operations vary more from run to run.
    rounds_factor: int = 1


# Context switches and wake-ups: what the pipe and ring workloads fire.
SCHEDULER_HOOKS = (
    r"sched:sched_(switch|wakeup|waking|stat_\w+)$",
    r"^raw_tracepoint:sched_(switch|wakeup|waking)$",
)

# Order matters: the first workload whose patterns match a hook wins.
WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "syscall",
        "getppid() call",
        (r"sys_enter$", r"sys_exit$", r"^tracepoint:raw_syscalls:", r"^tracepoint:syscalls:"),
        200_000,
    ),
    Workload(
        "pipe",
        "pipe ping-pong round trip between 2 processes",
        SCHEDULER_HOOKS,
        5_000,
    ),
    # Not any hook's first choice (pipe comes first): --also-on ring measures
    # sched_switch programs with many processes per CPU too, where caches of
    # recent processes (cpu's write-behind) miss.
    Workload(
        "ring",
        "one hop of a token around a ring of 64 processes over pipes, all on one CPU",
        SCHEDULER_HOOKS,
        5_000,
        args=("64",),
    ),
    Workload(
        "fault",
        "anonymous page touched (mmap/touch/munmap)",
        (r"page_fault", r"^tracepoint:exceptions:", r"mm_filemap_fault"),
        50_000,
    ),
    Workload(
        "exec",
        "fork + exec of a no-op binary + exit + wait",
        (r"sched_process_exec$", r"sched_prepare_exec$"),
        100,
        also_fires=("fork",),
        rounds_factor=2,
    ),
    Workload(
        "fork",
        "fork + exit + wait",
        (r"sched_process_\w+$", r"sched_wakeup_new$", r"^tracepoint:task:"),
        300,
        rounds_factor=2,
    ),
    Workload(
        "block",
        "O_DIRECT 4 KiB read from a loop device (--direct-io=on)",
        (r"^tracepoint:block:", r"^raw_tracepoint:block_"),
        2_000,
        rounds_factor=3,
    ),
    Workload(
        "tcp",
        "1-byte ping-pong round trip over loopback TCP (TCP_NODELAY)",
        (r"^tracepoint:tcp:", r"^tracepoint:sock:inet_sock_set_state$", r"^raw_tracepoint:tcp_"),
        2_000,
        rounds_factor=2,
    ),
)

# Hooks that no workload can fire on purpose, with the reason printed instead.
NOT_BENCHMARKABLE: tuple[tuple[str, str], ...] = (
    (
        r"^tracepoint:oom:|mark_victim",
        "fires only when the OOM killer picks a victim; triggering it per operation "
        "would kill processes, and it is rare by nature, so its cost does not matter",
    ),
)


def workload_for(hook: str) -> Workload | str:
    """The workload that fires a hook, or the reason none can."""
    for pattern, reason in NOT_BENCHMARKABLE:
        if re.search(pattern, hook):
            return reason
    for w in WORKLOADS:
        if any(re.search(p, hook) for p in w.hooks):
            return w
    return f"no workload in bench/workloads.py fires {hook}"


def _format(hook: str) -> str:
    """A classic tracepoint's tracefs format ("" for other hooks or absent ones)."""
    parts = hook.split(":")
    if len(parts) != 3 or parts[0] != "tracepoint":
        return ""
    try:
        return (kernel.tracefs() / "events" / parts[1] / parts[2] / "format").read_text()
    except FileNotFoundError:
        return ""


def tracepoint_fields(hook: str) -> set[str]:
    """Field names of a classic tracepoint, from tracefs (empty for other hooks)."""
    return set(re.findall(r"field:[^;]*?\b(\w+)(?:\[[^\]]*\])?;", _format(hook)))


def tracepoint_enums(hook: str) -> set[str]:
    """Enum types of a classic tracepoint's fields (BCC needs their definitions)."""
    return set(re.findall(r"field:\s*enum\s+(\w+)", _format(hook)))


def build_helper(directory: Path) -> Path:
    """Compile the C helper into ``directory``; returns the binary."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler: install gcc (bench/setup.sh does)")
    out = directory / HELPER_COMM
    subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(HELPER_SOURCE)], check=True)
    return out


# All workloads run on one CPU (the last): the two sides of a ping-pong then
# hand over with a plain context switch instead of a cross-CPU wake-up of an
# idle CPU, whose latency on a VM varies by microseconds and would bury a hook
# cost of tens of nanoseconds.
WORKLOAD_CPU = (os.cpu_count() or 1) - 1


def _pin() -> None:
    os.sched_setaffinity(0, {WORKLOAD_CPU})


def run(helper: Path, workload: Workload, ops: int) -> float:
    """Run ``ops`` operations; returns nanoseconds per operation."""
    proc = subprocess.run(
        [str(helper), workload.name, str(ops), *workload.args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_pin,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"workload {workload.name} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return int(proc.stdout.strip()) / ops


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loop_device(size_mib: int = 256) -> Iterator[tuple[str, int]]:
    """A loop device over a sparse file in a temporary directory, direct I/O on.

    Yields (device path, kernel dev_t as block tracepoints report it). Reads of
    the sparse file's holes never reach the disk under it, so the loop device's
    events are the workload's only block events and its latency stays steady.
    Always detached afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="ovhbench-block-", dir="/var/tmp") as tmp:
        backing = Path(tmp) / "disk.img"
        with backing.open("wb") as f:
            f.truncate(size_mib << 20)
        device = subprocess.run(
            ["losetup", "--find", "--show", "--direct-io=on", str(backing)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        try:
            rdev = os.stat(device).st_rdev
            # The kernel's dev_t: major in the top 12 bits, minor in the low 20.
            yield device, (os.major(rdev) << 20) | os.minor(rdev)
        finally:
            subprocess.run(["losetup", "--detach", device], check=False)
