from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders.pid_cgroup import unified_path

HYBRID = """\
9:name=systemd:/
4:memory:/process_api/c5fe
1:cpu:/
0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope
"""


def test_the_0_line_is_the_unified_path() -> None:
    assert unified_path(HYBRID) == "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope"
    assert unified_path("0::/\n") == "/"
    assert unified_path("4:memory:/x\n") is None


def test_own_process_matches_proc() -> None:
    line = next(
        x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::")
    )
    assert decoders.apply(["pid_cgroup"], [os.getpid()]) == [line[3:]]


def test_exited_process_is_empty() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert decoders.apply(["pid_cgroup"], [p.pid, 0, None]) == ["", "", ""]
