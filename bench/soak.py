"""Soak: every program at a high event rate for a while, with churn and kills.

`make run`'s own script (scripts/run.sh) runs the sidecar (restarted when it
dies) and the collector with every catalog program on a 2 s interval, on a
socket and port of its own. Meanwhile:

- workloads fire every program's hooks: a getppid loop of known length per
  round (syscalls), process churn (process, faults, cpu), CPU hogs
  (runqlat), loopback TCP connections refused and accepted (tcp), file
  writes with fsync (block);
- extra streams open and close every few seconds (their programs share
  the collector's instances or load their own);
- the sidecar is SIGKILLed every --kill-every seconds.

Every 5 s it samples the RSS of the sidecar (whichever process it is now) and
the collector, the BPF programs loaded, and the soak's exact getppid counter
as Prometheus shows it. At the end it stops run.sh with SIGINT, as Ctrl-C
would, and checks that no program, pin or socket is left. It prints a table
and a summary; it asserts nothing (docs/reliability.md has the numbers).

    .venv/bin/python bench/soak.py [--minutes 10] [--kill-every 120]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = ["cpu", "block", "tcp", "faults", "process", "oom", "syscalls", "runqlat"]
COMM = "soak-getppid"  # the comm of the exact loop, so its series is its own
PINS = Path("/sys/fs/bpf/ebpfreceiver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loaded_programs() -> int:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    return len(json.loads(out.stdout or "[]"))


def pids_of(needle: bytes) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
    return found


def scrape_counter(port: int) -> float | None:
    """The soak loop's getppid count, as Prometheus shows it."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if (
            line.startswith("ebpf_syscalls_total{")
            and f'process_executable_name="{COMM}"' in line
            and 'syscall_name="getppid"' in line
        ):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


class Workloads:
    """Threads and processes firing every program's hooks until stopped."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stop = threading.Event()
        self.getppid_calls = 0
        self.threads = [
            threading.Thread(target=f, daemon=True)
            for f in (self._spawn, self._tcp, self._disk, self._getppid)
        ]
        # runqlat and cpu: two hogs per CPU keep the run queues busy
        self.hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(2 * (os.cpu_count() or 1))
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        for h in self.hogs:
            h.kill()
            h.wait()

    def _spawn(self) -> None:
        while not self.stop.is_set():
            subprocess.run(["/bin/true"], check=False)

    def _tcp(self) -> None:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        port = server.getsockname()[1]
        closed = free_port()  # nothing listens: each connect is answered by a reset
        while not self.stop.is_set():
            with socket.create_connection(("127.0.0.1", port)) as c:
                peer, _ = server.accept()
                c.sendall(b"x" * 4096)
                peer.recv(8192)
                peer.close()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", closed)):
                pass
        server.close()

    def _disk(self) -> None:
        path = self.tmp / "soak.dat"
        while not self.stop.is_set():
            with path.open("wb") as f:
                f.write(os.urandom(1 << 20))
                f.flush()
                os.fsync(f.fileno())
            time.sleep(0.05)

    def _getppid(self) -> None:
        """Exact rounds of getppid in a child with its own comm, counted here."""
        child = subprocess.Popen(
            [sys.executable, "-c", GETPPID_CHILD, COMM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin and child.stdout
        while not self.stop.is_set():
            child.stdin.write("100000\n")
            child.stdin.flush()
            child.stdout.readline()
            self.getppid_calls += 100_000
            time.sleep(0.2)
        child.stdin.close()
        child.wait(10)


GETPPID_CHILD = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
getppid = os.getppid
for line in sys.stdin:
    for _ in range(int(line)):
        getppid()
    sys.stdout.write("done\n"); sys.stdout.flush()
"""


def churn_streams(socket_path: Path, stop: threading.Event, opened: list[int]) -> None:
    """Extra clients: a stream of a few programs for a few snapshots, again and again."""
    rounds = 0
    while not stop.is_set():
        names = [PROGRAMS[(rounds + i) % len(PROGRAMS)] for i in range(2)]
        req = pb.StreamRequest(programs=[pb.ProgramRequest(name=n) for n in names])
        req.interval.FromMilliseconds(500)
        rounds += 1
        with (
            contextlib.suppress(grpc.RpcError),
            grpc.insecure_channel(f"unix://{socket_path}") as channel,
        ):
            stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
            stream = stub.Stream(req, timeout=30)
            for i, _ in enumerate(stream):
                if i == 3 or stop.is_set():
                    break
            stream.cancel()
            opened[0] += 1
        stop.wait(2)


@dataclass
class Sample:
    t: float
    sidecar_pid: int
    sidecar_mib: float
    collector_mib: float
    programs: int
    counter: float | None
    loop_calls: int


@contextlib.contextmanager
def running(config: Path, socket_path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "CONFIG": str(config), "SIDECAR_SOCKET": str(socket_path)}
    with log.open("wb") as out:
        run = subprocess.Popen(
            [str(REPO / "scripts" / "run.sh")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield run
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
            try:
                run.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--kill-every", type=float, default=120.0, help="seconds between SIGKILLs")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("the soak loads BPF programs: run it as root", file=sys.stderr)
        return 1
    baseline_programs = loaded_programs()
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-soak-"))
    socket_path = tmp / "sidecar.sock"
    port = free_port()
    config = yaml.safe_load((REPO / "collector-config" / "default.yaml").read_text())
    receiver = config["receivers"]["ebpf"]
    receiver["endpoint"] = f"unix://{socket_path}"
    receiver["collection_interval"] = "2s"
    receiver["programs"] = [{"name": n} for n in PROGRAMS]
    config["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{port}"
    # The churn workload makes a new per-process series every few
    # milliseconds; the exporter keeps a series 5 min after its last update
    # by default, which would make its memory, not ours, the soak's curve.
    config["exporters"]["prometheus"]["metric_expiration"] = "1m"
    config["service"]["pipelines"]["metrics"]["exporters"] = ["prometheus"]
    config["service"]["telemetry"] = {"metrics": {"level": "none"}}
    config_path = tmp / "soak.yaml"
    config_path.write_text(yaml.safe_dump(config))
    samples: list[Sample] = []
    kills = 0
    streams_opened = [0]
    stop = threading.Event()
    work = Workloads(tmp)
    print(
        f"soak: {args.minutes:g} min, SIGKILL of the sidecar every {args.kill_every:g} s; "
        f"log in {tmp}/run.log",
        flush=True,
    )
    with running(config_path, socket_path, tmp / "run.log"):
        work.start()
        deadline = time.monotonic() + 120
        while scrape_counter(port) is None and time.monotonic() < deadline:
            time.sleep(1)
        churn = threading.Thread(target=churn_streams, args=(socket_path, stop, streams_opened))
        churn.start()
        start = time.monotonic()
        next_kill = start + args.kill_every
        end = start + args.minutes * 60
        try:
            while (now := time.monotonic()) < end:
                sidecars = pids_of(f"unix://{socket_path}".encode())
                sidecar = next(
                    (
                        pid
                        for pid in sidecars
                        if b"ebpf_sidecar" in Path(f"/proc/{pid}/cmdline").read_bytes()
                    ),
                    0,
                )
                collectors = pids_of(str(config_path).encode())
                collector = next(
                    (
                        pid
                        for pid in collectors
                        if b"otelcol-ebpf" in Path(f"/proc/{pid}/cmdline").read_bytes()
                    ),
                    0,
                )
                samples.append(
                    Sample(
                        now - start,
                        sidecar,
                        rss_mib(sidecar) if sidecar else 0.0,
                        rss_mib(collector) if collector else 0.0,
                        loaded_programs(),
                        scrape_counter(port),
                        work.getppid_calls,
                    )
                )
                if now >= next_kill and sidecar:
                    os.kill(sidecar, signal.SIGKILL)
                    kills += 1
                    next_kill += args.kill_every
                time.sleep(5)
        finally:
            stop.set()
            churn.join(60)
            work.close()
    time.sleep(2)
    left_programs = loaded_programs() - baseline_programs
    left_pins = sorted(str(p) for p in PINS.rglob("*")) if PINS.exists() else []
    left_socket = socket_path.exists()

    print(
        f"\n{'t (s)':>6} {'sidecar pid':>11} {'sidecar MiB':>11} {'collector MiB':>13} "
        f"{'programs':>8} {'counter':>12} {'loop calls':>11}"
    )
    for s in samples:
        counter = f"{s.counter:.0f}" if s.counter is not None else "-"
        print(
            f"{s.t:6.0f} {s.sidecar_pid:11d} {s.sidecar_mib:11.1f} {s.collector_mib:13.1f} "
            f"{s.programs:8d} {counter:>12} {s.loop_calls:11d}"
        )
    warm = [s for s in samples if s.t >= min(60.0, args.minutes * 15)]
    half = len(warm) // 2

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else 0.0

    counters = [s.counter for s in samples if s.counter is not None]
    drops = sum(1 for a, b in itertools.pairwise(counters) if b < a)
    last = samples[-1] if samples else None
    print("\nsummary")
    print(
        f"  duration {args.minutes:g} min, sidecar SIGKILLs {kills}, extra streams "
        f"opened and closed {streams_opened[0]}"
    )
    print(
        f"  sidecar RSS median, first/second half after warm-up: "
        f"{med([s.sidecar_mib for s in warm[:half]]):.1f} / "
        f"{med([s.sidecar_mib for s in warm[half:]]):.1f} MiB"
    )
    print(
        f"  collector RSS median, first/second half after warm-up: "
        f"{med([s.collector_mib for s in warm[:half]]):.1f} / "
        f"{med([s.collector_mib for s in warm[half:]]):.1f} MiB"
    )
    print(
        f"  getppid counter: {drops} decreases (a restart that lost the count), last "
        f"{last.counter if last else None} of {last.loop_calls if last else 0} calls made"
    )
    print(
        f"  left behind after Ctrl-C: {left_programs} BPF programs, {len(left_pins)} pins, "
        f"socket {'present' if left_socket else 'gone'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
