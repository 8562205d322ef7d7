"""Kernel events as OpenTelemetry log records, through the real collector.

The receiver is in a metrics pipeline (Prometheus) and a logs pipeline (the
file exporter, OTLP JSON lines) at once: one sidecar stream serves both.
Records are read back from the exporter's file and checked against what the
kernel says happened: oom_kill in /proc/vmstat, the exit status and signal
waitpid() reports, the pid that sent the signal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_accuracy_block import attached_loop_device
from test_accuracy_oom import LIMIT, VICTIM_CODE, MemoryCgroup, vmstat_oom_kills
from test_trace_join import OtlpJsonLines, attributes

from conftest import (
    KubeletContainer,
    Process,
    expose_self_telemetry,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    value,
    wait_for,
    wait_started,
    with_a_fork,
)

Json = dict[str, Any]


@dataclass(frozen=True)
class Record:
    resource: dict[str, str]
    attrs: dict[str, str]
    event: str
    time_ns: int
    severity: str
    body: str


def records(out: OtlpJsonLines, event: str | None = None) -> list[Record]:
    found = []
    for request in out.read():
        for rl in request.get("resourceLogs", []):
            resource = attributes(rl["resource"].get("attributes", []))
            for sl in rl.get("scopeLogs", []):
                for r in sl["logRecords"]:
                    rec = Record(
                        resource,
                        attributes(r.get("attributes", [])),
                        r.get("eventName", ""),
                        int(r["timeUnixNano"]),
                        r.get("severityText", ""),
                        r["body"]["stringValue"],
                    )
                    if event is None or rec.event == event:
                        found.append(rec)
    return found


def exit_records(out: OtlpJsonLines, pid: int) -> list[Record]:
    """The ebpf.process.exit records of process ``pid``."""
    return [
        r for r in records(out, "ebpf.process.exit") if r.resource.get("process.pid") == str(pid)
    ]


def events_config(sock: Path, prom_port: int, logs: Path, events: list[Json]) -> Json:
    """The receiver in a metrics pipeline and a logs pipeline (file exporter)."""
    cfg = pipeline_config(
        {
            "endpoint": f"unix://{sock}",
            "collection_interval": "1s",
            "programs": [{"name": "process"}],
            "events": events,
        },
        prom_port,
    )
    cfg["exporters"]["file/logs"] = {"path": str(logs), "flush_interval": "100ms"}
    cfg["service"]["pipelines"]["logs"] = {"receivers": ["ebpf"], "exporters": ["file/logs"]}
    return cfg


@pytest.fixture
def logs_pipeline(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> Iterator[Callable[[list[Json]], tuple[OtlpJsonLines, int]]]:
    """Starts the collector with the given events; yields the exporter's output and the
    Prometheus port once the programs are attached (a process series is exported)."""
    _, sock = sidecar
    started: list[Process] = []

    def start(events: list[Json]) -> tuple[OtlpJsonLines, int]:
        port = free_port()
        logs = tmp_path / "logs.jsonl"
        col = start_collector(events_config(sock, port, logs, events), tmp_path)
        started.append(col)
        wait_started(col, "events")
        wait_for(
            "the programs attached",
            with_a_fork(lambda: value(scrape(port), "ebpf_process_created_total")),
            60,
        )
        return OtlpJsonLines(logs), port

    yield start
    for col in started:
        col.stop()


SEGV_CODE = "import ctypes; ctypes.string_at(0)"  # reads address 0: SIGSEGV
# A helper of known pid: kills the pid it is given with SIGKILL, reports, waits.
KILLER_CODE = r"""
import os, signal, sys
os.kill(int(sys.argv[1]), signal.SIGKILL)
sys.stdout.write("killed\n"); sys.stdout.flush()
sys.stdin.readline()
"""


def test_signal_deaths_are_one_record_each_and_normal_exits_none(
    logs_pipeline: Callable[[list[Json]], tuple[OtlpJsonLines, int]],
) -> None:
    out, _ = logs_pipeline([{"program": "process"}])
    # 200 normal exits: no records.
    normal = []
    for _ in range(200):
        p = subprocess.Popen(["/bin/true"])
        p.wait()
        assert p.returncode == 0
        normal.append(p.pid)

    # SIGKILL from a helper process of known pid.
    victim = subprocess.Popen(["sleep", "600"])
    before_kill = time.time_ns()
    killer = subprocess.Popen(
        [sys.executable, "-c", KILLER_CODE, str(victim.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killer.stdout and killer.stdin
    assert killer.stdout.readline().strip() == "killed"
    victim.wait()
    after_kill = time.time_ns()
    assert victim.returncode == -signal.SIGKILL

    # A death of SIGSEGV: the kernel sends it, no other process.
    before_segv = time.time_ns()
    segv = subprocess.run([sys.executable, "-c", SEGV_CODE], check=False)
    after_segv = time.time_ns()
    assert segv.returncode == -signal.SIGSEGV
    segv_pid = wait_for(
        "the SIGSEGV record",
        lambda: [
            int(r.resource["process.pid"])
            for r in records(out, "ebpf.process.exit")
            if r.attrs.get("process.exit.signal") == "SIGSEGV"
            and before_segv <= r.time_ns <= after_segv
        ],
        15,
    )[0]
    wait_for("the SIGKILL record", lambda: exit_records(out, victim.pid), 15)
    killer.stdin.close()
    killer.wait(10)

    got = records(out, "ebpf.process.exit")
    by_pid: dict[int, list[Record]] = {}
    for r in got:
        by_pid.setdefault(int(r.resource["process.pid"]), []).append(r)
    # normal exits are no events
    assert not [pid for pid in normal if pid in by_pid], "normal exits produced records"

    [kill] = by_pid[victim.pid]
    print("SIGKILL record:", kill)
    assert kill.attrs["process.exit.signal"] == "SIGKILL"
    assert kill.attrs["process.exit.code"] == str(128 + signal.SIGKILL)
    assert kill.attrs["ebpf.process.signal.sender.pid"] == str(killer.pid)
    # comm: the name the killer was exec'd by
    assert kill.attrs["ebpf.process.signal.sender.name"] == Path(sys.executable).name[:15]
    assert kill.attrs["process.executable.name"] == "sleep"
    assert kill.severity == "WARN"
    assert f"(pid {killer.pid})" in kill.body and "SIGKILL" in kill.body
    # the kernel's moment, converted to wall time: between the kill and waitpid
    assert before_kill <= kill.time_ns <= after_kill, (before_kill, kill.time_ns, after_kill)

    [segv_record] = by_pid[segv_pid]
    print("SIGSEGV record:", segv_record)
    assert segv_record.attrs["process.exit.code"] == str(128 + signal.SIGSEGV)
    # the kernel sent it: no sender
    assert "ebpf.process.signal.sender.pid" not in segv_record.attrs


# Arms a POSIX timer (timer_create with no sigevent: SIGALRM, si_code
# SI_TIMER) and waits for it; SIGALRM's default action ends the process.
TIMER_VICTIM_CODE = r"""
import ctypes, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
class itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", timespec), ("it_value", timespec)]
timer = ctypes.c_void_p()
assert libc.timer_create(1, None, ctypes.byref(timer)) == 0, ctypes.get_errno()  # CLOCK_MONOTONIC
when = itimerspec(timespec(0, 0), timespec(0, int(float(sys.argv[1]) * 1e9)))
assert libc.timer_settime(timer, 0, ctypes.byref(when), None) == 0, ctypes.get_errno()
sys.stdout.write("armed\n"); sys.stdout.flush()
signal.pause()
"""
SPINNER_CODE = "while True: pass"


def test_a_timer_signal_names_no_sender(
    logs_pipeline: Callable[[list[Json]], tuple[OtlpJsonLines, int]],
) -> None:
    """A POSIX timer's signal is raised in the timer interrupt, over whichever
    task runs on that CPU: here a spinner pinned to the victim's CPU, so the
    victim sleeps and the spinner is the task interrupted. It sent nothing."""
    out, _ = logs_pipeline([{"program": "process"}])
    cpu = min(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER_CODE])
    try:
        os.sched_setaffinity(spinner.pid, {cpu})
        victim = subprocess.Popen(
            [sys.executable, "-c", TIMER_VICTIM_CODE, "0.5"],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
        assert victim.stdout and victim.stdout.readline().strip() == "armed"
        victim.wait(10)
        assert victim.returncode == -signal.SIGALRM
        [record] = wait_for("the SIGALRM record", lambda: exit_records(out, victim.pid), 15)
    finally:
        spinner.kill()
        spinner.wait(10)
    print("SIGALRM record:", record)
    assert record.attrs["process.exit.signal"] == "SIGALRM"
    assert record.attrs["process.exit.code"] == str(128 + signal.SIGALRM)
    assert "ebpf.process.signal.sender.pid" not in record.attrs, record
    assert "ebpf.process.signal.sender.name" not in record.attrs, record


OOM_VICTIM = "e2e-oom-event"


def test_oom_kill_records_match_vmstat(
    logs_pipeline: Callable[[list[Json]], tuple[OtlpJsonLines, int]],
    kubelet_containers: Callable[[], KubeletContainer],
    tmp_path: Path,
) -> None:
    out, _ = logs_pipeline([{"program": "oom"}, {"program": "process", "min_severity": "warn"}])
    container = kubelet_containers()
    # identity from the v2 (kubelet-shaped) path; the limit from the v1 memory
    # controller, which enforces it on this hybrid host
    memory = MemoryCgroup(f"e2e-oom-event-{os.getpid()}", LIMIT)
    victim = container.run(
        [sys.executable, "-c", VICTIM_CODE, OOM_VICTIM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert victim.stdin and victim.stdout
        assert victim.stdout.readline().strip() == "ready"
        memory.add(victim.pid)
        kernel_before = vmstat_oom_kills()
        victim.stdin.write("go\n")
        victim.stdin.flush()
        victim.communicate(timeout=60)
        died = time.time_ns()
        assert victim.returncode == -signal.SIGKILL
        kernel = vmstat_oom_kills() - kernel_before
        mine = wait_for(
            "the ebpf.oom.kill record",
            lambda: [
                r
                for r in records(out, "ebpf.oom.kill")
                if r.attrs.get("process.executable.name") == OOM_VICTIM
            ],
            15,
        )
        # the victim's own exit event has come too: everything before it is in
        wait_for("the victim's exit record", lambda: exit_records(out, victim.pid), 15)
        all_kills = records(out, "ebpf.oom.kill")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        memory.remove()
    print("OOM record:", mine[0])
    for line in out.path.read_text().splitlines():  # as the exporter wrote it
        if '"ebpf.oom.kill"' in line:
            print("exporter line:", line)
    # every OOM kill in the window is a record, and nothing else is
    assert kernel == 1
    assert len(all_kills) == kernel
    [kill] = mine
    assert kill.resource.get("process.pid") == str(victim.pid), kill
    assert kill.resource.get("container.id") == container.container_id, kill
    assert kill.resource.get("k8s.pod.uid") == container.pod_uid, kill
    assert kill.attrs["ebpf.oom.constraint"] == "cgroup"
    assert int(kill.attrs["ebpf.oom.rss"]) > 0
    assert kill.severity == "ERROR"
    assert kill.body.startswith(f"OOM killer killed {OOM_VICTIM} (pid {victim.pid})")
    assert abs(died - kill.time_ns) < 1_000_000_000, (died, kill.time_ns)
    assert kill.time_ns <= died


def test_a_bad_event_name_stops_the_collector(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    _, sock = sidecar
    cfg = events_config(
        sock, free_port(), tmp_path / "logs.jsonl", [{"program": "oom", "name": "ebpf.oom.kil"}]
    )
    col = start_collector(cfg, tmp_path)
    try:
        wait_for("the collector to stop", lambda: not col.alive(), 60)
    finally:
        col.stop()
    out = col.output()
    assert 'events[0].name: program "oom" has no event "ebpf.oom.kil"' in out, out
    assert "its events: ebpf.oom.kill" in out, out


BLOCK_ERRORS = 5  # below the kernel's rate limit of its error lines (10 in 5 s)


def kernel_log() -> list[tuple[float, str]]:
    """The kernel's log as (seconds since boot, text); it wraps, so lines are told apart
    by time, never by count."""
    text = subprocess.run(["dmesg"], check=True, capture_output=True, text=True).stdout
    out = []
    for line in text.splitlines():
        if line.startswith("[") and "]" in line:
            stamp, _, rest = line[1:].partition("]")
            out.append((float(stamp), rest.strip()))
    return out


def kernel_block_errors(name: str, since: float) -> list[int]:
    """Sectors of the failed requests of device ``name`` the kernel logged after
    ``since`` ("... error, dev loop3, sector 16384 op 0x1:(WRITE) ...")."""
    needle = f"dev {name}, sector "
    return [
        int(text.split(needle)[1].split()[0])
        for stamp, text in kernel_log()
        if stamp > since and needle in text
    ]


# Writes 4 KiB with O_DIRECT (one request each) at n offsets 1 MiB apart;
# prints the first sectors of those that failed.
FAILING_WRITES = r"""
import json, mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
buf.write(b"\x01" * 4096)
failed = []
for i in range(int(sys.argv[2])):
    offset = (8 << 20) + i * (1 << 20)
    try:
        os.pwrite(fd, buf, offset)
    except OSError:
        failed.append(offset // 512)
print(json.dumps(failed))
"""


def test_block_io_errors_are_one_record_per_failed_request(
    logs_pipeline: Callable[[list[Json]], tuple[OtlpJsonLines, int]],
    kubelet_containers: Callable[[], KubeletContainer],
    tmp_path: Path,
) -> None:
    out, _ = logs_pipeline([{"program": "block"}])
    container = kubelet_containers()
    # A loop device over a sparse file on a full 1 MiB tmpfs: every write to a
    # block not yet stored fails in the backing file (ENOSPC), and the loop
    # driver completes the request with that error.
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with attached_loop_device(small / "disk.img") as device:
            name = os.path.basename(device)
            with (small / "filler").open("wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * (2 << 20))  # fills the tmpfs
            mark = kernel_log()[-1][0]
            writer = container.run(
                [sys.executable, "-c", FAILING_WRITES, device, str(BLOCK_ERRORS)],
                stdout=subprocess.PIPE,
            )
            failed = json.loads(writer.communicate(timeout=60)[0])
            assert len(failed) == BLOCK_ERRORS, failed
            got = wait_for(
                f"{BLOCK_ERRORS} ebpf.block.io_error records for {name}",
                lambda: (lambda rs: rs if len(rs) >= BLOCK_ERRORS else None)(
                    [
                        r
                        for r in records(out, "ebpf.block.io_error")
                        if r.attrs.get("system.device") == name
                    ]
                ),
                15,
            )
            kernel = kernel_block_errors(name, mark)
    finally:
        subprocess.run(["umount", str(small)], check=False)
    print("block error record:", got[0])
    assert sorted(int(r.attrs["ebpf.block.sector"]) for r in got) == sorted(failed)
    assert sorted(kernel) == sorted(failed)
    assert len(got) == len(kernel) == BLOCK_ERRORS
    for r in got:
        assert r.attrs["disk.io.direction"] == "write"
        assert r.attrs["error.type"] in ("ENOSPC", "EIO"), r
        assert r.severity == "ERROR"
        # submitted from inside the container: its identity on the resource
        assert r.resource.get("container.id") == container.container_id, r
        assert r.resource.get("k8s.pod.uid") == container.pod_uid, r


def test_events_over_the_rate_limit_are_counted_in_a_self_metric(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    _, sock = sidecar
    port, telemetry = free_port(), free_port()
    logs = tmp_path / "logs.jsonl"
    cfg = events_config(sock, port, logs, [{"program": "process", "rate_limit": 1}])
    expose_self_telemetry(cfg, telemetry, level="detailed")
    col = start_collector(cfg, tmp_path)
    try:
        wait_started(col, "events with rate_limit 1")
        wait_for(
            "the programs attached",
            with_a_fork(lambda: value(scrape(port), "ebpf_process_created_total")),
            60,
        )
        n = 50
        started = time.monotonic()
        subprocess.run(["sh", "-c", f"for i in $(seq {n}); do (exit 3); done; true"], check=True)
        out = OtlpJsonLines(logs)

        def accounted() -> tuple[float, int] | None:
            limited = value(
                scrape(telemetry),
                "otelcol_receiver_ebpf_dropped_events_total",
                event="ebpf.process.exit",
                reason="rate_limited",
            )
            sent = len(records(out, "ebpf.process.exit"))
            return (limited, sent) if limited is not None and limited + sent >= n else None

        def ours() -> int:
            return sum(
                1
                for r in records(out, "ebpf.process.exit")
                if r.attrs.get("process.executable.name") == "sh"
                and r.attrs.get("ebpf.process.exit.status") == "3"
            )

        limited, sent = wait_for("the rate-limited count in the self-metric", accounted, 30)
        seconds = time.monotonic() - started
    finally:
        col.stop()
    print(f"sent={sent} rate_limited={limited:.0f} of at least {n} abnormal exits")
    mine = ours()
    print(f"ours sent={mine} in {seconds:.2f}s")
    # at most one a second goes through (of any process's abnormal exits),
    # in each wall-clock second the loop touched
    assert limited >= n - sent
    assert mine <= int(seconds) + 2
