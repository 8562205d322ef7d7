"""How fast the sidecar attaches the default program set, and what memory it holds.

Starts the sidecar of a checkout on a socket and a bpffs pin folder of its own
(never the default ones), opens one stream asking for the chart's default
programs (deploy/kubernetes/daemonset.yaml: cpu, block, tcp, faults, process,
oom) with the maps of their default metrics, and measures:

- attach: seconds from starting the process to the stream's first snapshot
  (the programs compiled, loaded, attached and read once);
- RSS and PSS (/proc/<pid>/smaps_rollup) of the sidecar once its socket is
  up, and in steady state: after --snapshots snapshots with the set attached;
- peak: VmHWM of the sidecar, and the largest RSS any of its child processes
  reached (compiler processes, where the checkout has them; sampled).

Each checkout runs --runs times in a row, stopping the sidecar cleanly between
runs (which removes its pins, so no run adopts anything: "warm" is a restart
on a machine where the sidecar ran before, page cache and compile cache warm).
A checkout with --compile-cache gets a cache folder of its own, empty at its
first run.
With --drop-caches the first run starts with the page cache dropped (cold;
this slows everything else on the machine for a moment). --baseline adds a
second checkout (e.g. a worktree of main) run the same way, first.
Asserts nothing; prints a table.

    .venv/bin/python bench/sidecar_startup.py [--baseline ../main] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
PIN_PARENT = Path("/sys/fs/bpf")


def chart_programs() -> list[str]:
    docs = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    [cm] = [d for d in docs if d and d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    return [p["name"] for p in config["receivers"]["ebpf"]["programs"]]


def memory(pid: int) -> dict[str, float]:
    """Rss, Pss, Anonymous of smaps_rollup, in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:", "Anonymous:"):
            out[parts[0][:-1]] = int(parts[1]) / 1024
    return out


def status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            out += [int(k) for k in kids]
            todo += [int(k) for k in kids]
    return out


@dataclass
class ChildPeak:
    """The largest RSS a descendant of ``pid`` reached, sampled every 20 ms."""

    pid: int
    peak_mib: float = 0.0
    seen: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for kid in descendants(self.pid):
                try:
                    self.peak_mib = max(self.peak_mib, status(kid, "VmHWM"))
                except (OSError, KeyError):
                    continue
                self._pids.add(kid)
        self.seen = len(self._pids)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    started_s: float  # process start to socket
    attach_s: float  # process start to the first snapshot
    start_mem: dict[str, float]
    steady_mem: dict[str, float]
    hwm: float
    child_peak: float
    children: int
    llvm: bool  # LLVM or clang mapped into the sidecar in steady state


def one_run(repo: Path, programs: list[str], snapshots: int, tmp: Path, n: str) -> Run:
    sock = tmp / f"s{n}.sock"
    pin_dir = PIN_PARENT / f"bench-startup-{os.getpid()}-{n}"
    log = (tmp / f"sidecar{n}.log").open("wb")
    # a compile cache of the run's own (where the checkout has one): empty at
    # its first start, so that start compiles and the later ones need not
    cache: list[str] = []
    if "--compile-cache" in (repo / "sidecar/src/ebpf_sidecar/cli.py").read_text():
        cache = ["--compile-cache", str(tmp / f"cache-{n.rstrip('0123456789')}")]
    t0 = time.monotonic()
    side = subprocess.Popen(
        [
            str(repo / ".venv" / "bin" / "python"),
            "-m",
            "ebpf_sidecar",
            "--listen",
            f"unix://{sock}",
            "--pin-dir",
            str(pin_dir),
            *cache,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=repo,
    )
    peak = ChildPeak(side.pid)
    try:
        while not sock.exists():
            if side.poll() is not None:
                raise SystemExit(f"sidecar exited: {(tmp / f'sidecar{n}.log').read_text()}")
            time.sleep(0.01)
        started = time.monotonic() - t0
        start_mem = memory(side.pid)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
            described = stub.Describe(pb.DescribeRequest(), timeout=30)
            # the maps of the default metrics that the default parameters compile in
            planned = stub.Plan(
                pb.StreamRequest(programs=[pb.ProgramRequest(name=p) for p in programs]),
                timeout=30,
            )
            compiled = {(p.name, m.name) for p in planned.programs for m in p.maps}
            maps = sorted(
                {
                    (m.program, m.map)
                    for p in described.programs
                    if p.name in programs
                    for m in p.default_metrics
                }
                & compiled
            )
            request = pb.StreamRequest(
                programs=[pb.ProgramRequest(name=p) for p in programs],
                maps=[pb.MapRequest(program=p, map=m) for p, m in maps],
            )
            request.interval.FromSeconds(1)
            stream = stub.Stream(request)
            got = 0
            attach = 0.0
            for snap in stream:
                if snap.sequence == 0:
                    continue  # an event batch
                got += 1
                if got == 1:
                    attach = time.monotonic() - t0
                if got >= snapshots:
                    break
            steady = memory(side.pid)
            hwm = status(side.pid, "VmHWM")
            mapped = Path(f"/proc/{side.pid}/maps").read_text()
            llvm = "libLLVM" in mapped or "libclang" in mapped
            stream.cancel()
    finally:
        peak.stop()
        side.terminate()
        side.wait(60)
        log.close()
        if pin_dir.exists():
            subprocess.run(["rm", "-rf", str(pin_dir)], check=False)
    return Run(started, attach, start_mem, steady, hwm, peak.peak_mib, peak.seen, llvm)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, help="another checkout (with its .venv) to compare")
    ap.add_argument("--runs", type=int, default=3, help="starts per checkout (default 3)")
    ap.add_argument("--snapshots", type=int, default=5, help="snapshots before steady state")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache first")
    ap.add_argument("--log-dir", type=Path, help="keep the sidecars' logs here")
    ap.add_argument("--quick", action="store_true", help="one start per checkout")
    args = ap.parse_args()
    if args.quick:
        args.runs = 1
    programs = chart_programs()
    checkouts = [("baseline", args.baseline.resolve())] if args.baseline else []
    checkouts.append(("this", REPO))
    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.log_dir:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.log_dir)
            for old in args.log_dir.glob("cache-*"):
                shutil.rmtree(old)  # each checkout's first run starts without one
        for label, repo in checkouts:
            if args.drop_caches:
                drop_caches()
            results[label] = [
                one_run(repo, programs, args.snapshots, Path(tmp), f"{label}{i}")
                for i in range(args.runs)
            ]
    cpus = os.cpu_count()
    print(f"# bench/sidecar_startup.py: kernel {os.uname().release}, {cpus} CPUs")
    print(f"# programs: {', '.join(programs)}; steady state after {args.snapshots} snapshots")
    head = (
        "checkout", "run", "socket s", "attach s", "RSS start", "PSS start",
        "RSS steady", "PSS steady", "anon steady", "VmHWM", "LLVM", "child peak",
    )  # fmt: skip
    print(
        "{:18} {:>4} {:>8} {:>8} {:>9} {:>9} {:>10} {:>10} {:>11} {:>7} {:>4} {:>10}".format(*head)
    )
    for label, repo in checkouts:
        name = f"{label} ({repo.name})"
        for i, r in enumerate(results[label]):
            run = "cold" if i == 0 and args.drop_caches else ("1st" if i == 0 else "warm")
            print(
                f"{name:18} {run:>4} {r.started_s:8.2f} {r.attach_s:8.2f} "
                f"{r.start_mem['Rss']:7.1f}Mi {r.start_mem['Pss']:7.1f}Mi "
                f"{r.steady_mem['Rss']:8.1f}Mi {r.steady_mem['Pss']:8.1f}Mi "
                f"{r.steady_mem['Anonymous']:9.1f}Mi {r.hwm:5.0f}Mi {'yes' if r.llvm else 'no':>4} "
                + (f"{r.child_peak:6.0f}Mi x{r.children}" if r.children else f"{'-':>10}")
            )
        warm = results[label][1:] or results[label]
        print(
            f"{name:18} {'med':>4} {'':8} {statistics.median(r.attach_s for r in warm):8.2f} "
            f"{'':9} {'':9} {statistics.median(r.steady_mem['Rss'] for r in warm):8.1f}Mi"
        )


if __name__ == "__main__":
    main()
