"""The shipped dashboards and alert rules, proven against a real Prometheus.

Debian's Prometheus (own port, storage in tmp, 1 s scrape and evaluation
intervals in this test's config only) scrapes the real ocb-built collector
(the ebpf receiver on its own sidecar, hostmetrics, and the collector's own
telemetry) and loads deploy/prometheus/ebpf-rules.yaml unchanged. Workloads
exercise every panel: CPU burners, O_DIRECT I/O on a loop device and a lossy
TCP transfer inside kubelet-shaped containers (so the pod panels have
container.id / k8s.pod.uid series), an OOM kill, and process churn that fills
the process program's map and overflows a metric's cardinality limit. Then
every panel query of deploy/grafana/*.json and every alert expression runs
through Prometheus's HTTP API: each panel query must return series, and the
retransmit and OOM alerts must reach pending or firing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_accuracy_block import attached_loop_device, direct_io
from test_accuracy_oom import oom_victim
from test_accuracy_tcp import ADDR, REFUSED, netns, start_lossy_transfer

from conftest import (
    BUSY_WORKER,
    REPO,
    KubeletContainer,
    Process,
    busy_round,
    free_port,
    hear,
    start_collector,
    start_sidecar,
    wait_for,
    wait_started,
)

PROMETHEUS = Path("/usr/bin/prometheus")
RULES = REPO / "deploy" / "prometheus" / "ebpf-rules.yaml"
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
OOM_VICTIM = "dash-oom-victim"
CHURN = 200  # distinct executable names: more than the process map's 128 entries
EXITS_LIMIT = 50  # ebpf.process.exits' cardinality_limit here (by exiting name): churn overflows it
# Alerts each workload must drive to pending or firing.
MUST_FIRE = {"EbpfTcpRetransmitsHigh", "EbpfOomKill", "EbpfMapFull", "EbpfSeriesOverflow"}


class Prometheus:
    """Debian's Prometheus on a port of its own, with its storage in ``tmp``."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = {
            # Short intervals here only, not in the shipped rules.
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "otelcol-ebpf", "static_configs": [{"targets": targets}]}
            ],
        }
        path = tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.proc = Process(
            "prometheus",
            [
                str(PROMETHEUS),
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            tmp / "prometheus.log",
        )
        wait_for(
            f"Prometheus ready on :{self.port}",
            lambda: self.get("/-/ready", raw=True) or (not self.proc.alive() and _died(self)),
            30,
        )

    def get(self, path: str, params: dict[str, str] | None = None, raw: bool = False) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
        if raw:
            return body
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", {"query": expr})
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def alert_states(self) -> dict[str, str]:
        """Each alerting rule's state: inactive, pending or firing."""
        groups = self.get("/api/v1/rules", {"type": "alert"})["groups"]
        return {r["name"]: r["state"] for g in groups for r in g["rules"]}

    def up(self) -> list[str]:
        return [s["metric"]["instance"] for s in self.query("up == 1")]


def _died(p: Prometheus) -> bool:
    raise AssertionError(f"prometheus exited:\n{p.proc.output()}")


@dataclass
class PanelQuery:
    dashboard: str
    panel_id: int
    title: str
    ref: str
    expr: str


def panel_queries() -> list[PanelQuery]:
    found = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p.get("targets", []):
                found.append(PanelQuery(d["uid"], p["id"], p["title"], t["refId"], t["expr"]))
    return found


def resolve(expr: str, window: str) -> str:
    """A panel query as Grafana would send it with every variable at All (.*)."""
    expr = expr.replace("$__rate_interval", window)
    return re.sub(r"\$\{(node|namespace|pod|container)\}", ".*", expr)


# --- workloads -------------------------------------------------------------------


def burn_cpu(container: KubeletContainer, seconds: float, n: int = 3) -> None:
    """``n`` busy processes on 2 cores, in ``container``: on-CPU time, slices,
    involuntary switches and run-queue waits of that container."""
    procs = [
        container.run(
            [sys.executable, "-c", BUSY_WORKER, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(n)
    ]
    try:
        hear(procs, "ready")
        busy_round(procs)
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(30)


IN_CONTAINER_IO = r"""
import sys
sys.path.insert(0, sys.argv[1])
from test_accuracy_block import direct_io
for _ in range(int(sys.argv[3])):
    direct_io(sys.argv[2])
print("ok")
"""


def disk_io(container: KubeletContainer, tmp: Path) -> None:
    """O_DIRECT writes and reads on a loop device of our own, from ``container``."""
    with attached_loop_device(tmp / "disk.img") as dev:
        p = container.run(
            [sys.executable, "-c", IN_CONTAINER_IO, str(Path(__file__).parent), dev, "5"],
            stdout=subprocess.PIPE,
        )
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", out
    # the loop device on this side too, so the node panels see both directions
    with attached_loop_device(tmp / "disk2.img") as dev:
        os.close(direct_io(dev)[0])


def lossy_tcp(container: KubeletContainer, rounds: int = 1) -> None:
    """The accuracy test's lossy transfer (nftables drops 15 % inside a netns),
    from ``container``: retransmits, RTT samples and, from refused connects,
    resets on that container's series."""
    with netns() as ns:
        for _ in range(rounds):
            p = start_lossy_transfer(container, ns, ADDR, 3000)
            try:
                assert p.stdin and p.stdout
                int(p.stdout.readline())  # connected before the loss
                ns.loss(15)
                p.stdin.write("go\n")
                p.stdin.flush()
                assert p.stdout.readline().strip() == "acked"
                ns.no_loss()
                p.stdin.write("close\n")
                p.stdin.flush()
                assert int(p.stdout.readline()) == 3000 * 100
                assert p.wait(30) == 0
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        r = container.run(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", REFUSED, ADDR, "50"],
            stdout=subprocess.PIPE,
        )
        out, _ = r.communicate(timeout=60)
        assert int(out) == 50


def oom_kill() -> None:
    """A real OOM kill in a memory cgroup of our own (test_accuracy_oom's victim)."""
    with oom_victim(OOM_VICTIM) as kill:
        kill()


def churn(tmp: Path) -> None:
    """CHURN short-lived processes, each under an executable name of its own."""
    folder = tmp / "churn"
    folder.mkdir()
    for i in range(CHURN):
        exe = folder / f"churn-{i}"
        exe.symlink_to("/bin/true")
        subprocess.run([str(exe)], check=True)


# --- the stack ---------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: Prometheus
    started: float


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards")
    sock = tmp / "sidecar.sock"
    sidecar = start_sidecar(sock, tmp / "sidecar.log")
    exporter, telemetry = free_port(), free_port()
    config = {
        "receivers": {
            "ebpf": {
                "endpoint": f"unix://{sock}",
                "collection_interval": "1s",
                "programs": [
                    {"name": "cpu"},
                    {"name": "block"},
                    {"name": "tcp", "parameters": {"rtt": "true"}},
                    {"name": "faults"},
                    # the smallest map: churn fills it (dropped updates, full map)
                    {
                        "name": "process",
                        "parameters": {"max_entries": "128"},
                        "metrics": {"ebpf.process.exits": {"cardinality_limit": EXITS_LIMIT}},
                    },
                    {"name": "oom"},
                    {"name": "runqlat", "parameters": {"per_cgroup": "true"}},
                ],
            },
            "host_metrics": {"collection_interval": "1s", "scrapers": {"cpu": {}}},
        },
        "exporters": {
            "prometheus": {
                "endpoint": f"127.0.0.1:{exporter}",
                "resource_constant_labels": {"included": ["*"]},
            }
        },
        "service": {
            "pipelines": {
                "metrics": {"receivers": ["ebpf", "host_metrics"], "exporters": ["prometheus"]}
            },
            "telemetry": {
                "metrics": {
                    "level": "normal",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {"prometheus": {"host": "127.0.0.1", "port": telemetry}}
                            }
                        }
                    ],
                }
            },
        },
    }
    col: Process | None = None
    prom: Prometheus | None = None
    try:
        col = start_collector(config, tmp)
        wait_started(col, "the dashboards' collector")
        prom = Prometheus(tmp, [f"127.0.0.1:{exporter}", f"127.0.0.1:{telemetry}"])
        wait_for("both targets up", lambda: len(prom.up()) == 2 if prom else False, 30)
        yield Stack(prom, time.monotonic())
        assert col.alive(), col.output()
    finally:
        if prom:
            prom.proc.stop()
        if col:
            col.stop()
        sidecar.stop()


@pytest.fixture(scope="module")
def exercised(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, dict[str, set[str]]]]:
    """The stack after every workload ran; the states each alert went through."""
    tmp = tmp_path_factory.mktemp("workloads")
    made: list[KubeletContainer] = []

    def container() -> KubeletContainer:
        made.append(KubeletContainer())
        return made[-1]

    seen: dict[str, set[str]] = {}

    def record() -> dict[str, str]:
        states = stack.prometheus.alert_states()
        for name, state in states.items():
            seen.setdefault(name, set()).add(state)
        return states

    try:
        churn(tmp)
        burn_cpu(container(), 5)
        disk_io(container(), tmp)
        oom_kill()
        net = container()
        lossy_tcp(net)
        # The retransmit alert wants > 1 segment/s over 5 minutes from one pod
        # (over 300 in the window): more lossy rounds until Prometheus has it
        # pending (bounded).
        for _ in range(6):
            if reached(seen, "EbpfTcpRetransmitsHigh"):
                break
            with contextlib.suppress(AssertionError):
                wait_for(
                    "the retransmit alert",
                    lambda: record().get("EbpfTcpRetransmitsHigh") in ("pending", "firing"),
                    5,
                )
                continue
            lossy_tcp(net)
        try:
            wait_for(
                f"{sorted(MUST_FIRE)} pending or firing",
                lambda: record() and all(reached(seen, a) for a in MUST_FIRE),
                60,
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\nstates seen: {seen}\n{diagnose(stack)}") from None
        record()
        yield stack, seen
    finally:
        for c in reversed(made):
            c.remove()


def reached(seen: dict[str, set[str]], alert: str) -> bool:
    return bool({"pending", "firing"} & seen.get(alert, set()))


def diagnose(stack: Stack) -> str:
    """What the alerts' inputs look like, for a failure message."""
    lines = []
    for expr in (
        'sum by (k8s_pod_uid) (ebpf_tcp_retransmits_total{k8s_pod_uid!=""})',
        "ebpf_oom_kills_total",
        "otelcol_receiver_ebpf_dropped_updates",
        "otelcol_receiver_ebpf_full_map_snapshots",
        "otelcol_receiver_ebpf_overflow_metric_points",
    ):
        got = [(s["metric"], s["value"][1]) for s in stack.prometheus.query(expr)]
        lines.append(f"{expr}: {got}")
    return "\n".join(lines)


def window(stack: Stack) -> str:
    """A rate window reaching back over every workload."""
    return f"{math.ceil(time.monotonic() - stack.started) + 30}s"


# Panels whose query may legitimately come back empty here; none so far.
EXEMPT: dict[tuple[str, str], str] = {}


def test_every_panel_query_returns_data(exercised: tuple[Stack, dict[str, set[str]]]) -> None:
    stack, _ = exercised
    queries = panel_queries()
    assert len(queries) >= 30, f"only {len(queries)} panel queries in {DASHBOARDS}"

    def evaluate() -> tuple[str, list[tuple[str, int, str, str, int, int]], list[str]]:
        rate = window(stack)
        rows, empty = [], []
        for q in queries:
            result = stack.prometheus.query(resolve(q.expr, rate))
            finite = sum(1 for s in result if math.isfinite(float(s["value"][1])))
            rows.append((q.dashboard, q.panel_id, q.title, q.ref, len(result), finite))
            if not result and (q.dashboard, q.title) not in EXEMPT:
                empty.append(f"{q.dashboard} #{q.panel_id} {q.title} [{q.ref}]: {q.expr}")
        return rate, rows, empty

    # A rate() needs two samples of a series in its window: a series the last
    # workload made (the refused connects' resets) has them a scrape later.
    rate, rows, empty = evaluate()
    deadline = time.monotonic() + 30
    while empty and time.monotonic() < deadline:
        time.sleep(2)
        rate, rows, empty = evaluate()
    print(f"\npanel queries (rate window {rate}): dashboard, panel, query, series, finite")
    for d, pid, title, ref, n, finite in rows:
        print(f"  {d:9} #{pid:<3} {title[:48]:48} {ref}  {n:5} {finite:5}")
    if empty:  # what Prometheus holds of the metrics those queries read
        names = sorted({m for e in empty for m in re.findall(r"\b(?:ebpf|otelcol)_\w+", e)})
        held = {n: stack.prometheus.query(n) for n in names}
        empty.append(f"their metrics now: {held}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)


def test_node_variable_lists_the_collector(exercised: tuple[Stack, dict[str, set[str]]]) -> None:
    """The node dashboard's variable query (label_values of instance), as Grafana
    runs it, finds the scraped collector; its regex keeps the host part."""
    stack, _ = exercised
    node = json.loads((REPO / "deploy" / "grafana" / "ebpf-node.json").read_text())
    [var] = [v for v in node["templating"]["list"] if v["name"] == "node"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"]).groups()  # type: ignore[union-attr]
    values = stack.prometheus.get(f"/api/v1/label/{label}/values", {"match[]": metric})
    hosts = {re.sub(var["regex"].strip("/"), r"\1", v) for v in values}
    assert hosts == {"127.0.0.1"}, (values, hosts)


def test_alert_expressions_and_states(exercised: tuple[Stack, dict[str, set[str]]]) -> None:
    stack, seen = exercised
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    print("\nalerts: name, series its expression returns now, states reached")
    for name, expr in alerts.items():
        n = len(stack.prometheus.query(expr))
        print(f"  {name:26} {n:3}  {','.join(sorted(seen.get(name, {'inactive'})))}")
    for name in MUST_FIRE:
        assert reached(seen, name), (name, seen.get(name))
    # Healthy pipeline: the down and no-snapshot alerts stay quiet.
    for name in ("EbpfCollectorDown", "EbpfNoSnapshots"):
        assert seen.get(name, {"inactive"}) == {"inactive"}, (name, seen[name])
