"""runqlat per_cgroup: each container's waits against its tasks' run_delay.

Busy processes in two kubelet-shaped containers, more of them than CPUs,
wait for each other on the run queues. With ``per_cgroup: "true"`` each
wait is counted under the waiting task's cgroup, so each container's
histogram sum must match the kernel's own per-thread accounting
(``run_delay``, /proc/<pid>/schedstat) of that container's tasks: a noisy
neighbour shows up as the *other* pod's waits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import (
    BUSY_WORKER,
    KubeletContainer,
    Process,
    Samples,
    blocked_on_stdin,
    busy_round,
    free_port,
    hear,
    pipeline_config,
    scrape,
    scrape_since,
    start_collector,
    wait_for,
)

PER_CONTAINER = int(1.5 * (os.cpu_count() or 2))  # 3 each on 2 CPUs: 6 busy tasks
BUSY_SECONDS = 3.0
NAME = "ebpf_sched_runqueue_latency_seconds"


def wait_sum(samples: Samples, container_id: str) -> float:
    return sum(
        v for n, lab, v in samples if n == f"{NAME}_sum" and lab.get("container_id") == container_id
    )


def schedstat(pid: int) -> tuple[int, int]:
    """(run_delay in ns, pcount) of a process: /proc/<pid>/schedstat's 2nd and 3rd fields."""
    fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(fields[1]), int(fields[2])


def run_delay_s(pids: list[int]) -> float:
    return sum(schedstat(p)[0] for p in pids) / 1e9


@contextmanager
def runqlat_by_cgroup(sock: Path, tmp_path: Path) -> Iterator[int]:
    """A collector with runqlat per_cgroup (samples stamped with their
    snapshot's time, for scrape_since) until the block ends; its port once
    the histogram is scraped."""
    port = free_port()
    receiver = {
        "endpoint": f"unix://{sock}",
        "collection_interval": "1s",
        "programs": [{"name": "runqlat", "parameters": {"per_cgroup": "true"}}],
    }
    config = pipeline_config(receiver, port)
    config["exporters"]["prometheus"]["send_timestamps"] = True
    col = start_collector(config, tmp_path)
    try:
        wait_for(
            f"first {NAME} scrape", lambda: any(n.startswith(NAME) for n, _, _ in scrape(port)), 30
        )
        yield port
    finally:
        col.stop()


def busy_workers(
    container: KubeletContainer, n: int, seconds: float, *prefix: str
) -> list[subprocess.Popen[str]]:
    """``n`` BUSY_WORKERs in ``container`` (their argv after ``prefix``, e.g. taskset)."""
    return [
        container.run(
            [*prefix, sys.executable, "-c", BUSY_WORKER, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(n)
    ]


def close(workers: Iterable[subprocess.Popen[str]]) -> None:
    for w in workers:
        if w.stdin:
            w.stdin.close()
        w.wait(10)


def test_per_container_waits_match_their_tasks_run_delay(
    sidecar: tuple[Process, Path],
    kubelet_containers: Callable[[], KubeletContainer],
    tmp_path: Path,
) -> None:
    _, sock = sidecar
    containers = [kubelet_containers(), kubelet_containers()]
    workers: dict[str, list[subprocess.Popen[str]]] = {}
    with runqlat_by_cgroup(sock, tmp_path) as port:
        try:
            for c in containers:
                workers[c.container_id] = busy_workers(c, PER_CONTAINER, BUSY_SECONDS)
            every = [w for ws in workers.values() for w in ws]
            hear(every, "ready")
            time.sleep(2.5)  # start-up waits land in a snapshot before the window
            before = scrape(port)
            delay_before = {cid: run_delay_s([w.pid for w in ws]) for cid, ws in workers.items()}
            busy_round(every)
            time.sleep(2.5)  # two more snapshots: every wait of the window is in
            after = scrape(port)
            delay_after = {cid: run_delay_s([w.pid for w in ws]) for cid, ws in workers.items()}
        finally:
            close(w for ws in workers.values() for w in ws)
    for c in containers:
        cid = c.container_id
        ours = wait_sum(after, cid) - wait_sum(before, cid)
        kernel = delay_after[cid] - delay_before[cid]
        print(f"container {cid[:12]}: ours {ours:.4f} s, run_delay {kernel:.4f} s")
        # The container holds only these tasks: the same waits on both sides,
        # less the window's edges (snapshots and /proc read up to 1 s apart;
        # a wait in flight at an edge falls on one side only), as in the
        # node-wide runqlat test, and less what a task waited before it
        # migrated (run_delay takes it at the dequeue, with no switch-in;
        # 2-3 % beside a CPU hog). The pinned test below is exact.
        assert kernel > 0.5, "the workers hardly waited: not enough contention to compare"
        assert 0.95 * kernel <= ours <= 1.05 * kernel, (cid, ours, kernel)
    # a series per container: the waits are not folded into the node's
    labels = {lab.get("container_id") for n, lab, _ in after if n == f"{NAME}_sum"}
    assert {c.container_id for c in containers} <= labels


def container_histogram(samples: Samples, container_id: str) -> tuple[int, float]:
    """(count, sum in s) of a container's run queue histogram."""
    count = sum(
        v
        for n, lab, v in samples
        if n == f"{NAME}_count" and lab.get("container_id") == container_id
    )
    return int(count), wait_sum(samples, container_id)


def test_pinned_waits_are_the_kernels_run_delay_and_pcount(
    sidecar: tuple[Process, Path],
    kubelet_containers: Callable[[], KubeletContainer],
    tmp_path: Path,
) -> None:
    """Each wait is the delta the scheduler adds to the task's run_delay, at
    the switch-in that adds it (runqlat reads sched_info.last_queued and the
    run queue's clock): with the container's busy tasks pinned to one CPU
    (no migration, whose dequeue the kernel adds to run_delay without a
    switch-in), the container's histogram holds exactly their pcount waits
    and their run_delay. Baselines and results come from snapshots taken
    while every task slept."""
    _, sock = sidecar
    container = kubelet_containers()
    cid = container.container_id
    cpu = str(max(os.sched_getaffinity(0)))
    workers: list[subprocess.Popen[str]] = []
    with runqlat_by_cgroup(sock, tmp_path) as port:
        try:
            workers = busy_workers(container, 3, 1.0, "taskset", "-c", cpu)
            pids = [w.pid for w in workers]
            hear(workers, "ready")
            since = blocked_on_stdin(*pids)
            kernel0 = [schedstat(p) for p in pids]
            ours0 = container_histogram(
                scrape_since(port, since, (f"{NAME}_count",), container_id=cid), cid
            )
            busy_round(workers)
            since = blocked_on_stdin(*pids)
            kernel1 = [schedstat(p) for p in pids]
            ours1 = container_histogram(
                scrape_since(port, since, (f"{NAME}_count",), container_id=cid), cid
            )
        finally:
            close(workers)
    delay_ns = sum(b[0] - a[0] for a, b in zip(kernel0, kernel1, strict=True))
    pcount = sum(b[1] - a[1] for a, b in zip(kernel0, kernel1, strict=True))
    count = ours1[0] - ours0[0]
    ours_ns = round((ours1[1] - ours0[1]) * 1e9)
    print(f"waits: ours {count} ({ours_ns} ns), kernel pcount {pcount} (run_delay {delay_ns} ns)")
    assert pcount > 10 and delay_ns > 100_000_000, "the pinned workers hardly waited"
    if count == pcount:
        # the same waits: the same nanoseconds (float seconds on the wire)
        assert abs(ours_ns - delay_ns) <= 2, (ours_ns, delay_ns)
    else:
        # On this Firecracker guest kernel a switch now and then raises no
        # sched_switch event at all (the guest agent's thread leaving the
        # CPU; ftrace's own event is missing too, bpf/cpu/cpu.c): the wait
        # it ends is not seen. About one a second.
        assert 0 < pcount - count <= 3, (count, pcount)
        assert 0.9 * delay_ns <= ours_ns < delay_ns, (ours_ns, delay_ns)
