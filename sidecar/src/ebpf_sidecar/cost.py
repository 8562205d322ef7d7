"""What the agent costs: its BPF programs in the kernel, and the sidecar process.

Per BPF program the kernel keeps ``run_time_ns`` and ``run_cnt`` in
``bpf_prog_info`` (read with BPF_OBJ_GET_INFO_BY_FD on a program fd), but
counts them only while BPF run-time statistics are enabled: two clock reads
and a per-CPU add around every run, which is why they are off by default.
The sidecar enables them with the BPF_ENABLE_STATS command
(BPF_STATS_RUN_TIME), which returns an fd: the statistics stay enabled while
any such fd is open, so they end with the sidecar however it ends, and they
do not touch the sysctl ``kernel.bpf_stats_enabled``, which an operator or
another tool (bpftop, bpftool) may own; a crashed sidecar never leaves it
on. They are kernel-wide either way: every BPF program on the node pays the
clock reads while they are on (docs/operations.md has the measured cost).
BPF_ENABLE_STATS needs CAP_SYS_ADMIN, so the command line takes the fd
before it drops capabilities. ``recursion_misses`` (runs the kernel skipped
because a BPF program was already running on that CPU) is counted always.

The sidecar's own CPU time is its clock (CLOCK_PROCESS_CPUTIME_ID: user +
system time of all its threads, what /proc/self/stat reports in clock
ticks, in ns); its RSS is /proc/self/statm's resident pages (VmRSS).
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import struct
import time
from dataclasses import dataclass

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

log = logging.getLogger(__name__)

_BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type
# struct bpf_prog_info up to and including recursion_misses (kernel 5.12+);
# an older kernel fills less, and what it does not fill stays 0.
_PROG_INFO_SIZE = 216
_RUN_TIME_OFFSET = 192  # run_time_ns, run_cnt, recursion_misses: three u64
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class CostError(OSError):
    """A bpf() call for the statistics failed."""


def enable_run_time_stats() -> int | None:
    """Enable BPF run-time statistics for as long as the returned fd is open.

    None (with a warning) when the kernel refuses: before 5.8, or without
    CAP_SYS_ADMIN. Programs' run counts and times then stay 0 unless the
    sysctl kernel.bpf_stats_enabled is set.
    """
    from ebpf_sidecar.libbpf import lib

    fd = int(lib.bpf_enable_stats(_BPF_STATS_RUN_TIME))
    if fd < 0:
        log.warning(
            "cannot enable BPF run-time statistics (BPF_ENABLE_STATS: %s; it needs "
            "CAP_SYS_ADMIN at start, which the sidecar drops right after): programs' run "
            "time and run counts stay 0 unless the sysctl kernel.bpf_stats_enabled is 1",
            os.strerror(-fd),
        )
        return None
    os.set_inheritable(fd, False)
    return fd


@dataclass(frozen=True)
class RunStats:
    run_time_ns: int
    runs: int
    recursion_misses: int


def _info(fd: int, size: int) -> bytes:
    from ebpf_sidecar.libbpf import lib

    buf = ct.create_string_buffer(size)
    length = ct.c_uint32(size)
    res = lib.bpf_obj_get_info_by_fd(fd, buf, ct.byref(length))
    if res != 0:
        err = ct.get_errno() or -res
        raise CostError(err, f"BPF_OBJ_GET_INFO_BY_FD on fd {fd}: {os.strerror(err)}")
    return buf.raw


def prog_stats(prog_fd: int) -> RunStats:
    """The kernel's run-time accounting of one loaded BPF program."""
    return RunStats(*struct.unpack_from("<QQQ", _info(prog_fd, _PROG_INFO_SIZE), _RUN_TIME_OFFSET))


def hook_of(function: str) -> str:
    """The manifest's hook name of a BCC function name.

    ``tracepoint__sched__sched_switch`` -> ``tracepoint:sched:sched_switch``,
    ``raw_tracepoint__sys_enter`` -> ``raw_tracepoint:sys_enter``,
    ``perf_event__cpu_clock`` -> ``perf_event:cpu-clock``; any other name as it is.
    """
    kind, sep, rest = function.partition("__")
    if not sep:
        return function
    if kind == "perf_event":
        return f"{kind}:{rest.replace('_', '-')}"
    return f"{kind}:{rest.replace('__', ':')}"


def program_cost(program: str, hook: str, attach_time_ns: int, prog_fd: int) -> pb.ProgramCost:
    s = prog_stats(prog_fd)
    return pb.ProgramCost(
        program=program,
        hook=hook,
        attach_time_unix_nano=attach_time_ns,
        run_time_ns=s.run_time_ns,
        runs=s.runs,
        recursion_misses=s.recursion_misses,
    )


class SidecarUsage:
    """The sidecar's CPU time and RSS, with its start time as their epoch."""

    def __init__(self, run_time_stats: bool) -> None:
        self.start_time_ns = time.time_ns()
        self.run_time_stats = run_time_stats

    def cost(self) -> pb.SidecarCost:
        with open("/proc/self/statm", "rb") as f:
            resident = int(f.read().split()[1])
        return pb.SidecarCost(
            start_time_unix_nano=self.start_time_ns,
            cpu_time_ns=time.process_time_ns(),
            memory_rss_bytes=resident * _PAGE_SIZE,
            run_time_stats=self.run_time_stats,
        )
