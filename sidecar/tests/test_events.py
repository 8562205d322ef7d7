"""Events: manifests, records, rate limits, clocks and the real ring buffer."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ebpf_sidecar import events
from ebpf_sidecar.catalog import Catalog, CatalogError, EventSpec
from ebpf_sidecar.manifest import load_manifest
from ebpf_sidecar.programs import ProgramManager


def exit_spec(catalog: Catalog) -> EventSpec:
    return catalog.program("process").events["ebpf.process.exit"]


def values(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ktime_ns": 1,
        "cgroup_id": 1,
        "pid": 42,
        "exit_code": 0,
        "signal": "",
        "status": 0,
        "sender_pid": 0,
        "core_dumped": 0,
        "comm": "app",
        "sender_comm": "",
        "container_id": "",
        "pod_uid": "",
    }
    base.update(kw)
    return base


def test_the_body_is_the_first_template_whose_fields_are_set(catalog: Catalog) -> None:
    spec = exit_spec(catalog)
    killed = values(signal="SIGKILL", exit_code=137, sender_pid=7, sender_comm="kubelet")
    assert events.body(spec, killed) == "app (pid 42) was killed by SIGKILL sent by kubelet (pid 7)"
    segv = values(signal="SIGSEGV", exit_code=139, container_id="abc")
    assert events.body(spec, segv) == "app (pid 42) in container abc was killed by SIGSEGV"
    assert events.body(spec, values(status=3, exit_code=3)) == "app (pid 42) exited with status 3"


def test_human_bytes() -> None:
    assert events.human_bytes(300) == "300 B"
    assert events.human_bytes(2040 << 20) == "2.0 GiB"
    assert events.human_bytes(512 << 20) == "512 MiB"


def test_records_put_identity_on_the_resource_and_leave_empty_ids_out(catalog: Catalog) -> None:
    spec = exit_spec(catalog)
    clock = events.Clock(lambda: 1000, lambda: 5000)
    e1 = events.Event(spec, 100, values(status=1, exit_code=1, container_id="c1", pod_uid="p1"))
    e2 = events.Event(spec, 200, values(pid=43, status=2, exit_code=2))
    data = events.logs_data([(e1, 9), (e2, 9)], clock)
    assert len(data.resource_logs) == 2
    res = {kv.key: kv.value for kv in data.resource_logs[0].resource.attributes}
    assert res["process.pid"].int_value == 42
    assert res["container.id"].string_value == "c1"
    assert res["k8s.pod.uid"].string_value == "p1"
    res2 = {kv.key for kv in data.resource_logs[1].resource.attributes}
    assert res2 == {"process.pid"}
    record = data.resource_logs[0].scope_logs[0].log_records[0]
    assert record.event_name == "ebpf.process.exit"
    assert record.time_unix_nano == 100 + 4000
    assert record.observed_time_unix_nano == 9
    assert record.severity_text == "WARN"
    attrs = {kv.key for kv in record.attributes}
    assert "ktime_ns" not in attrs and "process.pid" not in attrs
    assert "ebpf.process.signal.sender.pid" not in attrs  # omit_zero


def test_the_clock_offset_is_measured_between_two_monotonic_reads() -> None:
    ticks = iter([100, 110, 300, 301, 500, 520])
    reals = iter([10_105, 10_300, 10_510])
    clock = events.Clock(lambda: next(ticks), lambda: next(reals))
    # the narrowest bracket (300..301) wins: 10_300 - 300
    assert clock.offset_ns == 10_300 - 300
    assert clock.wall(1_000) == 1_000 + 10_000


def test_the_real_clocks_convert_within_a_millisecond() -> None:
    clock = events.Clock()
    now_mono, now_real = time.monotonic_ns(), time.time_ns()
    assert abs(clock.wall(now_mono) - now_real) < 1_000_000


def test_rate_limit_and_a_stalled_stream_are_counted(catalog: Catalog) -> None:
    spec = exit_spec(catalog)
    sink = events.EventSink(max_pending=15)
    sink.want(spec.name, 10)
    batch = [events.Event(spec, i, values()) for i in range(25)]
    sink.offer(batch, observed=5_000_000_000)
    assert len(sink.pending) == 10
    assert sink.dropped[(spec.name, events.RATE_LIMITED)] == 15
    sink.offer(batch[:8], observed=6_000_000_000)  # the next second
    assert len(sink.pending) == 15
    assert sink.dropped[(spec.name, events.STREAM_BEHIND)] == 3
    assert len(sink.take()) == 15 and not sink.pending


def manifest(tmp_path: Path, event: str) -> Path:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "p.c").write_text("")
    path = folder / "manifest.yaml"
    path.write_text(
        "name: p\nhooks: []\nmaps: []\nevents:\n"
        + "\n".join("  " + line for line in event.strip().splitlines())
        + "\n"
    )
    return path


EVENT = """
- name: x.y
  ring_buffer: rb
  time_field: t
  body: ["{a} happened"]
  fields:
    - {name: t, type: u64}
    - {name: a, type: u32}
"""


def test_a_good_event_manifest_loads(tmp_path: Path) -> None:
    program = load_manifest(manifest(tmp_path, EVENT))
    assert program.events["x.y"].severity == "info"
    assert [f.name for f in program.to_proto().events[0].fields] == ["t", "a"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("severity: info", "severity: loud"), "severity: 'loud' is not one of trace, debug"),
        (("{a} happened", "{b} happened"), "body[0]: 'b' are no fields of the event"),
        (("time_field: t", "time_field: a"), "time_field: 'a' is no u64 field"),
    ],
)
def test_event_manifest_errors_name_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = EVENT.replace("  time_field: t", "  time_field: t\n  severity: info")
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_manifest(manifest(tmp_path, text.replace(*change)))


def test_a_full_ring_buffer_is_counted_and_never_blocks(
    needs_root: None, programs: ProgramManager
) -> None:
    """Nobody reads: the kernel writes until the buffer is full, then counts."""
    loaded = programs.acquire("process", {})
    source = loaded.events["ebpf.process.exit"]
    before = source.ring_buffer_full()
    record = source.layout.stride + 8  # BPF_RINGBUF_HDR_SZ, rounded to 8
    capacity = 16 * 4096 // record
    n = capacity + 300
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {n} ]; do (exit 3); i=$((i+1)); done"])
    assert source.ring_buffer_full() - before >= n - capacity
