"""The whole pipeline: kernel → BCC sidecar → gRPC → ebpf receiver → Prometheus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bpf_helpers import loaded_prog_ids, prog_ids_held_by
from conftest import (
    DEFAULT_SOCKET,
    REPO,
    Process,
    SyscallChild,
    free_port,
    pipeline_config,
    scrape,
    sidecar_pids,
    start_collector,
    start_sidecar,
    value,
    wait_for,
)

N = 200_000
# The child makes no other getppid() calls once it has its own comm; the
# slack only covers a stray call from the interpreter's exit path.
SLACK = 2


def syscalls_receiver(sock: Path, interval: str = "1s") -> dict[str, object]:
    return {
        "endpoint": f"unix://{sock}",
        "collection_interval": interval,
        "programs": [{"name": "syscalls"}],
    }


def getppid_count(port: int, comm: str) -> float | None:
    return value(
        scrape(port), "ebpf_syscalls_total", syscall_name="getppid", process_executable_name=comm
    )


def test_getppid_calls_are_counted_exactly(sidecar: tuple[Process, Path], tmp_path: Path) -> None:
    _, sock = sidecar
    port = free_port()
    col = start_collector(pipeline_config(syscalls_receiver(sock), port), tmp_path)
    try:
        wait_for(
            "first ebpf_syscalls scrape", lambda: value(scrape(port), "ebpf_syscalls_total"), 30
        )
        child = SyscallChild(f"e2e-ppid-{os.getpid() % 10000}", N)
        child.run()
        got = wait_for(
            f"{N} getppid calls of {child.comm}",
            lambda: (c := getppid_count(port, child.comm)) is not None and c >= N and c,
            15,
        )
        time.sleep(2.5)  # two more snapshots: nothing more is counted
        settled = getppid_count(port, child.comm)
        child.close()
        assert N <= got <= N + SLACK, got
        assert settled == got
    finally:
        col.stop()
    assert col.proc.returncode == 0, col.output()


def test_collector_waits_for_a_missing_sidecar_and_recovers(tmp_path: Path) -> None:
    sock = tmp_path / "late.sock"
    port = free_port()
    # past the receiver's startup wait: the sidecar is retried in the background
    receiver = {**syscalls_receiver(sock), "startup_timeout": "1s"}
    col = start_collector(pipeline_config(receiver, port), tmp_path)
    sidecar = None
    try:
        time.sleep(4)
        assert col.alive(), col.output()
        assert "sidecar is not reachable yet" in col.output()  # logged, and retried
        sidecar = start_sidecar(sock, tmp_path / "late-sidecar.log")
        child = SyscallChild("e2e-late", 1000)
        # the receiver reconnects with backoff (at most 30 s)
        wait_for(
            "ebpf_syscalls after the sidecar came up",
            lambda: value(scrape(port), "ebpf_syscalls_total"),
            45,
        )
        child.run()
        wait_for(
            "getppid calls after recovery",
            lambda: (getppid_count(port, "e2e-late") or 0) >= 1000,
            15,
        )
        child.close()
    finally:
        col.stop()
        if sidecar:
            sidecar.stop()


def test_seed_example_config_exposes_cpu_time(tmp_path: Path) -> None:
    """The article's collector config, verbatim: default socket, :9090, tempo:4317."""
    assert not DEFAULT_SOCKET.exists() or not _socket_in_use(DEFAULT_SOCKET), (
        "a sidecar already listens on the default socket (is `make run` running?)"
    )
    sidecar = start_sidecar(DEFAULT_SOCKET, tmp_path / "sidecar.log")
    col = start_collector(REPO / "collector-config" / "seed-example.yaml", tmp_path, "seed")
    try:

        def histogram_count() -> float | None:
            samples = scrape(9090)
            return value(samples, "cpu_time_seconds_count")

        count = wait_for("cpu.time histogram on :9090", histogram_count, 40)
        assert count > 0
        samples = scrape(9090)
        buckets = [(lab["le"], v) for n, lab, v in samples if n == "cpu_time_seconds_bucket"]
        assert buckets[-1] == ("+Inf", count)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        # a classic histogram in the text exposition: _bucket with le, _sum, _count
        assert value(samples, "cpu_time_seconds_sum") is not None
        assert col.alive(), col.output()
    finally:
        col.stop()
        sidecar.stop()


TICKER = r"""
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
while True:
    os.getppid()
    time.sleep(0.05)
"""


def _socket_in_use(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def test_make_run_survives_sidecar_kill_and_leaves_nothing_loaded(tmp_path: Path) -> None:
    """scripts/run.sh (what `make run` runs) with the default config."""
    assert not sidecar_pids(DEFAULT_SOCKET), "a sidecar is already running on the default socket"
    run = Process(
        "make run",
        [str(REPO / "scripts" / "run.sh")],
        tmp_path / "run.log",
        cwd=REPO,
        start_new_session=True,
    )
    try:
        wait_for(
            "ebpf_ metrics on 127.0.0.1:8889",
            lambda: any(n.startswith("ebpf_") for n, _, _ in scrape(8889)),
            60,
        )
        [pid] = wait_for("one sidecar", lambda: sidecar_pids(DEFAULT_SOCKET), 10)
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        assert run.alive(), run.output()
        # Counting resumes by itself: a process started after the kill keeps
        # waking up; its context switches can only show up under its new
        # comm once a restarted sidecar has attached and the receiver
        # reconnected.
        wait_for(
            "a restarted sidecar",
            lambda: (p := sidecar_pids(DEFAULT_SOCKET)) and p != [pid] and p,
            15,
        )
        ticker = subprocess.Popen([sys.executable, "-c", TICKER, "e2e-after-kill"])
        try:
            wait_for(
                "counts after the sidecar was killed",
                lambda: value(
                    scrape(8889),
                    "ebpf_process_context_switches_total",
                    process_executable_name="e2e-after-kill",
                ),
                90,
            )
        finally:
            ticker.kill()
            ticker.wait()
        ours = set().union(*(prog_ids_held_by(p) for p in sidecar_pids(DEFAULT_SOCKET)))
        assert ours, "the sidecar holds no BPF programs while running"
    finally:
        # Ctrl-C: SIGINT to the whole foreground process group
        os.killpg(run.proc.pid, signal.SIGINT)
        run.proc.wait(30)
        run.stop()
    assert not sidecar_pids(DEFAULT_SOCKET)
    deadline = time.monotonic() + 5
    while (left := ours & loaded_prog_ids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"BPF programs left loaded after make run stopped: {left}\n{run.output()}"


def test_a_stalled_sidecar_is_noticed_and_the_stream_reopened(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    """A sidecar that keeps its stream open but stops sending (SIGSTOP) is not
    a silent gap: the receiver gives the stream up and reconnects."""
    side, sock = sidecar
    port = free_port()
    col = start_collector(pipeline_config(syscalls_receiver(sock), port), tmp_path)
    try:
        wait_for(
            "first ebpf_syscalls scrape", lambda: value(scrape(port), "ebpf_syscalls_total"), 30
        )
        side.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(
                "the receiver to notice the stall", lambda: "no snapshot within" in col.output(), 20
            )
        finally:
            side.proc.send_signal(signal.SIGCONT)
        # counting resumes: a process that keeps calling getppid() shows up
        # under its new comm once the stream is re-opened
        ticker = subprocess.Popen([sys.executable, "-c", TICKER, "e2e-after-stall"])
        try:
            wait_for("counting after the stall", lambda: getppid_count(port, "e2e-after-stall"), 60)
        finally:
            ticker.kill()
            ticker.wait()
        assert col.alive(), col.output()
    finally:
        col.stop()
