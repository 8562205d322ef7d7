"""Grafana dashboards of the ebpf receiver, as code (Grafana's Foundation SDK).

    python deploy/grafana/generate.py [OUT_DIR]   (what `make dashboards` runs)

writes ebpf-node.json and ebpf-pod.json (default: next to this file). Every
query uses the names the collector's Prometheus exporter gives this project's
metrics (`ebpf.process.cpu.time` in s -> `ebpf_process_cpu_time_seconds_total`,
resource attributes as labels through `resource_constant_labels`, histograms
in the classic `_bucket` form) and the collector's own telemetry
(`otelcol_receiver_ebpf_*`). tests/test_dashboards.py runs every query of the
generated files against a real Prometheus scraping the real collector.

Template variables: the node dashboard's `node` is the scrape target's host
(the collector pod's IP in a cluster: its exporter and its own telemetry share
it); the pod dashboard's `namespace` / `pod` / `container` are the labels
k8sattributesprocessor adds from the receiver's `k8s.pod.uid` / `container.id`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


@dataclass
class Query:
    expr: str
    legend: str = ""
    heatmap: bool = False


@dataclass
class Panel:
    title: str
    description: str
    queries: list[Query]
    unit: str = "short"
    kind: str = "timeseries"  # or "heatmap"
    width: int = 12
    id: int = 0  # set in order; alert runbooks link to /d/<uid>?viewPanel=<id>


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def rate(metric: str, sel: str) -> str:
    return f"rate({metric}{{{sel}}}[{RATE}])"


def sum_rate(by: str, metric: str, sel: str) -> str:
    return f"sum by ({by}) ({rate(metric, sel)})"


def p99(metric: str, sel: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile(0.99, sum by ({group}) ({rate(metric + '_bucket', sel)}))"


def heat(metric: str, sel: str) -> Query:
    return Query(f"sum by (le) ({rate(metric + '_bucket', sel)})", "{{le}}", heatmap=True)


# --- the node dashboard --------------------------------------------------------

N = 'instance=~"${node}(:[0-9]+)?"'


def node_rows() -> list[Row]:
    return [
        Row(
            "CPU",
            [
                Panel(
                    "On-CPU time by process (top 10)",
                    "CPU seconds per second (cores) per executable name, from the cpu program.",
                    [
                        Query(
                            "topk(10, sum by (process_executable_name) "
                            f"({rate('ebpf_process_cpu_time_seconds_total', N)}))",
                            "{{process_executable_name}}",
                        )
                    ],
                    unit="none",
                ),
                Panel(
                    "On-CPU time by container (top 10)",
                    "CPU seconds per second per container (container.id, k8s.pod.uid from the "
                    "cgroup; pod names with k8sattributesprocessor).",
                    [
                        Query(
                            "topk(10, "
                            + sum_rate(
                                "container_id, k8s_pod_uid, k8s_pod_name",
                                "ebpf_process_cpu_time_seconds_total",
                                N + ', container_id!=""',
                            )
                            + ")",
                            "{{k8s_pod_name}} {{container_id}}",
                        )
                    ],
                    unit="none",
                ),
                Panel(
                    "On-CPU slice duration (heatmap)",
                    "How long a task runs on a CPU before it is switched out (cpu program).",
                    [heat("ebpf_cpu_slice_duration_seconds", N)],
                    unit="s",
                    kind="heatmap",
                ),
                Panel(
                    "CPU steal (hostmetrics)",
                    "Time the hypervisor ran someone else while this node wanted a CPU: waiting "
                    "for a CPU seen from outside the node (hostmetrics receiver, "
                    "system.cpu.time state=steal). Compare with run-queue latency, the wait "
                    "inside it.",
                    [
                        Query(
                            "sum by (instance) (rate(system_cpu_time_seconds_total"
                            f'{{{N}, state="steal"}}[{RATE}]))',
                            "steal {{instance}}",
                        )
                    ],
                    unit="none",
                ),
                Panel(
                    "Run-queue latency (heatmap)",
                    "Time runnable tasks wait for a CPU (runqlat program, opt-in).",
                    [heat("ebpf_sched_runqueue_latency_seconds", N)],
                    unit="s",
                    kind="heatmap",
                ),
                Panel(
                    "Run-queue latency p99",
                    "99th percentile of the wait for a CPU (runqlat program); next to steal.",
                    [Query(p99("ebpf_sched_runqueue_latency_seconds", N), "p99")],
                    unit="s",
                ),
            ],
        ),
        Row(
            "Disk",
            [
                Panel(
                    "Disk I/O latency (heatmap)",
                    "Block request latency, issue to completion (block program).",
                    [heat("ebpf_disk_io_latency_seconds", N)],
                    unit="s",
                    kind="heatmap",
                ),
                Panel(
                    "Disk I/O latency p99 by device",
                    "99th percentile of block request latency per device and direction.",
                    [
                        Query(
                            p99(
                                "ebpf_disk_io_latency_seconds",
                                N,
                                "system_device, disk_io_direction",
                            ),
                            "{{system_device}} {{disk_io_direction}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Disk operations",
                    "Completed block requests per second, per device and direction.",
                    [
                        Query(
                            "sum by (system_device, disk_io_direction) "
                            f"({rate('ebpf_disk_operations_total', N)})",
                            "{{system_device}} {{disk_io_direction}}",
                        )
                    ],
                    unit="iops",
                ),
                Panel(
                    "Disk bytes",
                    "Bytes per second, per device and direction.",
                    [
                        Query(
                            "sum by (system_device, disk_io_direction) "
                            f"({rate('ebpf_disk_io_bytes_total', N)})",
                            "{{system_device}} {{disk_io_direction}}",
                        )
                    ],
                    unit="Bps",
                ),
            ],
        ),
        Row(
            "Network",
            [
                Panel(
                    "TCP retransmits",
                    "Retransmitted segments per second (tcp program), per pod where known.",
                    [
                        Query(
                            sum_rate("k8s_pod_uid, k8s_pod_name", "ebpf_tcp_retransmits_total", N),
                            "{{k8s_pod_name}} {{k8s_pod_uid}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "TCP resets",
                    "Resets sent and received per second (tcp program).",
                    [
                        Query(
                            f"sum by (network_io_direction) ({rate('ebpf_tcp_resets_total', N)})",
                            "{{network_io_direction}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "TCP RTT p50 / p99",
                    "Smoothed round-trip time of sampled segments (tcp program with "
                    'parameters: {rtt: "true"}; empty without it).',
                    [
                        Query(
                            p99("ebpf_tcp_rtt_seconds", N).replace("0.99", "0.5", 1),
                            "p50",
                        ),
                        Query(p99("ebpf_tcp_rtt_seconds", N), "p99"),
                    ],
                    unit="s",
                ),
            ],
        ),
        Row(
            "Memory and processes",
            [
                Panel(
                    "Page faults by process (top 10)",
                    "Page faults per second per executable name (faults program).",
                    [
                        Query(
                            "topk(10, sum by (process_executable_name) "
                            f"({rate('ebpf_process_paging_faults_total', N)}))",
                            "{{process_executable_name}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "Process churn",
                    "Processes created and exited per second (process program).",
                    [
                        Query(f"sum({rate('ebpf_process_created_total', N)})", "created"),
                        Query(f"sum({rate('ebpf_process_exits_total', N)})", "exited"),
                    ],
                    unit="short",
                ),
                Panel(
                    "OOM kills",
                    "Processes the kernel's OOM killer killed, by executable name (oom program).",
                    [
                        Query(
                            "sum by (process_executable_name) "
                            f"(increase(ebpf_oom_kills_total{{{N}}}[{RATE}]))",
                            "{{process_executable_name}}",
                        )
                    ],
                    unit="short",
                    width=24,
                ),
            ],
        ),
        Row(
            "Receiver health",
            [
                Panel(
                    "Snapshots (data points accepted)",
                    "Data points the ebpf receiver delivers per second: one batch per sidecar "
                    "snapshot. Zero means no snapshots (sidecar or receiver down).",
                    [
                        Query(
                            sum_rate(
                                "instance, receiver",
                                "otelcol_receiver_accepted_metric_points",
                                N + ', receiver=~"ebpf(/.*)?"',
                            ),
                            "{{instance}} {{receiver}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "Dropped updates (map full)",
                    "Updates kernel programs could not store because their map was full.",
                    [
                        Query(
                            "sum by (program, map) "
                            f"({rate('otelcol_receiver_ebpf_dropped_updates', N)})",
                            "{{program}}/{{map}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "Full map snapshots",
                    "Snapshots of hash maps holding as many entries as they can: raise the "
                    "program's size parameter (max_processes, max_entries, ...).",
                    [
                        Query(
                            "sum by (program, map) "
                            f"({rate('otelcol_receiver_ebpf_full_map_snapshots', N)})",
                            "{{program}}/{{map}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "Overflowed series",
                    "Data points folded into a metric's overflow series (cardinality_limit "
                    "reached).",
                    [
                        Query(
                            "sum by (metric) "
                            f"({rate('otelcol_receiver_ebpf_overflow_metric_points', N)})",
                            "{{metric}}",
                        )
                    ],
                    unit="short",
                ),
                # The agent's own cost (Snapshot.program_costs, sidecar_cost).
                Panel(
                    "BPF program CPU (kernel run time)",
                    "CPU the kernel spends running each BPF program, in CPU cores (1 = one "
                    "core busy), from BPF run-time statistics the sidecar holds on; flat at 0 "
                    "when it could not enable them (no CAP_SYS_ADMIN at its start: Helm "
                    "sidecar.extraCapabilities). Max over the node's receivers: those "
                    "sharing a program report the same one.",
                    [
                        Query(
                            "max by (instance, program, hook) "
                            f"({rate('otelcol_receiver_ebpf_program_run_time', N)})",
                            "{{instance}} {{program}} {{hook}}",
                        )
                    ],
                    unit="percentunit",
                ),
                Panel(
                    "BPF program runs",
                    "Times each BPF program ran per second; with the run time, the cost of "
                    "one run (run time / runs).",
                    [
                        Query(
                            "max by (instance, program, hook) "
                            f"({rate('otelcol_receiver_ebpf_program_runs', N)})",
                            "{{instance}} {{program}} {{hook}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "Sidecar CPU",
                    "CPU the sidecar process uses (user + system, all threads), in CPU cores.",
                    [
                        Query(
                            "max by (instance) "
                            f"({rate('otelcol_receiver_ebpf_sidecar_cpu_time', N)})",
                            "{{instance}}",
                        )
                    ],
                    unit="percentunit",
                ),
                Panel(
                    "Sidecar memory (RSS)",
                    "Resident set size of the sidecar process.",
                    [
                        Query(
                            f"max by (instance) (otelcol_receiver_ebpf_sidecar_memory_rss{{{N}}})",
                            "{{instance}}",
                        )
                    ],
                    unit="bytes",
                ),
            ],
        ),
    ]


# --- the pod drill-down --------------------------------------------------------

P = (
    'k8s_namespace_name=~"${namespace}", k8s_pod_name=~"${pod}", '
    'k8s_container_name=~"${container}", k8s_pod_uid!=""'
)
BY_C = "k8s_namespace_name, k8s_pod_name, k8s_container_name, container_id"
LEG_C = "{{k8s_pod_name}}/{{k8s_container_name}} {{container_id}}"


def pod_rows() -> list[Row]:
    return [
        Row(
            "CPU",
            [
                Panel(
                    "On-CPU time by container",
                    "CPU seconds per second of each selected container (cpu program).",
                    [
                        Query(
                            f"sum by ({BY_C}) ({rate('ebpf_process_cpu_time_seconds_total', P)})",
                            LEG_C,
                        )
                    ],
                    unit="none",
                ),
                Panel(
                    "On-CPU time by process (top 10)",
                    "The selected containers' processes.",
                    [
                        Query(
                            "topk(10, sum by (k8s_pod_name, process_executable_name, process_pid) "
                            f"({rate('ebpf_process_cpu_time_seconds_total', P)}))",
                            "{{k8s_pod_name}} {{process_executable_name}} ({{process_pid}})",
                        )
                    ],
                    unit="none",
                ),
                Panel(
                    "Involuntary context switches",
                    "Times the selected containers' processes were preempted: CPU contention.",
                    [
                        Query(
                            f"sum by ({BY_C}) (rate(ebpf_process_context_switches_total"
                            f'{{{P}, process_context_switch_type="involuntary"}}[{RATE}]))',
                            LEG_C,
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "Run-queue latency p99 by container",
                    "Wait for a CPU of the selected containers' tasks (runqlat program with "
                    'parameters: {per_cgroup: "true"}).',
                    [Query(p99("ebpf_sched_runqueue_latency_seconds", P, BY_C), LEG_C)],
                    unit="s",
                ),
            ],
        ),
        Row(
            "Disk",
            [
                Panel(
                    "Disk I/O latency (heatmap)",
                    "Block request latency of the selected containers' I/O.",
                    [heat("ebpf_disk_io_latency_seconds", P)],
                    unit="s",
                    kind="heatmap",
                ),
                Panel(
                    "Disk I/O latency p99 by container and device",
                    "99th percentile per container and device.",
                    [
                        Query(
                            p99("ebpf_disk_io_latency_seconds", P, BY_C + ", system_device"),
                            LEG_C + " {{system_device}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Disk operations by container",
                    "Block requests per second.",
                    [
                        Query(
                            sum_rate(BY_C + ", disk_io_direction", "ebpf_disk_operations_total", P),
                            LEG_C + " {{disk_io_direction}}",
                        )
                    ],
                    unit="iops",
                ),
                Panel(
                    "Disk bytes by container",
                    "Bytes per second.",
                    [
                        Query(
                            sum_rate(BY_C + ", disk_io_direction", "ebpf_disk_io_bytes_total", P),
                            LEG_C + " {{disk_io_direction}}",
                        )
                    ],
                    unit="Bps",
                ),
            ],
        ),
        Row(
            "Network",
            [
                Panel(
                    "TCP retransmits by container",
                    "Retransmitted segments per second.",
                    [Query(f"sum by ({BY_C}) ({rate('ebpf_tcp_retransmits_total', P)})", LEG_C)],
                    unit="short",
                ),
                Panel(
                    "TCP resets by container",
                    "Resets per second, sent and received.",
                    [
                        Query(
                            sum_rate(BY_C + ", network_io_direction", "ebpf_tcp_resets_total", P),
                            LEG_C + " {{network_io_direction}}",
                        )
                    ],
                    unit="short",
                ),
                Panel(
                    "TCP RTT p99 by container",
                    "Smoothed RTT of sampled segments "
                    '(tcp program with parameters: {rtt: "true"}).',
                    [Query(p99("ebpf_tcp_rtt_seconds", P, BY_C), LEG_C)],
                    unit="s",
                ),
            ],
        ),
        Row(
            "Memory",
            [
                Panel(
                    "Page faults by process",
                    "Page faults per second of the selected containers' processes.",
                    [
                        Query(
                            "topk(10, sum by (k8s_pod_name, process_executable_name) "
                            f"({rate('ebpf_process_paging_faults_total', P)}))",
                            "{{k8s_pod_name}} {{process_executable_name}}",
                        )
                    ],
                    unit="short",
                    width=24,
                ),
            ],
        ),
    ]


# --- building --------------------------------------------------------------------


def number(rows: list[Row]) -> list[Row]:
    """Stable panel ids, in order: rows count too (Grafana gives every panel one)."""
    n = 0
    for row in rows:
        n += 1
        for p in row.panels:
            n += 1
            p.id = n
    return rows


def build_panel(p: Panel) -> gd.Panel:
    b: timeseries.Panel | heatmap.Panel
    if p.kind == "heatmap":
        b = (
            heatmap.Panel()
            .calculate(False)
            .y_axis(heatmap.YAxisConfig().unit(p.unit))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(hm.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .scale(hm.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
                .steps(64)
            )
        )
    else:
        b = timeseries.Panel().unit(p.unit)
    b = b.id(p.id).title(p.title).description(p.description).datasource(DATASOURCE)
    b = b.height(8).span(p.width)
    for i, q in enumerate(p.queries):
        t = prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i))
        if q.heatmap:
            t = t.format(pm.PromQueryFormat.HEATMAP)
        b = b.with_target(t)
    return b  # type: ignore[return-value]


def label_variable(name: str, label: str, query: str, regex: str = "") -> gd.QueryVariable:
    v = (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": name})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .multi(True)
    )
    return v.regex(regex) if regex else v


def datasource_variable() -> gd.DatasourceVariable:
    return gd.DatasourceVariable("datasource").label("Data source").type("prometheus")


def build(
    uid: str, title: str, description: str, rows: list[Row], variables: list[object]
) -> dict[str, object]:
    d = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["ebpf", "kernel", "opentelemetry"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            gd.DashboardLink("ebpf dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["ebpf"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for v in variables:
        d = d.with_variable(v)  # type: ignore[arg-type]
    for row in rows:
        d = d.with_row(gd.Row(row.title))
        for p in row.panels:
            d = d.with_panel(build_panel(p))
    built = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(d.build()))
    assert isinstance(built, dict)
    # Row ids follow the same numbering as number() (the SDK leaves rows without one).
    for n, panel in enumerate(built["panels"], start=1):
        if panel.get("type") == "row":
            panel["id"] = n
        else:
            assert panel["id"] == n, (panel["title"], panel["id"], n)
    return built


def dashboards() -> dict[str, dict[str, object]]:
    node = build(
        "ebpf-node",
        "ebpf: node",
        "Kernel telemetry of one node from the ebpf receiver: CPU, run queue, disk, TCP, "
        "memory, processes, and the receiver's own health.",
        number(node_rows()),
        [
            datasource_variable(),
            label_variable(
                "node",
                "Node",
                "label_values(ebpf_process_cpu_time_seconds_total, instance)",
                r"/^([^:]+)(:[0-9]+)?$/",
            ),
        ],
    )
    pod = build(
        "ebpf-pod",
        "ebpf: pod",
        "The same kernel signals per namespace / pod / container (k8sattributesprocessor "
        "labels from the receiver's k8s.pod.uid and container.id).",
        number(pod_rows()),
        [
            datasource_variable(),
            label_variable(
                "namespace",
                "Namespace",
                "label_values(ebpf_process_cpu_time_seconds_total, k8s_namespace_name)",
            ),
            label_variable(
                "pod",
                "Pod",
                "label_values(ebpf_process_cpu_time_seconds_total"
                '{k8s_namespace_name=~"${namespace}"}, k8s_pod_name)',
            ),
            label_variable(
                "container",
                "Container",
                "label_values(ebpf_process_cpu_time_seconds_total"
                '{k8s_namespace_name=~"${namespace}", k8s_pod_name=~"${pod}"}, k8s_container_name)',
            ),
        ],
    )
    return {"ebpf-node.json": node, "ebpf-pod.json": pod}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    out.mkdir(parents=True, exist_ok=True)
    for name, d in dashboards().items():
        (out / name).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
