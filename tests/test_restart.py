"""Restart without loss: kill -9 the sidecar under `make run` (scripts/run.sh).

The sidecar pins its programs in bpffs; the one run.sh restarts adopts them,
so an exact getppid loop running across the kill is counted whole and every
series keeps its start time (the attach time of the first sidecar).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, Process, free_port, scrape, sidecar_pids, value, wait_for

PIN_ROOT = Path("/sys/fs/bpf/ebpfreceiver")
N = 300_000
SLACK = 2  # a stray call from the interpreter's exit path, as in test_pipeline
# Exactly n getppid() calls, spread over a few seconds so that the kill
# happens in the middle; comm of its own so only these calls count under it.
LOOP = r"""
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
n = int(sys.argv[2])
sys.stdin.readline()
getppid = os.getppid
for i in range(n):
    getppid()
    if i % 1000 == 0:
        time.sleep(0.01)
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.readline()
"""


def _config(sock: Path, port: int, otlp_port: int, tmp: Path) -> Path:
    """default.yaml plus the opt-in programs (the whole catalog), on our socket
    and ports, and an OTLP/JSON copy."""
    config = yaml.safe_load((REPO / "collector-config" / "default.yaml").read_text())
    ebpf = config["receivers"]["ebpf"]
    ebpf["endpoint"] = f"unix://{sock}"
    ebpf["collection_interval"] = "1s"
    ebpf["programs"] += [{"name": "syscalls"}, {"name": "runqlat"}]
    config["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{port}"
    # The start times: the Prometheus exporter shows none (no _created
    # samples, even in OpenMetrics), OTLP has each point's start time.
    config["exporters"]["otlphttp"] = {
        "endpoint": f"http://127.0.0.1:{otlp_port}",
        "encoding": "json",
        "compression": "none",
    }
    config["service"]["pipelines"]["metrics"]["exporters"].append("otlphttp")
    config["service"]["telemetry"] = {"metrics": {"level": "none"}}  # not the shared :8888
    path = tmp / "restart.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class StartTimes:
    """An OTLP/HTTP endpoint keeping each sum's start times, by metric name."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                owner.add(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: dict[str, Any]) -> None:
        with self.lock:
            for rm in request.get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for m in sm.get("metrics", []):
                        points = m.get("sum", {}).get("dataPoints", [])
                        self.seen.setdefault(m["name"], set()).update(
                            int(p["startTimeUnixNano"]) for p in points
                        )

    def of(self, metric: str) -> set[int]:
        with self.lock:
            return set(self.seen.get(metric, ()))


@pytest.fixture
def start_times() -> Iterator[StartTimes]:
    st = StartTimes()
    yield st
    st.server.shutdown()
    st.server.server_close()


def _count(port: int, comm: str) -> float:
    got = value(
        scrape(port), "ebpf_syscalls_total", syscall_name="getppid", process_executable_name=comm
    )
    return got or 0.0


def test_kill_9_of_the_sidecar_loses_no_syscall_and_keeps_start_times(
    tmp_path: Path, start_times: StartTimes
) -> None:
    sock = tmp_path / "sidecar.sock"
    port = free_port()
    run = Process(
        "make run",
        [str(REPO / "scripts" / "run.sh")],
        tmp_path / "run.log",
        cwd=REPO,
        start_new_session=True,
        env={
            **os.environ,
            "SIDECAR_SOCKET": str(sock),
            "CONFIG": str(_config(sock, port, start_times.port, tmp_path)),
        },
    )
    comm = f"restart{os.getpid() % 100000}"
    loop = subprocess.Popen(
        [sys.executable, "-c", LOOP, comm, str(N)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert loop.stdin and loop.stdout
    try:
        wait_for("ebpf_syscalls_total", lambda: value(scrape(port), "ebpf_syscalls_total"), 90)
        metrics = ("ebpf.syscalls", "ebpf.process.context_switches")
        wait_for("start times over OTLP", lambda: all(start_times.of(m) for m in metrics), 20)
        before = {m: start_times.of(m) for m in metrics}
        assert all(len(v) == 1 for v in before.values()), before  # one attach time each
        [pid] = sidecar_pids(sock)
        loop.stdin.write("go\n")
        loop.stdin.flush()
        wait_for("the loop to be counted", lambda: _count(port, comm), 10, every=0.1)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert loop.stdout.readline().strip() == "done"
        ended = time.monotonic()
        assert ended - killed > 0.5, "the loop ended before the kill: nothing crossed it"
        wait_for("a restarted sidecar", lambda: (p := sidecar_pids(sock)) and p != [pid] and p, 20)
        got = wait_for(f"{N} getppid calls", lambda: (c := _count(port, comm)) >= N and c, 60)
        fresh = time.monotonic() - killed
        assert N <= got <= N + SLACK, f"{got} of {N} counted\n{run.output()}"
        time.sleep(2.5)  # OTLP batches sent since the restart
        after = {m: start_times.of(m) for m in metrics}
        assert after == before, "a series got a new start time across the restart"
        assert "adopted program syscalls" in run.output(), run.output()
        print(f"counts back {fresh:.1f}s after the kill (loop ran {ended - killed:.1f}s past it)")
    finally:
        if loop.stdin:
            loop.stdin.close()
        loop.wait(10)
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C: a clean stop
        run.proc.wait(30)
        run.stop()
    assert not sidecar_pids(sock)
    left = list(PIN_ROOT.iterdir()) if PIN_ROOT.is_dir() else []
    assert not left, f"pins left after a clean stop: {left}"
