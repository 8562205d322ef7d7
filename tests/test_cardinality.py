"""A low cardinality_limit holds, the overflow series is present, and the
receiver counts what it folded in its own telemetry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import (
    Process,
    expose_self_telemetry,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    value,
    wait_for,
)

LIMIT = 5
PROCESSES = 20

CALLER = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
for _ in range(100):
    os.getppid()
"""


def test_limit_holds_and_overflow_is_visible(sidecar: tuple[Process, Path], tmp_path: Path) -> None:
    _, sock = sidecar
    port, telemetry_port = free_port(), free_port()
    cfg = pipeline_config(
        {
            "endpoint": f"unix://{sock}",
            "collection_interval": "1s",
            "programs": [
                {
                    "name": "syscalls",
                    "parameters": {"count_errors": "false"},
                    "metrics": {"ebpf.syscalls": {"cardinality_limit": LIMIT}},
                }
            ],
        },
        port,
    )
    expose_self_telemetry(cfg, telemetry_port)
    col = start_collector(cfg, tmp_path)
    try:
        # Every (comm, syscall) pair on the host is a series: far more than 5.
        for i in range(PROCESSES):
            subprocess.run([sys.executable, "-c", CALLER, f"e2e-card-{i}"], check=True)

        def overflowed() -> float | None:
            return value(scrape(port), "ebpf_syscalls_total", otel_metric_overflow="true")

        folded = wait_for("the overflow series", overflowed, 30)
        samples = scrape(port)
        admitted = [
            lab
            for n, lab, _ in samples
            if n == "ebpf_syscalls_total" and "otel_metric_overflow" not in lab
        ]
        assert len(admitted) == LIMIT, admitted
        overflow = [
            lab
            for n, lab, _ in samples
            if n == "ebpf_syscalls_total" and "otel_metric_overflow" in lab
        ]
        assert len(overflow) == 1
        # the overflow series carries only the overflow marker
        assert "syscall_name" not in overflow[0] and "process_executable_name" not in overflow[0]
        assert folded > 0
        # ... and the receiver counts the folded points in its own telemetry
        count = wait_for(
            "the overflow self-metric",
            lambda: value(
                scrape(telemetry_port),
                "otelcol_receiver_ebpf_overflow_metric_points_total",
                metric="ebpf.syscalls",
            ),
            15,
        )
        assert count > 0
        assert "cardinality" in col.output().lower()  # and logs that it started folding
    finally:
        col.stop()
