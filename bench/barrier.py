"""What the write-behind barrier adds to a read of a map: a benchmark that prints a table.

Before every read of a write-behind map (`cpu`'s process_cpu) the sidecar
makes every CPU it may run on switch once and waits until each has written
its cache (ebpf_sidecar.write_behind). This loads `cpu` through the
sidecar's own ProgramManager and times, interleaved, the barrier alone and
a whole read of process_cpu with it, on an idle machine and beside a CPU hog
on every CPU (the visiting thread then has to be scheduled in among them).
Needs root.

    .venv/bin/python bench/barrier.py [--reads 200] [--quick]

Results and how to read them: docs/overhead.md, "Write-behind".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ebpf_sidecar.libbpf import online_cpus
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def hogs(on: bool) -> Iterator[None]:
    """A spinning process pinned to each online CPU while on."""
    procs = []
    if on:
        for cpu in sorted(online_cpus()):
            p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            os.sched_setaffinity(p.pid, {cpu})
            procs.append(p)
        time.sleep(0.2)
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def quantiles(ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return f"{statistics.median(ms):8.2f} {p90:8.2f} {ms[-1]:8.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--reads", type=int, default=200, help="barriers (and reads) per state")
    p.add_argument("--quick", action="store_true", help="30 reads per state")
    args = p.parse_args()
    if args.quick:
        args.reads = 30
    if os.geteuid() != 0:
        print("bench/barrier.py loads BPF programs: run it as root", file=sys.stderr)
        return 1
    manager = ProgramManager(load_catalog([ROOT / "bpf"]))
    loaded = manager.acquire("cpu", {})
    try:
        reader = loaded.readers["process_cpu"]
        barrier = reader.write_behind
        assert barrier is not None
        print(f"# bench/barrier.py --reads {args.reads}: {len(online_cpus())} online CPUs")
        print()
        print(f"{'state':<22} {'what':<28} {'median ms':>9} {'p90 ms':>8} {'max ms':>8}")
        for hogged in (False, True):
            state = "a hog on every CPU" if hogged else "idle"
            with hogs(hogged):
                barrier_ms: list[float] = []
                read_ms: list[float] = []
                late = 0
                for _ in range(args.reads):
                    t0 = time.perf_counter()
                    late += len(barrier.flush())
                    t1 = time.perf_counter()
                    reader.read(pb.MapSnapshot())
                    t2 = time.perf_counter()
                    barrier_ms.append((t1 - t0) * 1e3)
                    read_ms.append((t2 - t1) * 1e3)
                print(f"{state:<22} {'barrier alone':<28} {quantiles(barrier_ms)}")
                print(f"{state:<22} {'read of process_cpu with it':<28} {quantiles(read_ms)}")
                if late:
                    print(f"{state:<22} CPUs late at a barrier: {late}")
    finally:
        manager.release(loaded)
        manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
