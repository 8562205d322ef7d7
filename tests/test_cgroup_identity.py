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
import time
import uuid
from pathlib import Path

from conftest import free_port, pipeline_config, scrape, start_collector, start_sidecar, wait_for

METRIC = "ebpf_process_cpu_time_seconds_total"
BUSY = r"""
import ctypes, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
while True:
    pass
"""


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2" and left.split()[3] == "/":
            return Path(left.split()[4])
    raise AssertionError("no cgroup2 mount in /proc/self/mountinfo")


def _rmdir(d: Path) -> None:
    # a killed task leaves its cgroup a moment after it is reaped
    deadline = time.monotonic() + 10
    while d.exists():
        try:
            d.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_container_and_pod_identity_on_cpu_metrics(tmp_path: Path) -> None:
    pod_uid = str(uuid.uuid4())
    container_id = os.urandom(32).hex()
    root = cgroup2_mount()
    pod = f"kubepods-burstable-pod{pod_uid.replace('-', '_')}.slice"
    dirs = [root / "kubepods.slice", root / "kubepods.slice" / "kubepods-burstable.slice"]
    dirs.append(dirs[-1] / pod)
    dirs.append(dirs[-1] / f"cri-containerd-{container_id}.scope")
    created = []
    busy: subprocess.Popen[bytes] | None = None
    sock = tmp_path / "sidecar.sock"
    sidecar = collector = None
    comm = f"cg{os.getpid() % 100000}"
    try:
        for d in dirs:
            if not d.exists():
                d.mkdir()
                created.append(d)
        # The shell moves itself into the container's cgroup before it execs
        # the busy loop, so the process never runs anywhere else.
        busy = subprocess.Popen(
            [
                "sh",
                "-c",
                f'echo $$ > "{dirs[-1]}/cgroup.procs" && exec "{sys.executable}" -c "$0" "$1"',
                BUSY,
                comm,
            ]
        )
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
        own = [
            lab
            for n, lab, _ in scrape(port)
            if n == METRIC and lab.get("process_pid") == str(os.getpid())
        ]
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
        for d in reversed(created):
            _rmdir(d)
