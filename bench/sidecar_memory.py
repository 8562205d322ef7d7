"""The sidecar's own footprint: a benchmark that prints tables (no assertions).

1. Where its memory goes: the RSS of a fresh Python process after each
   import the sidecar makes, in the order it makes them (interpreter, gRPC
   and protobuf, BCC, numpy, the sidecar's modules).
2. A sidecar of its own (its own socket in a temporary directory, stopped at
   the end) serving the default program set of collector-config/default.yaml
   to one stream: its RSS right after start, the time from the Stream call to
   the first snapshot (compiling and attaching the set) and its RSS then and
   after a few more snapshots.

    .venv/bin/python bench/sidecar_memory.py

Needs root. See docs/overhead.md ("Sidecar memory") for results.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "collector-config" / "default.yaml"

IMPORTS = [
    ("interpreter", ""),
    ("grpc, protobuf", "import grpc, google.protobuf"),
    ("bcc", "import bcc"),
    ("numpy", "import numpy"),
    ("the sidecar's modules", "import ebpf_sidecar.cli, ebpf_sidecar.server"),
]


def _rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def import_steps() -> list[tuple[str, float]]:
    rss = "open('/proc/self/status').read().split('VmRSS:')[1].split()[0]"
    code = "".join(f"{stmt}\nprint({label!r}, {rss})\n" for label, stmt in IMPORTS)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
    )
    return [
        (line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1]) / 1024)
        for line in out.stdout.splitlines()
    ]


def default_programs() -> list[str]:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return [p["name"] for p in config["receivers"]["ebpf"]["programs"]]


def main() -> None:
    steps = import_steps()
    print("\nRSS of a fresh process after each import the sidecar makes\n")
    print("| after | RSS | added |")
    print("|---|---|---|")
    before = 0.0
    for label, rss in steps:
        print(f"| {label} | {rss:.1f} MiB | {rss - before:+.1f} MiB |")
        before = rss

    programs = default_programs()
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
        sock = Path(tmp) / "sidecar.sock"
        log = (Path(tmp) / "sidecar.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ebpf_sidecar", "--listen", f"unix://{sock}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not sock.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the sidecar did not start:\n{Path(log.name).read_text()}")
                time.sleep(0.05)
            time.sleep(1)  # settled
            at_start = _rss_mib(proc.pid)
            with grpc.insecure_channel(f"unix://{sock}") as channel:
                stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
                desc = stub.Describe(pb.DescribeRequest())
                maps = [
                    pb.MapRequest(program=p.name, map=m.name)
                    for p in desc.programs
                    if p.name in programs
                    for m in p.maps
                    if not m.enabled_by
                ]
                request = pb.StreamRequest(
                    programs=[pb.ProgramRequest(name=n) for n in programs],
                    maps=maps,
                    packed_columns=True,
                )
                request.interval.FromMilliseconds(500)
                started = time.monotonic()
                stream = stub.Stream(request)
                first = next(stream)
                to_first = time.monotonic() - started
                after_first = _rss_mib(proc.pid)
                for _ in range(6):
                    next(stream)
                steady = _rss_mib(proc.pid)
                stream.cancel()
            names = ", ".join(programs)
            print(f"\nA sidecar serving the default set ({names}), snapshots every 0.5 s\n")
            print("| sidecar | value |")
            print("|---|---|")
            print(f"| RSS after start | {at_start:.0f} MiB |")
            print(f"| Stream call to first snapshot (compile + attach + read) | {to_first:.2f} s |")
            print(f"| RSS at the first snapshot ({len(first.maps)} maps) | {after_first:.0f} MiB |")
            print(f"| RSS after 6 more snapshots | {steady:.0f} MiB |")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()


if __name__ == "__main__":
    main()
