"""What BPF run-time statistics cost per event: a benchmark that prints a table (no assertions).

The sidecar holds the kernel's BPF run-time statistics on while it runs
(BPF_ENABLE_STATS, see sidecar/src/ebpf_sidecar/cost.py), so that each
program's run time and run count reach the receiver's self-metrics. While
they are on, every BPF program on the node pays two clock reads and a per-CPU
add per run. This measures that: per program, its hooks fired by the
program's workload (bench/workloads.py), with the empty program (the floor)
and with the real catalog program attached, each with the statistics off and
on, interleaved round by round; the added CPU ns per event is the median of
the per-round differences of the workload's CPU time divided by the events
per operation.

    .venv/bin/python bench/run_time_stats.py [--rounds 9] [--programs syscalls,cpu]

Results and the command are in docs/overhead.md ("The agent's own cost").
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import workloads
from overhead import (
    FULL,
    Attachment,
    Bench,
    empty_source,
    load_catalog,
    machine,
    median_mad,
    synthetic,
    workload_of,
)

from ebpf_sidecar import cost


def cpu_ns_per_op(helper: Path, workload: workloads.Workload, ops: int) -> float:
    """The workload's CPU time (user + system) per operation.

    Its CPU time, not its wall time: on a loaded machine the wall time also
    holds whatever ran in between, noise far larger than a few ns per event.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    workloads.run(helper, workload, ops)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return used * 1e9 / ops


def added_ns(
    attachment: Attachment, helper: Path, workload: workloads.Workload, ops: int, rounds: int
) -> tuple[float, float]:
    """Median and MAD of (stats on - stats off) ns per operation, interleaved."""
    diffs = []
    attachment.on()
    try:
        for r in range(rounds):
            times = {}
            for state in ("off", "on") if r % 2 == 0 else ("on", "off"):
                fd = cost.enable_run_time_stats() if state == "on" else None
                try:
                    times[state] = cpu_ns_per_op(helper, workload, ops)
                finally:
                    if fd is not None:
                        os.close(fd)
            diffs.append(times["on"] - times["off"])
    finally:
        attachment.off()
    return median_mad(diffs)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=9, help="interleaved off/on pairs per row")
    p.add_argument("--programs", default="syscalls,cpu", help="catalog programs, comma-separated")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run_time_stats.py loads BPF programs: run it as root", file=sys.stderr)
        return 1
    subprocess.run([str(workloads.BENCH / "setup.sh")], check=True)
    catalog, _ = load_catalog()
    sysctl = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    print(f"# bench/run_time_stats.py --rounds {args.rounds}: {machine()}")
    print(f"# kernel.bpf_stats_enabled={sysctl} (must be 0: 'off' would be on otherwise)")
    print()
    print(
        f"{'program':<10} {'workload':<16} {'ev/op':>6} "
        f"{'empty +ns/ev':>13} {'±':>5} {'program +ns/ev':>15} {'±':>5}"
    )
    with tempfile.TemporaryDirectory(prefix="statsbench-") as tmpdir:
        tmp = Path(tmpdir)
        helper = workloads.build_helper(tmp)
        bench = Bench(FULL, helper, tmp / "generated", catalog)
        try:
            for name in args.programs.split(","):
                program = catalog.program(name)
                workload = workload_of(program)
                if isinstance(workload, str):
                    print(f"{name:<10} {workload}")
                    continue
                events = sum(bench.count_events(program, workload).values())
                ops = bench.ops_for(workload)
                empty = synthetic(
                    f"bench_empty_{name}", empty_source(program.hooks), program.hooks, tmp
                )
                cells = []
                for attachment in (
                    Attachment(bench.synthetic_manager([empty]), empty.name, {}),
                    Attachment(bench.manager, name, {}),
                ):
                    attachment.off()
                    try:
                        median, mad = added_ns(attachment, helper, workload, ops, args.rounds)
                    finally:
                        attachment.close()
                    cells.append((median / events, mad / events))
                (e, e_mad), (r, r_mad) = cells
                print(
                    f"{name:<10} {workload.name:<16} {events:>6.2f} "
                    f"{e:>13.1f} {e_mad:>5.1f} {r:>15.1f} {r_mad:>5.1f}"
                )
        finally:
            bench.manager.close()
    print()
    print("+ns/ev: what holding the statistics on adds per event on the program's hooks,")
    print("median of per-round differences (± their median absolute deviation).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
