"""Every collector config we ship passes the real collector's validation, and
a bad one stops the collector at start with a message naming the field."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    COLLECTOR,
    REPO,
    Process,
    collector_flags,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    wait_for,
    wait_started,
)

SHIPPED = sorted((REPO / "collector-config").rglob("*.yaml"))
SHIPPED = [p for p in SHIPPED if p.name != "builder-config.yaml"]


def daemonset_config(tmp_path: Path) -> Path:
    """The collector config of the rendered chart, as it runs here: outside a
    pod the node's root is / (not /hostfs) and there is no API server for
    k8sattributesprocessor to watch (passthrough: it only passes the pod IP)."""
    docs = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    [cm] = [d for d in docs if d and d.get("kind") == "ConfigMap" and "config.yaml" in d["data"]]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["receivers"]["host_metrics"]["root_path"] == "/hostfs"
    config["receivers"]["host_metrics"]["root_path"] = "/"
    config["processors"]["k8s_attributes"] = {"passthrough": True}
    path = tmp_path / "daemonset-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_validate(config: Path) -> None:
    r = subprocess.run(
        [str(COLLECTOR), "validate", "--config", str(config), *collector_flags(config)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_daemonset_config_validates(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(COLLECTOR), "validate", "--config", str(daemonset_config(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


LOCAL_BIND = re.compile(r"^(0\.0\.0\.0|127\.0\.0\.1|localhost)?:\d+$")


def _point_at_test_ports(node: Any) -> None:
    """Every listening endpoint of ``node`` moves to a free loopback port."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "endpoint" and isinstance(child, str) and LOCAL_BIND.match(child):
                node[key] = f"127.0.0.1:{free_port()}"
            else:
                _point_at_test_ports(child)
    elif isinstance(node, list):
        for child in node:
            _point_at_test_ports(child)


@pytest.mark.parametrize(
    "source",
    [*SHIPPED, "deploy/kubernetes/daemonset.yaml"],
    ids=lambda p: str(p.relative_to(REPO)) if isinstance(p, Path) else p,
)
def test_shipped_configs_start_against_the_sidecar(
    source: Path | str, sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    """Each shipped config's ebpf receivers resolve against the real catalog:
    the collector starts, and a mismatch would stop it at start."""
    _, sock = sidecar
    path = daemonset_config(tmp_path) if isinstance(source, str) else source
    cfg = yaml.safe_load(path.read_text())
    ebpf = [name for name in cfg["receivers"] if name == "ebpf" or name.startswith("ebpf/")]
    assert ebpf, f"{path} configures no ebpf receiver"
    _point_at_test_ports(cfg)
    for name in ebpf:
        cfg["receivers"][name]["endpoint"] = f"unix://{sock}"
    cfg["service"]["telemetry"] = {"metrics": {"level": "none"}}
    col = start_collector(cfg, tmp_path)
    try:
        wait_started(col, str(path))
        assert col.output().count("Connected to the eBPF sidecar") >= len(ebpf), col.output()
    finally:
        col.stop()


def test_structural_errors_name_the_field_and_the_fix(tmp_path: Path) -> None:
    bad = pipeline_config(
        {
            "collection_interval": "10ms",
            "metrics": [{"name": "x", "map_name": "cpu_usage", "type": "histo"}],
        },
        free_port(),
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    r = subprocess.run(
        [str(COLLECTOR), "validate", "--config", str(path)], capture_output=True, text=True
    )
    assert r.returncode != 0
    assert "collection_interval: 10ms is below the minimum of 100ms; set it to 100ms" in r.stderr
    assert 'metrics[0].type: "histo" is not one of sum, gauge, histogram' in r.stderr


def test_catalog_errors_stop_the_collector_at_start(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    """Errors only the sidecar's catalog can reveal stop the collector at start."""
    _, sock = sidecar
    cfg = pipeline_config(
        {
            "endpoint": f"unix://{sock}",
            "programs": [{"name": "syscalls", "parameters": {"max_entries": "7"}}],
            "metrics": [
                {"name": "ebpf.x", "map_name": "no_such_map", "type": "sum"},
                {"name": "ebpf.y", "map_name": "cpu_usage", "type": "sum"},
            ],
        },
        free_port(),
    )
    col = start_collector(cfg, tmp_path)
    assert col.proc.wait(30) != 0, "the collector kept running with a bad config"
    out = col.output()
    assert 'metrics[0].map_name: no catalog program has a map "no_such_map"; valid maps' in out
    assert "cpu/cpu_usage" in out  # the valid names are listed
    assert 'metrics[1].type: cpu/cpu_usage is a histogram map, so "sum" is not possible' in out
    assert "programs[0].parameters.max_entries: 7 is out of range; use 128..65536" in out


def test_full_example_runs_against_the_sidecar(
    sidecar: tuple[Process, Path], tmp_path: Path
) -> None:
    """collector-config/examples/full.yaml, pointed at a test sidecar and port."""
    _, sock = sidecar
    cfg = yaml.safe_load((REPO / "collector-config" / "examples" / "full.yaml").read_text())
    port = free_port()
    cfg["receivers"]["ebpf"]["endpoint"] = f"unix://{sock}"
    cfg["receivers"]["ebpf"]["collection_interval"] = "1s"
    cfg["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{port}"
    cfg["service"]["telemetry"] = {"metrics": {"level": "none"}}
    col = start_collector(cfg, tmp_path)
    try:

        def names() -> set[str] | None:
            got = {n for n, _, _ in scrape(port)}
            want = {
                "ebpf_syscalls_total",
                "ebpf_process_context_switches_total",
                "ebpf_disk_io_bytes_total",
                "ebpf_tcp_rtt_seconds_count",
            }
            return got if want <= got else None

        got = wait_for("every metric of the full example", names, 30)
        # per_cpu: the disk bytes carry the CPU; context switches their type
        samples = scrape(port)
        assert all(
            "cpu_logical_number" in lab for n, lab, _ in samples if n == "ebpf_disk_io_bytes_total"
        )
        assert {
            lab["process_context_switch_type"]
            for n, lab, _ in samples
            if n == "ebpf_process_context_switches_total"
        } == {"voluntary", "involuntary"}
        assert got
        assert col.alive(), col.output()
    finally:
        col.stop()
