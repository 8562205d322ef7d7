"""A config that does not match the catalog stops the collector at start,
whichever of the sidecar and the collector starts first."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from conftest import DEFAULT_SOCKET, REPO, Process, start_collector, start_sidecar

MISSING_MAP = "no_such_map_xyz"
MAKE_ERROR = re.compile(r"^make(\[\d+\])?: \*\*\* ")
# Among the valid maps the message lists, two of the default set's.
VALID_MAPS = ("cpu/process_cpu", "block/disk_latency")


def missing_map_config(endpoint: str) -> dict[str, Any]:
    return {
        "receivers": {
            "ebpf": {
                "endpoint": endpoint,
                "collection_interval": "2s",
                "metrics": [{"name": "my.metric", "map_name": MISSING_MAP, "type": "sum"}],
            }
        },
        "exporters": {"debug": {}},
        "service": {
            "pipelines": {"metrics": {"receivers": ["ebpf"], "exporters": ["debug"]}},
            "telemetry": {"metrics": {"level": "none"}},
        },
    }


def _assert_names_the_map(text: str) -> None:
    assert f'no catalog program has a map "{MISSING_MAP}"' in text, text
    for valid in VALID_MAPS:
        assert valid in text, text


def test_make_run_exits_non_zero_naming_the_missing_map(tmp_path: Path) -> None:
    assert not DEFAULT_SOCKET.exists(), (
        f"{DEFAULT_SOCKET} exists: is `make run` running? (it uses the default socket)"
    )
    config = tmp_path / "missing-map.yaml"
    config.write_text(yaml.safe_dump(missing_map_config(f"unix://{DEFAULT_SOCKET}")))
    start = time.monotonic()
    run = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env={**os.environ, "CONFIG": str(config)},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGINT)
        output, _ = run.communicate(timeout=30)
        raise AssertionError(f"make run was still running after 60 s:\n{output}") from None
    print(f"make run exited with {run.returncode} after {time.monotonic() - start:.1f} s")
    assert run.returncode != 0, output
    # The collector's error is the job's last word; only make's own
    # "make: *** [Makefile:...] Error 1" line (make[1] under make test) may follow it.
    lines = [ln for ln in output.splitlines() if ln.strip() and not MAKE_ERROR.match(ln)]
    assert lines[-1].startswith("Error: "), output
    _assert_names_the_map(lines[-1])
    assert not DEFAULT_SOCKET.exists(), "the sidecar did not clean up its socket"


def test_collector_started_before_the_sidecar_stops_naming_the_missing_map(
    tmp_path: Path,
) -> None:
    """As in a pod whose containers start together: the receiver's Start waits
    for the sidecar's first answer, then rejects the config."""
    sock = tmp_path / "sidecar.sock"
    collector = start_collector(missing_map_config(f"unix://{sock}"), tmp_path)
    sidecar: Process | None = None
    try:
        time.sleep(3)  # the collector is in Start, waiting for a sidecar
        assert collector.alive(), collector.output()
        sidecar = start_sidecar(sock, tmp_path / "sidecar.log")
        collector.proc.wait(60)
        assert collector.proc.returncode != 0, collector.output()
        _assert_names_the_map(collector.output())
    finally:
        collector.stop()
        if sidecar is not None:
            sidecar.stop()
