"""An own program, end to end: examples/programs/exec_count run with
``--programs-dir``, referenced by name in the collector's YAML.

A copy of /bin/true under a name of its own is executed a known number of
times; every successful execve() fires sched:sched_process_exec exactly once,
so the exported count must equal it exactly (tolerance 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import (
    REPO,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    start_sidecar,
    value,
    wait_for,
)

EXAMPLES = REPO / "examples" / "programs"
METRIC = "ebpf_exec_count_total"
EXECS = 37


def test_exec_count_counts_every_exec_exactly(tmp_path: Path) -> None:
    sock = tmp_path / "sidecar.sock"
    sidecar = start_sidecar(sock, tmp_path / "sidecar.log", "--programs-dir", str(EXAMPLES))
    port = free_port()
    collector = start_collector(
        pipeline_config(
            {
                "endpoint": f"unix://{sock}",
                "collection_interval": "1s",
                "programs": [{"name": "exec_count", "parameters": {"max_entries": "1024"}}],
            },
            port,
        ),
        tmp_path,
    )
    name = f"own{os.getpid() % 100000}x"  # a comm nothing else execs (≤ 15 bytes)
    binary = tmp_path / name
    shutil.copy("/bin/true", binary)
    try:
        # the program is attached once its metric (of any exec) shows up
        wait_for(
            f"{METRIC} from the collector\n{collector.output()}",
            lambda: (
                value(scrape(port), METRIC) is not None
                or (subprocess.run(["/bin/true"], check=True) and None)
            ),
            60,
        )
        for _ in range(EXECS):
            subprocess.run([str(binary)], check=True)
        got = wait_for(
            f"{EXECS} execs of {name}",
            lambda: (
                (v := value(scrape(port), METRIC, process_executable_name=name)) is not None
                and v >= EXECS
                and v
            ),
            30,
        )
        assert got == EXECS
        samples = [
            (lab, v)
            for n, lab, v in scrape(port)
            if n == METRIC and lab.get("process_executable_name") == name
        ]
        # one series: root's execs, outside any container
        assert [(lab["process_user_id"], lab.get("container_id", "")) for lab, _ in samples] == [
            ("0", "")
        ]
    finally:
        collector.stop()
        sidecar.stop()
    assert "exec_count" in sidecar.output()
