from __future__ import annotations

import pytest

from ebpf_sidecar.catalog import Catalog, CatalogError, RequestError
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def test_builtin_catalog_describes_maps_and_defaults(catalog: Catalog) -> None:
    assert {"cpu", "syscalls"} <= set(catalog.programs)
    cpu = catalog.program("cpu").to_proto()
    usage = next(m for m in cpu.maps if m.name == "cpu_usage")
    assert usage.kind == pb.MAP_KIND_HISTOGRAM
    assert usage.histogram.slot_field == "slot"
    assert usage.histogram.unit == "ns"
    sc = catalog.program("syscalls").to_proto()
    m = next(m for m in sc.maps if m.name == "syscalls")
    assert [(f.name, f.type, f.size) for f in m.key_fields] == [
        ("syscall_id", pb.FIELD_TYPE_STRING, 4),
        ("comm", pb.FIELD_TYPE_STRING, 16),
    ]
    assert [d.name for d in sc.default_metrics] == ["ebpf.syscalls", "ebpf.syscall.errors"]


def test_unknown_program_lists_valid_ones(catalog: Catalog) -> None:
    with pytest.raises(RequestError, match=r"unknown program 'nope'; valid programs: .*cpu"):
        catalog.program("nope")


def test_unknown_map_lists_the_programs_maps(catalog: Catalog) -> None:
    with pytest.raises(RequestError, match=r"no map 'x'; its maps: syscalls, syscall_errors"):
        catalog.map("syscalls", "x")


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"max_entries": "12"}, r"max_entries: 12 is out of range; use 128\.\.65536"),
        ({"max_entries": "many"}, r"max_entries: 'many' is not an integer"),
        ({"count_errors": "yes"}, r"count_errors: 'yes' is not a boolean; use true or false"),
        ({"cflags": "-include /etc/shadow"}, r"unknown parameter 'cflags'; valid parameters"),
    ],
)
def test_parameters_are_validated_values_not_flags(
    catalog: Catalog, values: dict[str, str], error: str
) -> None:
    with pytest.raises(RequestError, match=error):
        catalog.program("syscalls").cflags(values)


def test_parameters_become_defines(catalog: Catalog) -> None:
    flags = catalog.program("syscalls").cflags({"max_entries": "4096", "count_errors": "false"})
    assert flags == ["-DCOUNT_ERRORS=0", "-DMAX_ENTRIES=4096"]
    assert catalog.program("syscalls").cflags({}) == ["-DCOUNT_ERRORS=1", "-DMAX_ENTRIES=10240"]


def test_duplicate_program_names_are_rejected(catalog: Catalog) -> None:
    cpu = catalog.program("cpu")
    with pytest.raises(CatalogError, match="defined twice"):
        Catalog([cpu, cpu])


def test_cpu_processes_carry_container_and_pod_identity(catalog: Catalog) -> None:
    cpu = catalog.program("cpu").to_proto()
    m = next(m for m in cpu.maps if m.name == "process_cpu")
    derived = {
        f.name: (f.derived_from, f.attribute, list(f.decoders))
        for f in m.key_fields
        if f.derived_from
    }
    assert derived == {
        "container_id": ("cgroup_id", "container.id", ["cgroup", "container_id"]),
        "pod_uid": ("cgroup_id", "k8s.pod.uid", ["cgroup", "pod_uid"]),
    }
    for metric in cpu.default_metrics:
        if metric.map == "process_cpu":
            resource = {a.name for a in metric.attributes if a.resource}
            assert {"container.id", "k8s.pod.uid", "process.pid"} <= resource, metric.name


def test_describe_sizes_maps_for_the_parameters_defaults(catalog: Catalog) -> None:
    block = {m.name: m.max_entries for m in catalog.program("block").to_proto().maps}
    assert block == {"disk_io": 1024, "disk_latency": 1024 * 98}  # 98 slots at scale 2
    cpu = {m.name: m.max_entries for m in catalog.program("cpu").to_proto().maps}
    assert cpu == {"process_cpu": 10240, "cpu_usage": 114}


def test_map_sizes_follow_parameter_values(catalog: Catalog) -> None:
    block = catalog.program("block")
    values = block.parameter_values({"max_series": "64"})
    assert values == {"histogram_scale": 2, "max_inflight": 10240, "max_series": 64}
    assert block.maps["disk_latency"].entries(values) == 64 * 98
    assert str(block.maps["disk_latency"].size) == "max_series * slots"


@pytest.mark.parametrize(
    ("scale", "convention", "slots", "offset"),
    [
        # BCC's log2 slots, as before histogram_scale: 2^34 ns and up in slot 35
        ("0", pb.SLOT_CONVENTION_LOG2_BCC, 36, 0),
        ("1", pb.SLOT_CONVENTION_EXPONENTIAL, 2 * 24 + 2, 10 * 2),
        ("2", pb.SLOT_CONVENTION_EXPONENTIAL, 4 * 24 + 2, 10 * 4),
        ("3", pb.SLOT_CONVENTION_EXPONENTIAL, 8 * 24 + 2, 10 * 8),
    ],
)
def test_histogram_layouts_follow_histogram_scale(
    catalog: Catalog, scale: str, convention: int, slots: int, offset: int
) -> None:
    block = catalog.program("block")
    values = block.parameter_values({"histogram_scale": scale, "max_series": "64"})
    latency = block.maps["disk_latency"].to_proto(values)
    assert latency.max_entries == 64 * slots
    h = latency.histogram
    assert (h.convention, h.slots, h.index_offset) == (convention, slots, offset)
    assert h.scale == (int(scale) if convention == pb.SLOT_CONVENTION_EXPONENTIAL else 0)


def test_enum_and_bool_parameters_name_their_choices() -> None:
    from ebpf_sidecar.catalog import ParameterSpec

    mode = ParameterSpec("mode", "enum", "pid", "MODE", "", allowed=("pid", "comm"))
    assert mode.number("comm") == 1
    with pytest.raises(RequestError, match=r"^'tid' is not one of pid, comm$"):
        mode.number("tid")
    flag = ParameterSpec("per_process", "bool", "true", "PER_PROCESS", "")
    assert flag.number(" TRUE ") == 1
    with pytest.raises(RequestError, match=r"^'many' is not a boolean; use true or false$"):
        flag.number("many")
