"""Memory and CPU of the sidecar and the collector with the chart's default
config: the numbers behind the chart's requests and limits (deploy/helm).

Starts the sidecar on a socket of its own and the collector with the collector
config of deploy/kubernetes/daemonset.yaml (the chart rendered with its
default values), adapted to run outside a pod as tests/test_configs.py does
(hostmetrics' root_path /, k8sattributesprocessor in passthrough: no API
server). Every second for --seconds it reads each process's VmRSS and its CPU
time (utime + stime of /proc/<pid>/stat, children included once reaped), then
prints a table: RSS median and maximum, VmHWM (peak RSS, BCC's compile at
start included), and CPU as % of one core over the window. Asserts nothing.

    .venv/bin/python bench/footprint.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
COLLECTOR = REPO / "build" / "otelcol-ebpf" / "otelcol-ebpf"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chart_config(sock: Path, port: int) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    [cm] = [d for d in docs if d and d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
    config: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    config["receivers"]["ebpf"]["endpoint"] = f"unix://{sock}"
    config["receivers"]["host_metrics"]["root_path"] = "/"
    config["processors"]["k8s_attributes"] = {"passthrough": True}
    config["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{port}"
    config["service"]["telemetry"] = {"metrics": {"level": "none"}}
    return config


def status(pid: int, key: str) -> float:
    """A kB field of /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14-17 of stat(5), here 11-14
    return sum(int(f) for f in fields[11:15]) / TICK


def wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sock, port = Path(tmp) / "sidecar.sock", free_port()
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(chart_config(sock, port)))
        log = (Path(tmp) / "log").open("wb")
        side = subprocess.Popen(
            [str(PYTHON), "-m", "ebpf_sidecar", "--listen", f"unix://{sock}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        col = None
        try:
            wait("the sidecar's socket", sock.exists, 60)
            col = subprocess.Popen(
                [str(COLLECTOR), "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
            )
            url = f"http://127.0.0.1:{port}/metrics"
            wait(
                "the first snapshot",
                lambda: b"ebpf_process_cpu_time" in urllib.request.urlopen(url, timeout=5).read(),
                60,
            )
            procs = {"sidecar": side.pid, "collector": col.pid}
            rss: dict[str, list[float]] = {name: [] for name in procs}
            cpu0 = {name: cpu_seconds(pid) for name, pid in procs.items()}
            t0 = time.monotonic()
            for _ in range(args.seconds):
                time.sleep(1)
                for name, pid in procs.items():
                    rss[name].append(status(pid, "VmRSS"))
            elapsed = time.monotonic() - t0
            print(f"chart default config, {args.seconds} s after the first snapshot")
            header = ("process", "RSS median", "RSS max", "VmHWM", "CPU % core")
            print("{:10} {:>11} {:>8} {:>7} {:>10}".format(*header))
            for name, pid in procs.items():
                cpu = (cpu_seconds(pid) - cpu0[name]) / elapsed * 100
                print(
                    f"{name:10} {statistics.median(rss[name]):9.0f}Mi {max(rss[name]):6.0f}Mi "
                    f"{status(pid, 'VmHWM'):5.0f}Mi {cpu:10.2f}"
                )
        finally:
            for p in (col, side):
                if p is not None:
                    p.terminate()
                    p.wait(30)
            log.close()


if __name__ == "__main__":
    main()
