from __future__ import annotations

from pathlib import Path

import pytest

from ebpf_sidecar.catalog import CatalogError
from ebpf_sidecar.manifest import load_manifest
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


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
        (GOOD.replace("type: u32", "type: int"), r"key\[0\] \(k\)\.type: 'int' is not u8"),
        (
            GOOD.replace("{name: k, type: u32}", "{name: k, type: u32, decoders: [bogus]}"),
            r"unknown decoder 'bogus'",
        ),
        (GOOD.replace("    max_entries: 8\n", ""), r"missing required key 'max_entries'"),
    ],
)
def test_broken_manifests_name_the_field(tmp_path: Path, broken: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, broken))


DERIVED = """
name: prog
hooks: [tracepoint:a:b]
maps:
  - name: m
    max_entries: 8
    key:
      - name: k
        type: u64
        decoders: [{static_map: {map: {1: one}, drop_unknown: true}}]
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
    assert list(m.key_fields[0].decoders) == ['static_map{"drop_unknown":true,"map":{"1":"one"}}']
    assert list(m.key_fields[2].decoders) == ["cgroup", "container_id"]


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        (
            DERIVED.replace("from: k,", "from: nope,"),
            r"derived\[0\] \(cg\)\.from: 'nope' is no key field of the map; key fields: k",
        ),
        (
            DERIVED.replace("decoders: [cgroup], ", "decoders: [], "),
            r"derived\[0\] \(cg\)\.decoders: a derived field needs at least one decoder",
        ),
        (DERIVED.replace("name: cg,", "name: k,"), r"derived\[0\]\.name: 'k' is already a key"),
        (
            DERIVED.replace("decoders: [cgroup, container_id]", "decoders: [cgroup, nope]"),
            r"derived\[1\] \(cid\)\.decoders\[1\]: unknown decoder 'nope'",
        ),
        (
            DERIVED.replace("drop_unknown: true", "drop_unknown: maybe"),
            r"key\[0\] \(k\)\.decoders\[0\]: static_map\.drop_unknown: 'maybe' is not true",
        ),
        (
            DERIVED.replace("{field: cid,", "{field: cidx,"),
            r"attributes\[0\]\.field: 'cidx' is no key field",
        ),
    ],
)
def test_broken_derived_and_decoder_options_name_the_field(
    tmp_path: Path, broken: str, error: str
) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, broken))


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
    prog = load_manifest(
        _write(tmp_path, HIST.replace("CONVENTION", "convention: fixed, bounds: [10, 100, 1000]"))
    )
    layout = prog.to_proto().maps[0].histogram
    assert layout.convention == pb.SLOT_CONVENTION_FIXED
    assert list(layout.bounds) == [10, 100, 1000]


@pytest.mark.parametrize(
    ("convention", "error"),
    [
        ("convention: cubic", r"'cubic' is not one of log2_bcc, log2_exponent, linear, fixed"),
        ("convention: linear", r"linear_width: a linear histogram needs a width above 0"),
        ("convention: fixed, bounds: [10, 5, 100]", r"needs 3 strictly increasing bounds"),
        (
            "convention: exponential, scale: 2, min_log2: 0, max_log2: 8",
            r"histogram\.slots: an exponential histogram's slots follow from scale",
        ),
    ],
)
def test_bad_histogram_layouts(tmp_path: Path, convention: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, HIST.replace("CONVENTION", convention)))


EXP = """
name: prog
hooks: [tracepoint:a:b]
parameters:
  - {name: scale, type: int, default: 2, min: 0, max: MAX, define: SCALE}
maps:
  - name: m
    max_entries: SIZE
    key: [{name: slot, type: u32}]
    value: [{name: count, type: u64}]
    histogram: {slot_field: slot, count_field: count, unit: us, convention: exponential, LAYOUT}
"""


@pytest.mark.parametrize(
    ("replace", "error"),
    [
        ({"LAYOUT": "scale: 4, min_log2: 0, max_log2: 8"}, r"scale: 4 is not one of 0\.\.3"),
        ({"MAX": "5"}, r"scale: 'scale' is no int parameter of the program within 0\.\.3"),
        ({"LAYOUT": "scale: scale, min_log2: 8, max_log2: 8"}, r"0 <= min_log2 < max_log2"),
        ({"SIZE": "114"}, r"max_entries: an exponential histogram's slots follow its scale"),
    ],
)
def test_bad_exponential_histograms(tmp_path: Path, replace: dict[str, str], error: str) -> None:
    doc = EXP
    for k, v in {
        "MAX": "3",
        "SIZE": "slots",
        "LAYOUT": "scale: scale, min_log2: 0, max_log2: 8",
        **replace,
    }.items():
        doc = doc.replace(k, v)
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, doc))


def test_an_exponential_histograms_slots_follow_its_scale_parameter(tmp_path: Path) -> None:
    doc = EXP.replace("MAX", "3").replace("SIZE", "slots * 2")
    prog = load_manifest(
        _write(tmp_path, doc.replace("LAYOUT", "scale: scale, min_log2: 3, max_log2: 8"))
    )
    m = prog.maps["m"]
    for scale, slots in ((0, 10), (1, 12), (2, 22), (3, 42)):
        layout = m.to_proto({"scale": scale})
        assert (layout.max_entries, layout.histogram.slots) == (2 * slots, slots)
        assert layout.histogram.index_offset == (3 << scale if scale else 0)


METRIC = DERIVED.replace(
    "attributes: [{field: cid, name: container.id, resource: true}]",
    "attributes:\n      - {field: cid, name: container.id, resource: true}",
)


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        # a missing key in a metric's attribute (a bare KeyError before)
        (
            METRIC.replace("{field: cid, name: container.id,", "{field: cid,"),
            r"/prog/manifest\.yaml\.default_metrics\[0\] \(x\)\.attributes\[0\]: "
            r"missing required key 'name'$",
        ),
        (
            METRIC.replace("    type: sum\n", ""),
            r"\.yaml\.default_metrics\[0\] \(x\): missing required key 'type'$",
        ),
        (
            GOOD.replace("max_entries: 8", "max_entires: 8"),
            r"\.yaml\.maps\[0\] \(m\): unknown key 'max_entires'; valid keys: name, max_entries, "
            r"key, value, description, histogram, dropped_counter, enabled_by, pid_field, "
            r"written_keys, write_behind, derived$",
        ),
        (GOOD + "extra: 1\n", r"\.yaml: unknown key 'extra'; valid keys: name, hooks, maps, "),
        (
            GOOD.replace("max_entries: 8", "max_entries: 8.5"),
            r"\.yaml\.maps\[0\] \(m\)\.max_entries: Expected `int \| str`, got `float`$",
        ),
        (
            GOOD.replace("value: [{name: v, type: u64}]", "value: {name: v, type: u64}"),
            r"\.yaml\.maps\[0\] \(m\)\.value: Expected `array`, got `object`$",
        ),
        (
            GOOD.replace("{name: k, type: u32}", "{name: k, type: u32, decoders: [7]}"),
            r"\.maps\[0\] \(m\)\.key\[0\] \(k\)\.decoders\[0\]: "
            r"Expected `str \| object`, got `int`$",
        ),
        (
            METRIC.replace("type: sum", "type: counter"),
            r"\.default_metrics\[0\] \(x\)\.type: 'counter' is not sum, gauge or histogram$",
        ),
        (
            METRIC.replace("map: m\n", "map: n\n"),
            r"\.default_metrics\[0\] \(x\)\.map: 'n' is not a map of prog; its maps: m$",
        ),
        (
            GOOD.replace("max_entries: 8", "max_entries: 8\n    enabled_by: verbose"),
            r"\.maps\[0\] \(m\)\.enabled_by: 'verbose' is not a bool parameter of the program, "
            r"or one after '!'; "
            r"its bool parameters: none$",
        ),
        ("- a list, not a mapping\n", r"/prog/manifest\.yaml: Expected `object`, got `array`$"),
        ("name: [prog\n", r"/prog/manifest\.yaml: not valid YAML: "),
    ],
)
def test_every_manifest_error_names_its_path(tmp_path: Path, broken: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, broken))


SIZED = GOOD.replace(
    "hooks: [tracepoint:a:b]\n",
    """hooks: [tracepoint:a:b]
parameters:
  - {name: n, type: int, default: 4, min: 1, max: 64, define: N}
  - {name: verbose, type: bool, default: true, define: VERBOSE}
""",
)


def test_map_sizes_are_products_of_numbers_and_int_parameters(tmp_path: Path) -> None:
    prog = load_manifest(_write(tmp_path, SIZED.replace("max_entries: 8", "max_entries: n * 2")))
    assert prog.maps["m"].size.factors == ("n", 2)
    assert prog.to_proto().maps[0].max_entries == 8


@pytest.mark.parametrize(
    ("size", "error"),
    [
        (
            "verbose * 2",
            r"\.maps\[0\] \(m\)\.max_entries: 'verbose' is neither a number above 0 nor an int "
            r"parameter of the program \(n\); write a number, a parameter or a product",
        ),
        ("0", r"'0' is neither a number above 0"),
        ("n + 1", r"'n \+ 1' is neither a number above 0"),
    ],
)
def test_bad_map_sizes(tmp_path: Path, size: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, SIZED.replace("max_entries: 8", f"max_entries: {size}")))
