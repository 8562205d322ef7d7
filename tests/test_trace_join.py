"""The join with traces: an app's spans lead to its own kernel metrics.

A real application instrumented with the OpenTelemetry SDK
(tests/trace_join_app.py, service "order-service") runs inside a
kubelet-shaped container cgroup. It handles one order in a root span with
two children: O_DIRECT I/O on a loop device only it uses, and a stream of
small TCP messages through a network namespace that drops 15 % of them.
Its spans go over OTLP/gRPC to the ocb-built collector, which also runs the
ebpf receiver (cpu, block, tcp, runqlat per_cgroup); the collector writes
both signals through the contrib file exporter as OTLP JSON lines.

The test reads the files back as a backend would hold them, finds the app's
spans, and takes their resource's container.id and process.pid as the only
key into the metrics, as Grafana's traces-to-metrics link does. What that
key finds must describe the app's own work, against the kernel's own
accounting:

- ebpf.disk.operations / ebpf.disk.io on the loop device = the /proc/diskstats
  delta, exactly (the app is the device's only user during the window);
- ebpf.tcp.retransmits of the container = the netns's RetransSegs delta but
  for TCPRetransFail (both ends of the connection are the app's sockets), > 0;
- ebpf.process.cpu.time with the app's process.pid exists and matches the
  app's own schedstat total; every cpu series of the container is its pid;
- ebpf.sched.runqueue.latency of the container has waits;
- every metric of the container carries the pod's k8s.pod.uid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpf_witness import witness
from test_accuracy_block import (
    attached_loop_device,
    diskstats,
    given_to_bpf,
    idle_diskstats,
    warm_up_read,
)
from test_accuracy_tcp import LOSS_PERCENT, SNAPSHOT_WAIT, delivered, netns

from conftest import (
    KubeletContainer,
    Process,
    expose_self_telemetry,
    free_port,
    scrape,
    start_collector,
    value,
    wait_for,
)

APP = Path(__file__).with_name("trace_join_app.py")
SERVICE = "order-service"
ADDR = "127.0.0.99"  # the app's server in the netns; the loss rule matches only it
MESSAGES = 3000
SPANS = {"POST /orders", "disk.io", "tcp.send"}

Json = dict[str, Any]


def attributes(kvs: list[Json]) -> dict[str, str]:
    """OTLP JSON key-values as strings (int64 values arrive as strings anyway)."""
    out = {}
    for kv in kvs:
        [(kind, v)] = kv["value"].items()
        out[kv["key"]] = str(v) if kind != "stringValue" else v
    return out


@dataclass(frozen=True)
class Point:
    metric: str
    resource: dict[str, str]
    attrs: dict[str, str]
    time_ns: int
    value: float  # a sum's value, a histogram's count

    def series(self) -> tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        return self.metric, tuple(sorted(self.resource.items())), tuple(sorted(self.attrs.items()))


class OtlpJsonLines:
    """A file exporter's output, read as it grows: one OTLP export request a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.requests: list[Json] = []

    def read(self) -> list[Json]:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # the exporter may be mid-line
            self._offset += len(complete)
            self.requests += [json.loads(line) for line in complete.splitlines() if line]
        return self.requests

    def points(self) -> Iterator[Point]:
        for request in self.read():
            for rm in request.get("resourceMetrics", []):
                resource = attributes(rm["resource"].get("attributes", []))
                for sm in rm.get("scopeMetrics", []):
                    for m in sm["metrics"]:
                        yield from metric_points(m, resource)

    def spans(self) -> Iterator[tuple[dict[str, str], Json]]:
        for request in self.read():
            for rs in request.get("resourceSpans", []):
                resource = attributes(rs["resource"].get("attributes", []))
                for ss in rs.get("scopeSpans", []):
                    for span in ss["spans"]:
                        yield resource, span


def metric_points(m: Json, resource: dict[str, str]) -> Iterator[Point]:
    if "sum" in m:
        for dp in m["sum"].get("dataPoints", []):
            v = float(dp["asInt"]) if "asInt" in dp else float(dp.get("asDouble", 0.0))
            attrs = attributes(dp.get("attributes", []))
            yield Point(m["name"], resource, attrs, int(dp["timeUnixNano"]), v)
    elif "histogram" in m:
        for dp in m["histogram"].get("dataPoints", []):
            yield Point(
                m["name"],
                resource,
                attributes(dp.get("attributes", [])),
                int(dp["timeUnixNano"]),
                float(dp.get("count", 0)),
            )


def latest(points: Iterator[Point]) -> list[Point]:
    """The last point of each series (the metrics are cumulative)."""
    last: dict[Any, Point] = {}
    for p in points:
        key = p.series()
        if key not in last or p.time_ns >= last[key].time_ns:
            last[key] = p
    return list(last.values())


def total(points: list[Point], metric: str, **attrs: str) -> float:
    return sum(p.value for p in points if p.metric == metric and attrs.items() <= p.attrs.items())


def tcp_recursion_misses(telemetry_port: int) -> float:
    """Runs the kernel skipped of this receiver's tcp programs, at the latest snapshot.

    The tcp program's hooks are raw tracepoints, skipped only when the same
    program is already running on that CPU (a retransmit from the timer
    softirq interrupting it); the kernel counts such runs in the program's
    recursion_misses, which the receiver's self-metric carries.
    """
    return (
        value(
            scrape(telemetry_port),
            "otelcol_receiver_ebpf_program_recursion_misses_total",
            program="tcp",
        )
        or 0
    )


def collector_config(sock: Path, otlp_port: int, traces: Path, metrics: Path) -> Json:
    return {
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp_port}"}}},
            "ebpf": {
                "endpoint": f"unix://{sock}",
                "collection_interval": "1s",
                "programs": [
                    {"name": "cpu"},
                    {"name": "block"},
                    {"name": "tcp"},
                    {"name": "runqlat", "parameters": {"per_cgroup": "true"}},
                ],
            },
        },
        "exporters": {
            "file/traces": {"path": str(traces)},
            "file/metrics": {"path": str(metrics)},
        },
        "service": {
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["file/traces"]},
                "metrics": {"receivers": ["ebpf"], "exporters": ["file/metrics"]},
            },
        },
    }


def tell(app: subprocess.Popen[str], line: str) -> None:
    assert app.stdin
    app.stdin.write(line + "\n")
    app.stdin.flush()


def hear(app: subprocess.Popen[str]) -> str:
    assert app.stdout
    line = app.stdout.readline().strip()
    assert line, f"order-service exited with {app.wait(10)} (its stderr is above)"
    return line


def test_a_slow_orders_spans_lead_to_its_own_kernel_metrics(
    sidecar: tuple[Process, Path],
    kubelet_containers: Callable[[], KubeletContainer],
    tmp_path: Path,
) -> None:
    _, sock = sidecar
    container = kubelet_containers()
    traces_file, metrics_file = tmp_path / "traces.jsonl", tmp_path / "metrics.jsonl"
    otlp_port, telemetry = free_port(), free_port()
    traces, metrics = OtlpJsonLines(traces_file), OtlpJsonLines(metrics_file)
    with attached_loop_device(tmp_path / "disk.img") as device, netns() as ns:
        name = os.path.basename(device)
        config = collector_config(sock, otlp_port, traces_file, metrics_file)
        expose_self_telemetry(config, telemetry)
        col = start_collector(config, tmp_path)
        app: subprocess.Popen[str] | None = None
        try:
            # The programs are attached before the app starts: all its CPU
            # time and I/O are counted.
            wait_for(
                f"block metrics for {name} in {metrics_file}",
                lambda: (
                    warm_up_read(device)
                    and any(p.attrs.get("system.device") == name for p in metrics.points())
                ),
                60,
                every=1,
            )
            app = container.run(
                [
                    sys.executable,
                    str(APP),
                    *("--otlp-endpoint", f"127.0.0.1:{otlp_port}"),
                    *("--device", device),
                    *("--netns", ns.name),
                    *("--address", ADDR),
                    *("--messages", str(MESSAGES)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert hear(app) == "connected"
            disk0 = idle_diskstats(name)
            snmp0, netstat0 = ns.snmp(), ns.snmp("TcpExt", "/proc/net/netstat")
            misses0 = tcp_recursion_misses(telemetry)
            with witness("tcp") as witnessed, witness("block", device) as disk_witnessed:
                ns.loss(LOSS_PERCENT, ADDR)
                tell(app, "go")
                assert hear(app) == "done"
                ns.no_loss()
                snmp1, netstat1 = ns.snmp(), ns.snmp("TcpExt", "/proc/net/netstat")
            disk1 = diskstats(name)  # O_DIRECT is synchronous: everything completed
            assert disk1["in_flight"] == 0, disk1
            tell(app, "close")
            reported = json.loads(hear(app))
            time.sleep(SNAPSHOT_WAIT)  # a snapshot after the app's last CPU time
            # (a later reading only widens the bound it is used for)
            misses = tcp_recursion_misses(telemetry) - misses0
            assert app.stdin
            app.stdin.close()
            assert app.wait(30) == 0
            wait_for(
                "the app's spans in the traces file",
                lambda: (
                    {s["name"] for r, s in traces.spans() if r.get("service.name") == SERVICE}
                    >= SPANS
                ),
                30,
            )
        finally:
            if app and app.poll() is None:
                app.kill()
                app.wait()
            col.stop()
        assert col.proc.returncode == 0, col.output()

    # --- the trace, as a tracing backend holds it ------------------------------
    ours = [(r, s) for r, s in traces.spans() if r.get("service.name") == SERVICE]
    spans = {s["name"]: s for _, s in ours}
    assert set(spans) == SPANS, spans.keys()
    [resource] = {tuple(sorted(r.items())) for r, _ in ours}
    span_resource = dict(resource)
    root = spans["POST /orders"]
    assert root["traceId"] == reported["trace_id"]
    for child in ("disk.io", "tcp.send"):
        assert spans[child]["traceId"] == root["traceId"]
        assert spans[child]["parentSpanId"] == root["spanId"]
    # The join keys come from the span's resource alone; that they are the
    # container's and the process's is checked here, not assumed below.
    container_id, pid = span_resource["container.id"], span_resource["process.pid"]
    assert container_id == container.container_id, span_resource
    assert pid == str(app.pid), span_resource

    # --- the kernel metrics with the same resource attributes ------------------
    mine = latest(p for p in metrics.points() if p.resource.get("container.id") == container_id)
    assert mine, f"no metric carries container.id {container_id}"
    assert {p.resource.get("k8s.pod.uid") for p in mine} == {container.pod_uid}

    disk = {k: disk1[k] - disk0[k] for k in disk0 if k != "in_flight"}
    ebpf_disk = {
        f"{direction}_{what}": total(
            mine, metric, **{"system.device": name, "disk.io.direction": direction}
        )
        for direction in ("read", "write")
        for what, metric in (("ops", "ebpf.disk.operations"), ("bytes", "ebpf.disk.io"))
    }

    retrans_kernel = snmp1["RetransSegs"] - snmp0["RetransSegs"]
    retrans_failed = netstat1["TCPRetransFail"] - netstat0["TCPRetransFail"]
    retrans = total(mine, "ebpf.tcp.retransmits")

    cpu = [p for p in mine if p.metric == "ebpf.process.cpu.time"]
    cpu_seconds = sum(p.value for p in cpu if p.resource.get("process.pid") == pid)
    app_cpu_seconds = reported["cpu_ns"] / 1e9
    runq_waits = total(mine, "ebpf.sched.runqueue.latency")

    def span_ms(span: Json) -> float:
        return (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6

    print(
        f"trace {root['traceId']} of {SERVICE} (container.id {container_id[:12]}, "
        f"process.pid {pid}): " + ", ".join(f"{n} {span_ms(s):.0f} ms" for n, s in spans.items())
    )
    print(f"  {name}: diskstats delta {disk}, container's ebpf.disk.* {ebpf_disk}")
    print(
        f"  retransmits: container's {retrans:.0f}, netns RetransSegs {retrans_kernel}, "
        f"TCPRetransFail {retrans_failed}, tcp programs' recursion misses {misses}"
    )
    print(
        f"  cpu: ebpf.process.cpu.time {cpu_seconds:.3f} s, "
        f"the app's schedstat {app_cpu_seconds:.3f} s; run-queue waits {runq_waits:.0f}"
    )

    # The app was the device's only user in the window: exact, but for
    # completions the kernel ran no BPF program for (tests/bpf_witness.py, the
    # same witness as tests/test_accuracy_block.py).
    assert disk["read_bytes"] > 0 and disk["write_bytes"] > 0, disk
    traced_disk = given_to_bpf(disk_witnessed)
    print(f"  disk completions the BPF witness saw: {traced_disk}")
    if ebpf_disk != disk and traced_disk != disk:
        print("  the kernel ran no BPF program for some of the app's requests")
        assert ebpf_disk == traced_disk, (ebpf_disk, traced_disk, disk)
    else:
        assert ebpf_disk == disk, (ebpf_disk, disk, traced_disk)
    # As tests/test_accuracy_tcp.py: exact but for retransmissions that the
    # stack counted in RetransSegs and failed to send. Both ends are the app's.
    assert retrans_kernel > 0, "the nftables loss rule caused no retransmits"
    # Nor does the program see a retransmit whose tracepoint fired while
    # the same program ran on that CPU (a softirq interrupting it): the
    # kernel skips the nested run and counts it in the program's
    # recursion_misses, which bound the difference here.
    # And none that the kernel ran no BPF program for: on this Firecracker
    # guest kernel that happens now and then, with no recursion miss, while
    # ftrace's trace event still records it. A second counter on the same
    # hooks (tests/bpf_witness.py; the whole machine's, but nothing else here
    # retransmits) saw what BPF was given; what it missed of RetransSegs is
    # not ours to see. A retransmit the witness saw and we did not still fails.
    traced_retrans = witnessed["retransmits"]
    seen = delivered(retrans_kernel, traced_retrans)
    print(f"  retransmits the BPF witness saw: {traced_retrans}")
    if retrans < seen:  # where did the missing ones go: every series, every resource
        for p in latest(metrics.points()):
            if p.metric == "ebpf.tcp.retransmits":
                print(f"  retransmit series: {p.value:.0f} {p.resource} {p.attrs}")
    assert seen - retrans_failed - misses <= retrans <= retrans_kernel, (
        retrans,
        retrans_kernel,
        retrans_failed,
        misses,
        traced_retrans,
    )
    # Every cpu series of the container is the app's process.
    assert {p.resource.get("process.pid") for p in cpu} == {pid}, cpu
    # The app's schedstat total leaves out threads that had exited by then
    # (the span exporter's) and the time after it was read; the metric leaves
    # out the launching shell's moments before it moved into the container.
    assert 0.9 * app_cpu_seconds <= cpu_seconds <= 1.05 * app_cpu_seconds + 0.1, (
        cpu_seconds,
        app_cpu_seconds,
    )
    # It slept between messages and woke up for each: it waited on run queues.
    assert runq_waits > 0
