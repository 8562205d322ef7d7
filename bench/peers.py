"""The peers bench/overhead.py compares each catalog program with: BCC's tools and bpftrace.

A peer does the same job as a catalog program on the same kernel events: BCC's
own tool where it runs without kprobes (this project's kernels may have none),
or an equivalent bpftrace program. Each is an outside process that loads and
attaches its own BPF programs; ``PeerProcess`` starts it, waits until all of
its probes are attached (``bpftool perf`` lists them under its pid), and stops
it with SIGINT as a user would (Ctrl-C) once it waits in its main loop, then
checks that none of its BPF programs is left loaded. Both packages are
installed by bench/setup.sh at the versions pinned in scripts/versions.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BPFTRACE = "bpftrace"
ATTACH_TIMEOUT_S = 120.0  # BCC compiles with LLVM at start: slow on a loaded 2-CPU machine
STOP_TIMEOUT_S = 30.0
# Where each kind of peer waits once it runs: bpftrace in its perf-buffer poll
# loop, BCC's Python tools in time.sleep() inside their `except
# KeyboardInterrupt`. A SIGINT that lands earlier is lost on bpftrace 0.17 (the
# handler sets a flag, then epoll_wait blocks with no timeout and no event
# ever comes), so a peer counts as started only once it is there.
BPFTRACE_WAIT = "do_epoll_wait"
BCC_WAIT = "hrtimer_nanosleep"
# After SIGINT, a second one this many seconds later: it wakes a bpftrace that
# still missed the first one (the flag is set, epoll_wait returns EINTR).
SECOND_SIGINT_S = 5.0


@dataclass(frozen=True)
class Peer:
    """A peer tool: how to run it and what it hooks."""

    name: str  # as printed in the table
    command: tuple[str, ...]
    # The kernel events it hooks: started means bpftool perf lists that many
    # attachments under its pid (bpftrace's BEGIN/END are not among them).
    hooks: tuple[str, ...]
    job: str  # what it computes, for the legend
    wait_channel: str = BCC_WAIT  # its main thread's /proc wchan once it runs


@dataclass(frozen=True)
class NoPeer:
    """A peer that does not run here, and why."""

    name: str
    reason: str


def bpftrace(name: str, program: str, hooks: tuple[str, ...], job: str) -> Peer:
    return Peer(name, (BPFTRACE, "-e", program), hooks, job, BPFTRACE_WAIT)


# Catalog program -> its peers, in table order. The bpftrace programs are the
# one-liners users write for the job (or the tool bpftrace ships).
PEERS: dict[str, tuple[Peer | NoPeer, ...]] = {
    "syscalls": (
        Peer(
            "syscount-bpfcc",
            ("syscount-bpfcc",),
            ("tracepoint:raw_syscalls:sys_exit",),
            "syscalls by syscall id (not by process name)",
        ),
        bpftrace(
            "bpftrace @[comm, id]",
            "tracepoint:raw_syscalls:sys_enter { @[comm, args->id] = count(); }",
            ("tracepoint:raw_syscalls:sys_enter",),
            "syscalls by process name and syscall id (no error counts)",
        ),
    ),
    "cpu": (
        NoPeer(
            "cpudist-bpfcc",
            "kprobe on finish_task_switch (as offcputime-bpfcc); this kernel has no kprobes",
        ),
        bpftrace(
            "bpftrace on-CPU by pid,comm",
            "tracepoint:sched:sched_switch { $now = nsecs; $s = @start[args->prev_pid]; "
            "if ($s) { @oncpu[args->prev_pid, args->prev_comm] = sum($now - $s); } "
            "@start[args->next_pid] = $now; }",
            ("tracepoint:sched:sched_switch",),
            "on-CPU ns summed by pid and comm",
        ),
    ),
    "runqlat": (
        Peer(
            "runqlat-bpfcc",
            ("runqlat-bpfcc",),
            (
                "raw_tracepoint:sched_wakeup",
                "raw_tracepoint:sched_wakeup_new",
                "raw_tracepoint:sched_switch",
            ),
            "run-queue latency log2 histogram, node-wide (raw tracepoints when supported)",
        ),
        Peer(
            "runqlat.bt",
            (BPFTRACE, "/usr/sbin/runqlat.bt"),
            (
                "tracepoint:sched:sched_wakeup",
                "tracepoint:sched:sched_wakeup_new",
                "tracepoint:sched:sched_switch",
            ),
            "run-queue latency log2 histogram, wake-up time kept by pid",
            BPFTRACE_WAIT,
        ),
    ),
    "faults": (
        Peer(
            "funccount-bpfcc",
            ("funccount-bpfcc", "t:exceptions:page_fault_*"),
            ("tracepoint:exceptions:page_fault_user", "tracepoint:exceptions:page_fault_kernel"),
            "page faults counted per tracepoint only (BCC has no per-process fault tool)",
        ),
        bpftrace(
            "bpftrace @[pid, comm]",
            "tracepoint:exceptions:page_fault_user { @[pid, comm] = count(); }",
            ("tracepoint:exceptions:page_fault_user",),
            "user page faults by pid and comm",
        ),
    ),
    "block": (
        NoPeer(
            "biolatency-bpfcc",
            "kprobes on blk_account_io_* / blk_mq_start_request (biolatency.bt too); "
            "this kernel has no kprobes",
        ),
        bpftrace(
            "bpftrace issue->complete hist",
            "tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; } "
            "tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ "
            "{ @usecs = hist((nsecs - @start[args->dev, args->sector]) / 1000); "
            "delete(@start[args->dev, args->sector]); }",
            ("tracepoint:block:block_rq_issue", "tracepoint:block:block_rq_complete"),
            "block request latency log2 histogram, node-wide",
        ),
    ),
    "tcp": (
        Peer(
            "tcpretrans-bpfcc -c",
            ("tcpretrans-bpfcc", "-c"),
            ("tracepoint:tcp:tcp_retransmit_skb",),
            "retransmits counted by address pair",
        ),
        bpftrace(
            "bpftrace retransmits",
            "tracepoint:tcp:tcp_retransmit_skb { @[args->sport, args->dport] = count(); }",
            ("tracepoint:tcp:tcp_retransmit_skb",),
            "retransmits counted by port pair",
        ),
    ),
    "process": (
        NoPeer(
            "BCC",
            "execsnoop/exitsnoop print every event (a different job), no counting tool",
        ),
        bpftrace(
            "bpftrace new/exit by comm",
            "tracepoint:task:task_newtask { @new[comm] = count(); } "
            "tracepoint:sched:sched_process_exit { @exit[args->comm] = count(); }",
            ("tracepoint:task:task_newtask", "tracepoint:sched:sched_process_exit"),
            "new and exited tasks by comm (no signals)",
        ),
    ),
}


def peers_of(program: str) -> tuple[Peer | NoPeer, ...]:
    return PEERS.get(program, (NoPeer("-", "no peer defined in bench/peers.py"),))


def missing(peer: Peer) -> str | None:
    """Why the peer cannot run here (its tool is not installed), or None."""
    tool = peer.command[0]
    if shutil.which(tool) is None:
        return f"{tool} not installed: run bench/setup.sh"
    for arg in peer.command[1:]:
        if arg.startswith("/") and not Path(arg).exists():
            return f"{arg} not installed: run bench/setup.sh"
    return None


def _bpftool() -> str:
    return shutil.which("bpftool") or "/usr/sbin/bpftool"


def attached_programs(pid: int) -> list[int]:
    """BPF program ids attached through perf events or raw tracepoints held by ``pid``."""
    out = subprocess.run(
        [_bpftool(), "-j", "perf", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [int(e["prog_id"]) for e in json.loads(out or "[]") if e.get("pid") == pid]


def loaded_programs() -> set[int]:
    out = subprocess.run(
        [_bpftool(), "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


def program_run_totals(ids: list[int]) -> tuple[int, int]:
    """Total run_time_ns and run_cnt of BPF programs by id (bpf_stats must be on)."""
    out = subprocess.run(
        [_bpftool(), "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    ns = count = 0
    for p in json.loads(out or "[]"):
        if int(p["id"]) in ids:
            ns += int(p.get("run_time_ns", 0))
            count += int(p.get("run_cnt", 0))
    return ns, count


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class PeerError(RuntimeError):
    pass


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return ""


def _where(pid: int) -> str:
    """State and wait channel of each thread of a process, for a hang's error message."""
    parts = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            comm = (task / "comm").read_text().strip()
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = (task / "wchan").read_text().strip()
        except OSError:
            continue
        parts.append(f"{comm}:{state}:{wchan or '-'}")
    return ", ".join(parts) or "gone"


class PeerProcess:
    """A peer tool switched on (started, all probes attached) and off (SIGINT, exited).

    The same on/off interface as bench/overhead.py's Attachment, so the peer is
    one more state of the interleaved rounds. Every on() is a new process:
    start-up (compilation) happens outside the timed runs.
    """

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self.prog_ids: list[int] = []

    @property
    def attached(self) -> bool:
        return self.proc is not None

    def _output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def on(self) -> None:
        if self.proc is not None:
            return
        fd, name = tempfile.mkstemp(prefix="ovhbench-peer-", suffix=".log")
        self.log = Path(name)
        # Its own process group: a Ctrl-C of the bench does not reach it twice.
        self.proc = subprocess.Popen(
            self.peer.command,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A bench started in the background of a script (nohup, CI) has
            # SIGINT ignored, which children inherit: BCC's Python tools would
            # then never see the Ctrl-C that stops them.
            preexec_fn=_default_sigint,
        )
        os.close(fd)
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        try:
            while True:
                if self.proc.poll() is not None:
                    raise PeerError(
                        f"{self.peer.name} exited ({self.proc.returncode}) before attaching: "
                        f"{self._output().strip()[-500:]}"
                    )
                ids = attached_programs(self.proc.pid)
                if len(ids) >= len(self.peer.hooks):
                    self.prog_ids = ids
                    if _wchan(self.proc.pid) == self.peer.wait_channel:
                        return
                if time.monotonic() > deadline:
                    raise PeerError(
                        f"{self.peer.name} did not attach {len(self.peer.hooks)} probes and "
                        f"wait in {self.peer.wait_channel} within {ATTACH_TIMEOUT_S:.0f} s "
                        f"(attached {len(ids)}, at {_where(self.proc.pid)}): "
                        f"{self._output().strip()[-500:]}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.off()
            raise

    def off(self) -> None:
        """SIGINT (its Ctrl-C path: it prints its maps and exits); SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=SECOND_SIGINT_S)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    where = _where(proc.pid)
                    proc.kill()
                    proc.wait()
                    waited = SECOND_SIGINT_S + STOP_TIMEOUT_S
                    raise PeerError(
                        f"{self.peer.name} did not exit within {waited:.0f} s "
                        f"of two SIGINTs (killed; its threads were at: {where}); output: "
                        f"{self._output().strip()[-300:]!r}"
                    ) from None
        finally:
            if self.log is not None:
                self.log.unlink(missing_ok=True)
                self.log = None
        self._check_unloaded()

    def _check_unloaded(self) -> None:
        """Its programs are freed once its last fd closes (after an RCU grace period)."""
        if not self.prog_ids:
            return
        deadline = time.monotonic() + 10
        while left := loaded_programs() & set(self.prog_ids):
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{self.peer.name} exited but left BPF programs loaded: {sorted(left)}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self.off()
