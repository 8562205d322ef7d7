"""Event storm: 100 000 kernel events a second for 10 s through the real pipeline.

A workload calls getppid() at a paced 100 000 calls a second for 10 s; the
benchmark's own program (bench/programs/storm) sends one event per call
through its ring buffer. The real sidecar reads them, the real collector
(the receiver in a logs pipeline, file exporter) gets the ones under the
rate limit. Every second it samples the RSS of both processes, the
sidecar's CPU time, and the receiver's self-metric
otelcol_receiver_ebpf_dropped_events by reason. At the end it checks the
account: records written + rate_limited + ring_buffer_full + stream_behind
= getppid() calls made. It prints a table and asserts nothing
(docs/events.md has the numbers).

    .venv/bin/python bench/events_storm.py [--rate 100000] [--seconds 10] [--rate-limit 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml
from soak import free_port, rss_mib

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
COLLECTOR = REPO / "build" / "otelcol-ebpf" / "otelcol-ebpf"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Told "go", calls getppid() `rate` times a second for `seconds`, in 1 ms
# slices, then prints how many calls it made.
WORKLOAD = r"""
import os, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
getppid, per_ms = os.getppid, rate // 1000
start = time.monotonic()
calls = 0
for ms in range(int(seconds * 1000)):
    for _ in range(per_ms):
        getppid()
    calls += per_ms
    wait = start + (ms + 1) / 1000 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
sys.stdout.write(f"{calls} {time.monotonic() - start:.3f}\n"); sys.stdout.flush()
sys.stdin.readline()
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def dropped(port: int) -> dict[str, float]:
    """otelcol_receiver_ebpf_dropped_events by reason."""
    out: dict[str, float] = {}
    url = f"http://127.0.0.1:{port}/metrics"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("otelcol_receiver_ebpf_dropped_events"):
                reason = line.split('reason="')[1].split('"')[0]
                out[reason] = out.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def records(path: Path) -> int:
    n = 0
    if path.exists():
        for line in path.read_text().splitlines():
            for rl in json.loads(line).get("resourceLogs", []):
                for sl in rl.get("scopeLogs", []):
                    n += len(sl.get("logRecords", []))
    return n


@contextlib.contextmanager
def started(argv: list[str], log: Path, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
        try:
            yield p
        finally:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate-limit", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="events-storm-"))
    sock, logs, telemetry = tmp / "sidecar.sock", tmp / "logs.jsonl", free_port()
    workload = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, str(args.rate), str(args.seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert workload.stdin and workload.stdout
    assert workload.stdout.readline().strip() == "ready"
    config = {
        "receivers": {
            "ebpf": {
                "endpoint": f"unix://{sock}",
                "collection_interval": "1s",
                "programs": [{"name": "storm", "parameters": {"target_tgid": str(workload.pid)}}],
                "events": [{"program": "storm", "rate_limit": args.rate_limit}],
            }
        },
        "exporters": {"file": {"path": str(logs), "flush_interval": "100ms"}},
        "service": {
            "pipelines": {"logs": {"receivers": ["ebpf"], "exporters": ["file"]}},
            "telemetry": {
                "metrics": {
                    "level": "detailed",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {"prometheus": {"host": "127.0.0.1", "port": telemetry}}
                            }
                        }
                    ],
                }
            },
        },
    }
    (tmp / "collector.yaml").write_text(yaml.safe_dump(config))
    sidecar_argv = [
        *(str(PYTHON), "-m", "ebpf_sidecar", "--listen", f"unix://{sock}"),
        *("--programs-dir", str(REPO / "bench" / "programs")),
    ]
    rows = []
    with started(sidecar_argv, tmp / "sidecar.log") as sidecar:
        while not sock.exists():
            time.sleep(0.1)
        with started(
            [str(COLLECTOR), "--config", str(tmp / "collector.yaml")], tmp / "collector.log"
        ) as col:
            while "Everything is ready" not in (tmp / "collector.log").read_text():
                time.sleep(0.2)
            time.sleep(3)  # the stream is open and the program attached
            t0, cpu0 = time.monotonic(), cpu_s(sidecar.pid)
            workload.stdin.write("go\n")
            workload.stdin.flush()
            for second in range(int(args.seconds) + 6):
                time.sleep(max(0.0, t0 + second + 1 - time.monotonic()))
                d = dropped(telemetry)
                rows.append(
                    (
                        second + 1,
                        rss_mib(sidecar.pid),
                        rss_mib(col.pid),
                        cpu_s(sidecar.pid) - cpu0,
                        records(logs),
                        d.get("rate_limited", 0.0),
                        d.get("ring_buffer_full", 0.0),
                        d.get("stream_behind", 0.0),
                    )
                )
            calls, took = workload.stdout.readline().split()
            workload.stdin.close()
            workload.wait(10)
    print(f"getppid() calls: {calls} in {took} s (asked {args.rate}/s for {args.seconds:g} s)")
    print(f"rate_limit: {args.rate_limit} events/s; logs: {tmp}")
    print()
    print(
        "| s | sidecar RSS MiB | collector RSS MiB | sidecar CPU s | records "
        "| rate_limited | ring_buffer_full | stream_behind |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]} "
            f"| {r[5]:.0f} | {r[6]:.0f} | {r[7]:.0f} |"
        )
    last = rows[-1]
    accounted = last[4] + last[5] + last[6] + last[7]
    print()
    print(
        f"accounted: {accounted:.0f} of {calls} calls "
        "(records + rate_limited + ring_buffer_full + stream_behind)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
