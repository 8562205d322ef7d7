"""The chart's pod security, measured: the sidecar started with exactly the
capabilities deploy/kubernetes/daemonset.yaml (the chart rendered) gives it
as its bounding set and no_new_privs (allowPrivilegeEscalation: false), the
collector as the chart's non-root user and group with no capabilities at all,
and a socket folder handed over like the pod's emptyDir (mode 2777, group
fsGroup). The default programs' metrics must flow, and the sidecar must end
up holding BPF and PERFMON only.

Measured with this setup (README, "Deploy"): without CHOWN the sidecar cannot
give the socket's folder to the collector's group (EPERM), without FSETID the
kernel silently clears the folder's setgid bit and the socket gets group 0
(refused); without SETPCAP it runs but leaves its bounding set as it was."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import COLLECTOR, PYTHON, REPO, Process, free_port, scrape, wait_for

CAP_PERFMON, CAP_BPF = 38, 39


def rendered_pod() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    [ds] = [d for d in docs if d and d["kind"] == "DaemonSet"]
    return dict(ds["spec"]["template"]["spec"])


@pytest.fixture
def pod_dir() -> Iterator[Path]:
    """A folder the collector's user may traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="ebpf-pod-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_default_programs_run_with_the_charts_capabilities_only(pod_dir: Path) -> None:
    pod = rendered_pod()
    [sidecar] = pod["initContainers"]
    [collector] = pod["containers"]
    caps = sidecar["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sidecar["securityContext"]["privileged"] is False
    uid = collector["securityContext"]["runAsUser"]
    gid = collector["securityContext"]["runAsGroup"]
    fs_group = pod["securityContext"]["fsGroup"]
    socket_group = sidecar["args"][sidecar["args"].index("--socket-group") + 1]
    assert int(socket_group) == gid == fs_group

    # the emptyDir as Kubernetes hands it over with fsGroup
    folder = pod_dir / "ebpf-sidecar"
    folder.mkdir()
    shutil.chown(folder, group=fs_group)
    folder.chmod(0o2777)
    sock = folder / "sidecar.sock"
    bounding = "-all," + ",".join(f"+{c.lower()}" for c in caps["add"])
    side = Process(
        "sidecar",
        [
            *("setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs", "--"),
            *(str(PYTHON), "-m", "ebpf_sidecar", "--listen", f"unix://{sock}"),
            *("--socket-group", socket_group),
        ],
        pod_dir / "sidecar.log",
    )
    col: Process | None = None
    try:
        wait_for(
            "the sidecar's socket",
            lambda: sock.exists() or (not side.alive() and _raise(side.output())),
            60,
        )
        port = free_port()
        config = {
            "receivers": {
                "ebpf": {
                    "endpoint": f"unix://{sock}",
                    "collection_interval": "1s",
                    "programs": yaml.safe_load(
                        (REPO / "collector-config" / "default.yaml").read_text()
                    )["receivers"]["ebpf"]["programs"],
                }
            },
            "exporters": {"prometheus": {"endpoint": f"127.0.0.1:{port}"}},
            "service": {
                "pipelines": {"metrics": {"receivers": ["ebpf"], "exporters": ["prometheus"]}},
                "telemetry": {"metrics": {"level": "none"}},
            },
        }
        cfg = pod_dir / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cfg.chmod(0o644)
        col = Process(
            "collector",
            [
                *("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"),
                *("--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"),
                *(str(COLLECTOR), "--config", str(cfg)),
            ],
            pod_dir / "collector.log",
        )
        wait_for(
            "the default programs' metrics through the non-root collector",
            lambda: (
                any(n == "ebpf_process_cpu_time_seconds_total" for n, _, _ in scrape(port))
                or (col is not None and not col.alive() and _raise(col.output()))
            ),
            60,
        )
        status = Path(f"/proc/{side.proc.pid}/status").read_text().splitlines()
        sets = {
            k: int(v, 16)
            for k, _, v in (ln.partition(":\t") for ln in status)
            if k.startswith("Cap")
        }
        held = (1 << CAP_BPF) | (1 << CAP_PERFMON)
        assert sets["CapEff"] == sets["CapPrm"] == sets["CapBnd"] == held, sets
        print(f"\nsidecar bounding set at start: {caps['add']}; held once started: BPF, PERFMON")
    finally:
        if col:
            col.stop()
        side.stop()


def _raise(msg: str) -> bool:
    raise AssertionError(msg)
