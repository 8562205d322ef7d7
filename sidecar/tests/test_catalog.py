from __future__ import annotations

from pathlib import Path

import pytest

from ebpf_sidecar.catalog import Catalog, CatalogError, RequestError, load_manifest
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
        ({"max_entries": "12"}, r"max_entries: 12 is out of range; use 128\.\.1048576"),
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


def _write(tmp_path: Path, manifest: str) -> Path:
    d = tmp_path / "prog"
    d.mkdir()
    (d / "prog.c").write_text("// empty\n")
    (d / "manifest.yaml").write_text(manifest)
    return d / "manifest.yaml"


GOOD = """
name: prog
hooks: [tracepoint:a:b]
maps:
  - name: m
    max_entries: 8
    key: [{name: k, type: u32}]
    value: [{name: v, type: u64}]
"""


def test_minimal_manifest_loads(tmp_path: Path) -> None:
    prog = load_manifest(_write(tmp_path, GOOD))
    assert prog.maps["m"].key[0].size == 4


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        (GOOD.replace("name: prog", "name: other"), r"must match its folder 'prog'"),
        (GOOD.replace("type: u32", "type: int"), r"key\[0\]\.type: 'int' is not u8"),
        (GOOD.replace("{name: k, type: u32}", "{name: k, type: u32, decoders: [bogus]}"),
         r"unknown decoder 'bogus'"),
        (GOOD.replace("    max_entries: 8\n", ""), r"missing required key 'max_entries'"),
    ],
)
def test_broken_manifests_name_the_field(tmp_path: Path, broken: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, broken))


def test_duplicate_program_names_are_rejected(catalog: Catalog) -> None:
    cpu = catalog.program("cpu")
    with pytest.raises(CatalogError, match="defined twice"):
        Catalog([cpu, cpu])


DERIVED = """
name: prog
hooks: [tracepoint:a:b]
maps:
  - name: m
    max_entries: 8
    key:
      - name: k
        type: u64
        decoders: [{static_map: {map: {1: one}, allow_unknown: false}}]
    derived:
      - {name: cg, from: k, decoders: [cgroup], attribute: cgroup.path}
      - {name: cid, from: k, decoders: [cgroup, container_id], attribute: container.id}
    value: [{name: v, type: u64}]
default_metrics:
  - name: x
    map: m
    type: sum
    value_field: v
    attributes: [{field: cid, name: container.id, resource: true}]
"""


def test_derived_fields_are_key_fields_in_describe(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path, DERIVED)).to_proto().maps[0]
    assert [(f.name, f.type, f.size, f.derived_from, f.attribute) for f in m.key_fields] == [
        ("k", pb.FIELD_TYPE_STRING, 8, "", "k"),
        ("cg", pb.FIELD_TYPE_STRING, 0, "k", "cgroup.path"),
        ("cid", pb.FIELD_TYPE_STRING, 0, "k", "container.id"),
    ]
    assert list(m.key_fields[0].decoders) == [
        'static_map{"allow_unknown":false,"map":{"1":"one"}}']
    assert list(m.key_fields[2].decoders) == ["cgroup", "container_id"]


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        (DERIVED.replace("from: k,", "from: nope,"),
         r"derived\[0\] \(cg\)\.from: 'nope' is no key field of the map; key fields: k"),
        (DERIVED.replace("decoders: [cgroup], ", "decoders: [], "),
         r"derived\[0\] \(cg\)\.decoders: a derived field needs at least one decoder"),
        (DERIVED.replace("name: cg,", "name: k,"), r"derived\[0\]\.name: 'k' is already a key"),
        (DERIVED.replace("decoders: [cgroup, container_id]", "decoders: [cgroup, nope]"),
         r"derived\[1\] \(cid\)\.decoders\[1\]: unknown decoder 'nope'"),
        (DERIVED.replace("allow_unknown: false", "allow_unknown: maybe"),
         r"key\[0\] \(k\)\.decoders\[0\]: static_map\.allow_unknown: 'maybe' is not true"),
        (DERIVED.replace("{field: cid,", "{field: cidx,"),
         r"attributes\[0\]\.field: 'cidx' is no key field"),
    ],
)
def test_broken_derived_and_decoder_options_name_the_field(
    tmp_path: Path, broken: str, error: str
) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, broken))


def test_cpu_processes_carry_container_and_pod_identity(catalog: Catalog) -> None:
    cpu = catalog.program("cpu").to_proto()
    m = next(m for m in cpu.maps if m.name == "process_cpu")
    derived = {f.name: (f.derived_from, f.attribute, list(f.decoders))
               for f in m.key_fields if f.derived_from}
    assert derived == {
        "container_id": ("cgroup_id", "container.id", ["cgroup", "container_id"]),
        "pod_uid": ("cgroup_id", "k8s.pod.uid", ["cgroup", "pod_uid"]),
    }
    for metric in cpu.default_metrics:
        if metric.map == "process_cpu":
            resource = {a.name for a in metric.attributes if a.resource}
            assert {"container.id", "k8s.pod.uid", "process.pid"} <= resource, metric.name


HIST = """
name: prog
hooks: [tracepoint:a:b]
maps:
  - name: m
    max_entries: 8
    key: [{name: slot, type: u32}]
    value: [{name: count, type: u64}]
    histogram: {slot_field: slot, slots: 4, count_field: count, unit: us, CONVENTION}
"""


def test_histogram_conventions_reach_the_wire(tmp_path: Path) -> None:
    prog = load_manifest(_write(tmp_path, HIST.replace(
        "CONVENTION", "convention: fixed, bounds: [10, 100, 1000]")))
    layout = prog.to_proto().maps[0].histogram
    assert layout.convention == pb.SLOT_CONVENTION_FIXED
    assert list(layout.bounds) == [10, 100, 1000]


@pytest.mark.parametrize(
    ("convention", "error"),
    [
        ("convention: cubic", r"'cubic' is not one of log2_bcc, log2_exponent, linear, fixed"),
        ("convention: linear", r"linear_width: a linear histogram needs a width above 0"),
        ("convention: fixed, bounds: [10, 5, 100]", r"needs 3 strictly increasing bounds"),
    ],
)
def test_bad_histogram_layouts(tmp_path: Path, convention: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, HIST.replace("CONVENTION", convention)))
