"""container.id and k8s.pod.uid from the cgroup, end to end.

A cgroup v2 directory shaped as the kubelet (systemd driver) and containerd
make it is created under the cgroup2 mount, wherever that is (on a hybrid
host /sys/fs/cgroup/unified), and a busy process starts inside it. Its cpu
metrics must carry the container id (64 hex) and the pod uid (with dashes)
as resource attributes; the sidecar derives both from the cgroup id the BPF
program stores with each process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import (
    KubeletContainer,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    start_sidecar,
    wait_for,
)

METRIC = "ebpf_process_cpu_time_seconds_total"
BUSY = r"""
import ctypes, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
while True:
    pass
"""


def test_container_and_pod_identity_on_cpu_metrics(
    tmp_path: Path, kubelet_containers: Callable[[], KubeletContainer]
) -> None:
    container = kubelet_containers()
    pod_uid, container_id = container.pod_uid, container.container_id
    busy: subprocess.Popen[str] | None = None
    sock = tmp_path / "sidecar.sock"
    sidecar = collector = None
    comm = f"cg{os.getpid() % 100000}"
    try:
        # The shell moves itself into the container's cgroup before it execs
        # the busy loop, so the process never runs anywhere else.
        busy = container.run([sys.executable, "-c", BUSY, comm])
        wait_for(
            "busy process in the cgroup",
            lambda: (
                f"cri-containerd-{container_id}.scope"
                in Path(f"/proc/{busy.pid}/cgroup").read_text()
                and Path(f"/proc/{busy.pid}/comm").read_text().strip() == comm
            ),
            10,
        )
        sidecar = start_sidecar(sock, tmp_path / "sidecar.log")
        port = free_port()
        collector = start_collector(
            pipeline_config(
                {
                    "endpoint": f"unix://{sock}",
                    "collection_interval": "1s",
                    "programs": [{"name": "cpu"}],
                },
                port,
            ),
            tmp_path,
        )

        def labels() -> list[dict[str, str]] | None:
            found = [
                lab
                for n, lab, v in scrape(port)
                if n == METRIC
                and v > 0
                and lab.get("process_pid") == str(busy.pid)
                and lab.get("process_executable_name") == comm
            ]
            return found or None

        found = wait_for(f"{METRIC} of pid {busy.pid}\n{collector.output()}", labels, 60)
        assert [(lab.get("container_id"), lab.get("k8s_pod_uid")) for lab in found] == [
            (container_id, pod_uid)
        ]
        # the same metric of a process outside any container has neither
        # (an empty value, not some other container's id)
        # (its series appears once it has switched out after the program attached)
        own = wait_for(
            f"{METRIC} of the test's own pid {os.getpid()}",
            lambda: [
                lab
                for n, lab, _ in scrape(port)
                if n == METRIC and lab.get("process_pid") == str(os.getpid())
            ],
            30,
        )
        assert own and all(
            lab.get("container_id", "") == "" and lab.get("k8s_pod_uid", "") == "" for lab in own
        )
    finally:
        if collector is not None:
            collector.stop()
        if sidecar is not None:
            sidecar.stop()
        if busy is not None:
            busy.kill()
            busy.wait()
