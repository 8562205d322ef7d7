"""Percentiles of the exported latency histograms against the exact distribution.

The workload: O_DIRECT reads of mixed sizes at random offsets of a
file-backed loop device of our own (direct I/O to its backing file on the
machine's disk), so request latencies spread over a few powers of two.
The exact distribution comes from a second, BPF-free measurement of the same
requests: an ftrace instance records block_rq_issue and block_rq_complete of
that device (trace clock mono, bpf_ktime_get_ns()'s clock), and each
request's latency is its completion time minus its issue time.

The `block` program runs twice: at the default histogram_scale 2 (explicit
buckets to one Prometheus port, and the same map as an OpenTelemetry
exponential histogram to a file) and at histogram_scale 0, BCC's log2 slots
(to a second Prometheus port). From each, p50, p90 and p99 are the geometric
midpoint of the bucket that holds the sample of that rank (nearest rank),
and the exact ones that sample of the ftrace list.

Tolerance: a value in a bucket (lo, hi] is within hi/lo^(1/2) - 1 of the
bucket's geometric midpoint: 2^(1/8) - 1 = 9.05 % at scale 2, 2^(1/2) - 1
= 41 % at scale 0 (the issue asks for 50 %). ftrace prints microseconds
(truncated), so an ftrace latency is within 1 µs of the kernel's, and BPF
and ftrace read the clock in different probes of one tracepoint a few
hundred ns apart: 2 µs of slack on top of the bound. The counts match
exactly: both see every request of the device in the window.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_accuracy_block import (
    ALIGN,
    IMAGE_SIZE,
    MiB,
    attached_loop_device,
    block_trace,
    warm_up_read,
)

from conftest import (
    Process,
    Samples,
    assert_no_trace_lost,
    expose_self_telemetry,
    free_port,
    scrape,
    start_collector,
    value,
    wait_for,
)

LATENCY = "ebpf_disk_io_latency_seconds"
READS = 1500
SIZES = [4096, 16384, 65536, 262144, MiB]  # one request each (max_sectors_kb is 1280)
PERCENTILES = (0.5, 0.9, 0.99)
SLACK_NS = 2000
# A bucket (lo, hi] at scale s has hi/lo = 2^(1/2^s): its geometric midpoint
# is within a factor 2^(1/2^(s+1)) of any value in it.
RATIO = {2: 2 ** (1 / 8), 0: 2 ** (1 / 2)}


LINE = re.compile(r" (\d+)\.(\d{6}): block_rq_(issue|complete): \d+,\d+ (\S+) .*?(\d+) \+ \d+ ")


def traced_read_latencies(text: str) -> list[int]:
    """Each read's completion minus issue time, in ns (ftrace prints µs)."""
    issued: dict[int, int] = {}
    out = []
    for m in LINE.finditer(text):
        us = int(m.group(1)) * 1_000_000 + int(m.group(2))
        if "R" not in m.group(4):
            continue
        sector = int(m.group(5))
        if m.group(3) == "issue":
            issued[sector] = us
        elif sector in issued:
            out.append((us - issued.pop(sector)) * 1000)
    assert not issued, f"{len(issued)} reads issued but not completed"
    return sorted(out)


def buckets(samples: Samples, dev: str) -> list[tuple[float, float]]:
    """(upper bound in s, cumulative count) of the device's read histogram."""
    found = [
        (float(lab["le"]), v)
        for n, lab, v in samples
        if n == f"{LATENCY}_bucket"
        and lab.get("system_device") == dev
        and lab.get("disk_io_direction") == "read"
    ]
    return sorted(found)


def percentile_from_buckets(
    before: list[tuple[float, float]], after: list[tuple[float, float]], rank: int
) -> float:
    """The geometric midpoint (ns) of the bucket holding the sample of ``rank``."""
    base = dict(before)
    lo = 0.0
    for le, cum in after:
        if cum - base.get(le, 0.0) >= rank:
            assert lo > 0 and math.isfinite(le), f"rank {rank} in ({lo}, {le}]"
            return math.sqrt(lo * le) * 1e9
        lo = le
    raise AssertionError(f"rank {rank} is beyond the histogram")


def exponential_points(path: Path, dev: str) -> list[dict[str, Any]]:
    """Every exported read data point of the device's exponential histogram, in order."""
    points = []
    for line in path.read_text().splitlines():
        for rm in json.loads(line).get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for m in sm.get("metrics", []):
                    if m["name"] != "ebpf.disk.io.latency" or "exponentialHistogram" not in m:
                        continue
                    for dp in m["exponentialHistogram"]["dataPoints"]:
                        attrs = {
                            a["key"]: a["value"].get("stringValue")
                            for a in dp.get("attributes", [])
                        }
                        if (
                            attrs.get("system.device") == dev
                            and attrs.get("disk.io.direction") == "read"
                        ):
                            points.append(dp)
    return points


def exponential_percentile(before: dict[str, Any], after: dict[str, Any], rank: int) -> float:
    """The geometric midpoint (ns) of the exponential bucket holding ``rank``."""
    scale = after["scale"]
    # block's disk_latency at histogram_scale 2: slot 0 up to 2^10 ns, then index 40 on
    assert scale == 2
    assert after["zeroThreshold"] == 1024
    assert after["positive"]["offset"] == 10 * 2**scale
    assert int(after.get("zeroCount", 0)) == int(before.get("zeroCount", 0))

    def counts(dp: dict[str, Any]) -> dict[int, int]:
        pos = dp.get("positive", {})
        off = pos.get("offset", 0)
        return {off + i: int(c) for i, c in enumerate(pos.get("bucketCounts", []))}

    b, a = counts(before), counts(after)
    cum = 0
    for i in sorted(a):
        cum += a[i] - b.get(i, 0)
        if cum >= rank:
            return float(2 ** ((i + 0.5) / 2**scale))
    raise AssertionError(f"rank {rank} is beyond the histogram")


def fill(fd: int) -> None:
    """Write the whole device, so that reads reach the disk (not holes of the image)."""
    chunk = mmap.mmap(-1, 4 * MiB)
    chunk.write(b"\x5a" * 4 * MiB)
    for off in range(0, IMAGE_SIZE, 4 * MiB):
        assert os.pwrite(fd, chunk, off) == 4 * MiB
    os.fsync(fd)


def random_reads(fd: int) -> None:
    """READS O_DIRECT reads of SIZES at random aligned offsets."""
    rng = random.Random(13)
    bufs = {size: mmap.mmap(-1, size) for size in SIZES}
    for _ in range(READS):
        size = rng.choice(SIZES)
        off = rng.randrange(0, (IMAGE_SIZE - size) // ALIGN) * ALIGN
        assert os.preadv(fd, [bufs[size]], off) == size


def settled(port: int, dev: str) -> list[tuple[float, float]]:
    """The device's read buckets once two scrapes 2.5 s apart (>= 2 snapshots) agree."""

    def stable() -> list[tuple[float, float]] | None:
        first = buckets(scrape(port), dev)
        time.sleep(2.5)
        second = buckets(scrape(port), dev)
        return second if first == second else None

    return wait_for(f"stable {LATENCY} for {dev}", stable, 60)


def block_misses(telemetry_port: int) -> float:
    """Runs the kernel skipped of the block programs of the receivers (their
    recursion_misses, the receiver's self-metric): for the record."""
    name = "otelcol_receiver_ebpf_program_recursion_misses_total"
    return value(scrape(telemetry_port), name, program="block") or 0


@pytest.fixture
def loop_dev(tmp_path: Path) -> Iterator[str]:
    with attached_loop_device(tmp_path / "disk.img") as dev:
        yield dev


def test_percentiles_within_the_scales_bound(
    sidecar: tuple[Process, Path], loop_dev: str, tmp_path: Path
) -> None:
    _, sock = sidecar
    name = os.path.basename(loop_dev)
    fine, log2 = free_port(), free_port()
    exp_file = tmp_path / "exponential.jsonl"
    ebpf = {"endpoint": f"unix://{sock}", "collection_interval": "1s"}
    config = {
        "receivers": {
            "ebpf/fine": {**ebpf, "programs": [{"name": "block"}]},
            "ebpf/log2": {
                **ebpf,
                "programs": [{"name": "block", "parameters": {"histogram_scale": "0"}}],
            },
            "ebpf/exponential": {
                **ebpf,
                "programs": [
                    {
                        "name": "block",
                        "metrics": {
                            "ebpf.disk.io.latency": {
                                "histogram_format": "exponential",
                                "unit": "ns",
                            }
                        },
                    }
                ],
            },
        },
        "exporters": {
            "prometheus/fine": {"endpoint": f"127.0.0.1:{fine}"},
            "prometheus/log2": {"endpoint": f"127.0.0.1:{log2}"},
            "file": {"path": str(exp_file)},
        },
        "service": {
            "pipelines": {
                "metrics/fine": {
                    "receivers": ["ebpf/fine"],
                    "exporters": ["prometheus/fine"],
                },
                "metrics/log2": {
                    "receivers": ["ebpf/log2"],
                    "exporters": ["prometheus/log2"],
                },
                "metrics/exponential": {
                    "receivers": ["ebpf/exponential"],
                    "exporters": ["file"],
                },
            },
        },
    }
    telemetry = free_port()
    expose_self_telemetry(config, telemetry)
    col = start_collector(config, tmp_path)
    try:
        wait_for(
            f"{name}'s latency on both ports and in the file",
            lambda: (
                warm_up_read(loop_dev)
                and value(scrape(fine), f"{LATENCY}_count", system_device=name)
                and value(scrape(log2), f"{LATENCY}_count", system_device=name)
                and exp_file.exists()
                and exponential_points(exp_file, name)
            ),
            60,
            every=1,
        )
        # One fd, written to and closed only at the end: closing a device
        # opened for writing makes udev probe (read) it.
        fd = os.open(loop_dev, os.O_RDWR | os.O_DIRECT)
        try:
            fill(fd)
            fine0, log20 = settled(fine, name), settled(log2, name)
            exp0 = exponential_points(exp_file, name)[-1]
            misses0 = block_misses(telemetry)
            with block_trace(loop_dev) as trace:
                random_reads(fd)
                fine1, log21 = settled(fine, name), settled(log2, name)
                text = (trace / "trace").read_text()
            misses = block_misses(telemetry) - misses0
            exp1 = exponential_points(exp_file, name)[-1]
        finally:
            os.close(fd)
    finally:
        col.stop()

    assert_no_trace_lost(text)
    exact = traced_read_latencies(text)
    n = len(exact)
    assert n >= READS, n  # every read is one request (or more)
    estimates: dict[str, tuple[int, Callable[[int], float], float]] = {
        # what: (samples, the estimate of the sample of a rank, its bound)
        "scale 2 explicit": (
            int(fine1[-1][1] - fine0[-1][1]),
            lambda rank: percentile_from_buckets(fine0, fine1, rank),
            RATIO[2],
        ),
        "scale 2 exponential": (
            int(exp1["count"]) - int(exp0["count"]),
            lambda rank: exponential_percentile(exp0, exp1, rank),
            RATIO[2],
        ),
        "scale 0 (log2)": (
            int(log21[-1][1] - log20[-1][1]),
            lambda rank: percentile_from_buckets(log20, log21, rank),
            RATIO[0],
        ),
    }
    counts = {what: e[0] for what, e in estimates.items()}
    print(f"{n} traced reads on {name}; histogram counts {counts}; recursion misses {misses:.0f}")
    rows = []
    for what, (count, estimate, ratio) in estimates.items():
        # The histogram holds a subset of the traced requests: those whose
        # issue time the program found. Missing are the requests whose
        # tracepoint program the kernel skipped (recursion_misses: another
        # BPF program or a bpf() syscall on that CPU) and whose issue time
        # its LRU map evicted (an LRU hash can evict before it is full). So
        # the sample of rank r among `count` is one of the traced samples of
        # rank r .. r + (n - count). Never an extra one; few missing.
        missing = n - count
        assert 0 <= missing <= n // 20, (what, count, n, misses)
        for p in PERCENTILES:
            rank = math.ceil(p * count)
            lo, hi = exact[rank - 1], exact[rank - 1 + missing]
            est = estimate(rank)
            truth = exact[math.ceil(p * n) - 1]
            rows.append(
                f"p{p * 100:g} exact {truth / 1e3:.1f} µs, {what} {est / 1e3:.1f} µs "
                f"({(est - truth) / truth:+.1%})"
            )
            assert (lo - SLACK_NS) / ratio <= est <= (hi + SLACK_NS) * ratio, (rows[-1], lo, hi)
    print("\n".join(sorted(rows)))
