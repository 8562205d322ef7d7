"""Manifest decoding: ``<dir>/<program>/manifest.yaml`` files to catalog programs.

Decoding has two passes. msgspec converts the YAML document to the typed
schema below: required keys, types, and no unknown keys (a typo such as
``dropped_countr`` is an error, not a silently ignored key). Then the checks
that relate one part to another (a histogram's slot field is a key field, a
metric's map exists, a decoder is known, ...) build the catalog's model.

Every error is a CatalogError naming the file and the path in it, with list
entries named where they have a name, and says what would be valid:
``.../manifest.yaml.maps[0] (execs).key[1]: missing required key 'type'``.
"""

from __future__ import annotations

import re
import string
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ebpf_sidecar import decoders
from ebpf_sidecar.catalog import (
    C_TYPES,
    EXPONENTIAL_SCALES,
    SEVERITIES,
    SLOT_CONVENTIONS,
    SLOTS,
    Catalog,
    CatalogError,
    DerivedSpec,
    EventField,
    EventSpec,
    FieldSpec,
    HistogramSpec,
    MapSize,
    MapSpec,
    ParameterSpec,
    ProfileSpec,
    Program,
    RequestError,
    enabling_parameter,
)
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

MANIFEST = "manifest.yaml"
# A catalog directory's folder of headers its programs share (ebpfreceiver.h
# in the built-in catalog); every program compiles with all of them on its
# include path, so programs of --programs-dir can use the built-in helpers.
INCLUDE_FOLDER = "include"


# --- the schema: what a manifest may contain -----------------------------------------


class _Schema(msgspec.Struct, forbid_unknown_fields=True):
    """A manifest mapping: unknown keys are errors."""


# A decoder entry: a name, or a one-key mapping of a name to its options.
DecoderEntry = str | dict[str, Any]


class FieldDoc(_Schema):
    name: str
    type: str
    decoders: list[DecoderEntry] = []
    unit: str = ""
    attribute: str = ""  # default: the field's name
    description: str = ""


class DerivedDoc(_Schema):
    name: str
    from_: str = msgspec.field(name="from")
    decoders: list[DecoderEntry] = []
    attribute: str = ""  # default: the field's name
    description: str = ""


class HistogramDoc(_Schema):
    slot_field: str
    count_field: str
    unit: str
    slots: int = 0  # every convention but exponential
    sum_field: str = ""
    convention: str = "log2_bcc"
    linear_width: float = 0.0
    bounds: list[float] = []
    # exponential: a number, or an int parameter (histogram_scale)
    scale: int | str = 0
    min_log2: int = 0
    max_log2: int = 0


class MapDoc(_Schema):
    name: str
    max_entries: int | str  # a number, or int parameters and numbers joined by *
    key: list[FieldDoc]
    value: list[FieldDoc]
    description: str = ""
    histogram: HistogramDoc | None = None
    dropped_counter: str = ""
    enabled_by: str = ""
    pid_field: str = ""
    written_keys: str = ""
    write_behind: str = ""
    derived: list[DerivedDoc] = []


class ParameterDoc(_Schema):
    name: str
    type: str
    default: bool | int | str
    define: str
    description: str = ""
    allowed: list[str] = []
    min: int = 0
    max: int = 0


class AttributeDoc(_Schema):
    field: str
    name: str
    resource: bool = False


class ValueFieldDoc(_Schema):
    field: str
    value: str


class ValueAttributeDoc(_Schema):
    name: str
    fields: list[ValueFieldDoc]


class MetricDoc(_Schema):
    name: str
    map: str
    type: str
    unit: str = ""
    description: str = ""
    value_field: str = ""
    attributes: list[AttributeDoc] = []
    value_attribute: ValueAttributeDoc | None = None


class ProfileDoc(_Schema):
    counts_map: str
    count_field: str
    stack_map: str
    user_stack_field: str
    kernel_stack_field: str
    frequency_parameter: str


class EventFieldDoc(_Schema):
    name: str
    type: str
    decoders: list[DecoderEntry] = []
    unit: str = ""
    attribute: str = ""  # default: the field's name
    description: str = ""
    resource: bool = False
    omit_zero: bool = False
    export: bool = True


class EventDerivedDoc(_Schema):
    name: str
    from_: str = msgspec.field(name="from")
    decoders: list[DecoderEntry] = []
    attribute: str = ""
    description: str = ""
    resource: bool = False
    omit_zero: bool = False


class EventDoc(_Schema):
    name: str
    ring_buffer: str
    time_field: str
    body: list[str]
    fields: list[EventFieldDoc]
    severity: str = "info"
    dropped_counter: str = ""
    description: str = ""
    derived: list[EventDerivedDoc] = []


class ManifestDoc(_Schema):
    name: str
    hooks: list[str]
    maps: list[MapDoc]
    description: str = ""
    source: str = ""  # default: <name>.c
    parameters: list[ParameterDoc] = []
    default_metrics: list[MetricDoc] = []
    # "struct.member" offsets the program needs from the running kernel's BTF
    btf_offsets: list[str] = []
    # enumerator values the program needs from the running kernel's BTF
    btf_enums: list[str] = []
    events: list[EventDoc] = []
    profile: ProfileDoc | None = None


# --- loading ---------------------------------------------------------------------------


def load_catalog(directories: Iterable[Path]) -> Catalog:
    """Every ``*/manifest.yaml`` under the directories, and their include folders."""
    dirs = [Path(d) for d in directories]
    manifests = [m for d in dirs for m in sorted(d.glob(f"*/{MANIFEST}"))]
    includes = [d / INCLUDE_FOLDER for d in dirs if (d / INCLUDE_FOLDER).is_dir()]
    return Catalog((load_manifest(m) for m in manifests), includes)


def load_manifest(path: Path) -> Program:
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CatalogError(f"{where}: not valid YAML: {e}") from None
    try:
        doc = msgspec.convert(raw, ManifestDoc)
    except msgspec.ValidationError as e:
        raise _schema_error(e, raw, where) from None
    return _program(doc, path)


# --- schema errors with their path ---------------------------------------------------

# msgspec ends a message with the path: "... - at `$.maps[0].key`", or
# "... - at `key` in `$.x`" for a mapping's key.
_AT = re.compile(r" - at (?:`key` in )?`\$([^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`$")


def _schema_error(e: msgspec.ValidationError, raw: Any, file: str) -> CatalogError:
    """msgspec's error, with its path named as the rest of the catalog names paths."""
    message = str(e)
    found = _AT.search(message)
    steps: list[str | int] = []
    if found:
        message = message[: found.start()]
        steps = [int(i) if i else name for name, i in _STEP.findall(found.group(1))]
    if m := _MISSING.match(message):
        message = f"missing required key {m.group(1)!r}"
    elif m := _UNKNOWN.match(message):
        valid = ", ".join(_keys_at(steps))
        message = f"unknown key {m.group(1)!r}; valid keys: {valid}"
    return CatalogError(f"{file}{_named_path(raw, steps)}: {message}")


def _named_path(raw: Any, steps: Sequence[str | int]) -> str:
    """``.maps[0] (execs).key[1]``: list entries with a name show it."""
    out, node = "", raw
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
            node = node[step] if isinstance(node, list) and step < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        else:
            out += f".{step}"
            node = node.get(step) if isinstance(node, Mapping) else None
    return out


def _keys_at(steps: Sequence[str | int]) -> list[str]:
    """The keys the schema allows for the mapping at ``steps``."""
    t: Any = ManifestDoc
    for step in steps:
        t = _struct_in(t)
        if t is None:
            return []
        if isinstance(step, int):
            continue  # a list's element type is unwrapped by _struct_in
        t = next((f.type for f in msgspec.structs.fields(t) if f.encode_name == step), None)
    struct = _struct_in(t)
    return [f.encode_name for f in msgspec.structs.fields(struct)] if struct else []


def _struct_in(t: Any) -> Any:
    """The schema struct in a type: itself, or inside list[...] or ... | None."""
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return t
    for arg in typing.get_args(t):
        found = _struct_in(arg)
        if found is not None:
            return found
    return None


# --- from the schema to the catalog's model -------------------------------------------


def _program(doc: ManifestDoc, path: Path) -> Program:
    where = str(path)
    if doc.name != path.parent.name:
        raise CatalogError(f"{where}.name: {doc.name!r} must match its folder {path.parent.name!r}")
    source = path.parent / (doc.source or f"{doc.name}.c")
    if not source.is_file():
        raise CatalogError(f"{where}.source: {source} does not exist")
    params: dict[str, ParameterSpec] = {}
    for i, p in enumerate(doc.parameters):
        pspec = _parameter(p, f"{where}.parameters[{i}] ({p.name})")
        params[pspec.name] = pspec
    maps: dict[str, MapSpec] = {}
    for i, m in enumerate(doc.maps):
        spec = _map(m, params, f"{where}.maps[{i}] ({m.name})")
        maps[spec.name] = spec
    for i, spec in enumerate(maps.values()):
        enabling = enabling_parameter(spec.enabled_by)[0]
        if spec.enabled_by and (enabling not in params or params[enabling].type != "bool"):
            bools = ", ".join(n for n, p in params.items() if p.type == "bool") or "none"
            raise CatalogError(
                f"{where}.maps[{i}] ({spec.name}).enabled_by: {spec.enabled_by!r} is not "
                f"a bool parameter of the program, or one after '!'; its bool parameters: {bools}"
            )
    metrics = tuple(
        _metric(m, doc.name, maps, f"{where}.default_metrics[{i}] ({m.name})")
        for i, m in enumerate(doc.default_metrics)
    )
    for i, offset in enumerate(doc.btf_offsets):
        if not re.fullmatch(r"[A-Za-z_]\w*\.[A-Za-z_]\w*", offset):
            raise CatalogError(f"{where}.btf_offsets[{i}]: {offset!r} is not struct.member")
    for i, enumerator in enumerate(doc.btf_enums):
        if not re.fullmatch(r"[A-Za-z_]\w*", enumerator):
            raise CatalogError(f"{where}.btf_enums[{i}]: {enumerator!r} is not an enumerator name")
    events: dict[str, EventSpec] = {}
    for i, e in enumerate(doc.events):
        event = _event(e, f"{where}.events[{i}] ({e.name})")
        if event.name in events:
            raise CatalogError(f"{where}.events[{i}].name: {e.name!r} is declared twice")
        events[event.name] = event
    profile = _profile(doc.profile, maps, params, f"{where}.profile") if doc.profile else None
    for i, hook in enumerate(doc.hooks):
        kind, _, perf_event = hook.partition(":")
        if kind == "perf_event" and (perf_event not in PERF_EVENTS or profile is None):
            raise CatalogError(
                f"{where}.hooks[{i}]: {hook!r}: perf_event hooks are "
                f"{', '.join('perf_event:' + e for e in PERF_EVENTS)}, and need a profile "
                "section naming the frequency parameter"
            )
    return Program(
        name=doc.name,
        description=doc.description.strip(),
        source=source,
        hooks=tuple(doc.hooks),
        btf_offsets=tuple(doc.btf_offsets),
        btf_enums=tuple(doc.btf_enums),
        maps=maps,
        parameters=params,
        default_metrics=metrics,
        events=events,
        profile=profile,
    )


# perf_event hooks: the software events the sidecar attaches on every CPU.
PERF_EVENTS = ("cpu-clock",)


def _profile(
    doc: ProfileDoc,
    maps: Mapping[str, MapSpec],
    params: Mapping[str, ParameterSpec],
    where: str,
) -> ProfileSpec:
    if doc.counts_map not in maps:
        raise CatalogError(
            f"{where}.counts_map: {doc.counts_map!r} is no map; maps: {', '.join(maps)}"
        )
    spec = maps[doc.counts_map]
    keys = {f.name: f for f in spec.key}
    for name, given in (
        ("user_stack_field", doc.user_stack_field),
        ("kernel_stack_field", doc.kernel_stack_field),
    ):
        if given not in keys or keys[given].c_type != "s32":
            raise CatalogError(
                f"{where}.{name}: {given!r} is no s32 key field of {doc.counts_map} "
                "(a stack id, below 0 for none)"
            )
    if doc.count_field not in [f.name for f in spec.value]:
        raise CatalogError(f"{where}.count_field: {doc.count_field!r} is no value field")
    if not spec.pid_field:
        raise CatalogError(f"{where}.counts_map: {doc.counts_map} needs a pid_field")
    freq = params.get(doc.frequency_parameter)
    if freq is None or freq.type != "int" or freq.min < 1:
        raise CatalogError(
            f"{where}.frequency_parameter: {doc.frequency_parameter!r} is no int "
            "parameter with a min of at least 1"
        )
    return ProfileSpec(
        counts_map=doc.counts_map,
        count_field=doc.count_field,
        stack_map=doc.stack_map,
        user_stack_field=doc.user_stack_field,
        kernel_stack_field=doc.kernel_stack_field,
        frequency_parameter=doc.frequency_parameter,
    )


def _event(doc: EventDoc, where: str) -> EventSpec:
    if doc.severity not in SEVERITIES:
        raise CatalogError(
            f"{where}.severity: {doc.severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    fields = tuple(
        EventField(
            _field(
                FieldDoc(f.name, f.type, f.decoders, f.unit, f.attribute, f.description),
                f"{where}.fields[{i}] ({f.name})",
            ),
            resource=f.resource,
            omit_zero=f.omit_zero,
            export=f.export,
        )
        for i, f in enumerate(doc.fields)
    )
    by_name = {f.name: f.field for f in fields if isinstance(f.field, FieldSpec)}
    derived = tuple(
        EventField(
            _derived(
                DerivedDoc(d.name, d.from_, d.decoders, d.attribute, d.description),
                by_name,
                f"{where}.derived[{i}] ({d.name})",
            ),
            resource=d.resource,
            omit_zero=d.omit_zero,
        )
        for i, d in enumerate(doc.derived)
    )
    names = [f.name for f in (*fields, *derived)]
    if doc.time_field not in by_name or by_name[doc.time_field].c_type != "u64":
        raise CatalogError(
            f"{where}.time_field: {doc.time_field!r} is no u64 field (bpf_ktime_get_ns()); "
            f"fields: {', '.join(by_name)}"
        )
    if not doc.body:
        raise CatalogError(f"{where}.body: give at least one template")
    for i, template in enumerate(doc.body):
        try:
            used = template_fields(template)
        except ValueError as e:
            raise CatalogError(f"{where}.body[{i}]: {e}") from None
        unknown = [n for n in used if n not in names]
        if unknown:
            raise CatalogError(
                f"{where}.body[{i}]: {', '.join(map(repr, unknown))} are no fields of the "
                f"event; its fields: {', '.join(names)}"
            )
    return EventSpec(
        name=doc.name,
        ring_buffer=doc.ring_buffer,
        dropped_counter=doc.dropped_counter,
        severity=doc.severity,
        time_field=doc.time_field,
        description=doc.description.strip(),
        body=tuple(" ".join(t.split()) for t in doc.body),
        fields=fields,
        derived=derived,
    )


def template_fields(template: str) -> list[str]:
    """The field names a body template refers to; ValueError for a bad template."""
    out = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f"{{{name}}} is not a plain field name")
        out.append(name)
    return out


def _decoders(entries: Sequence[DecoderEntry], where: str) -> tuple[decoders.Decoder, ...]:
    chain = []
    for i, entry in enumerate(entries):
        try:
            chain.append(decoders.resolve(entry))
        except decoders.DecoderSpecError as e:
            raise CatalogError(f"{where}.decoders[{i}]: {e}") from None
    return tuple(chain)


def _field(doc: FieldDoc, where: str) -> FieldSpec:
    if not C_TYPES.match(doc.type):
        raise CatalogError(f"{where}.type: {doc.type!r} is not u8..u64, s8..s64 or char[N]")
    return FieldSpec(
        name=doc.name,
        c_type=doc.type,
        decoders=_decoders(doc.decoders, where),
        unit=doc.unit,
        attribute=doc.attribute or doc.name,
        description=doc.description,
    )


def _derived(doc: DerivedDoc, key: Mapping[str, FieldSpec], where: str) -> DerivedSpec:
    if doc.from_ not in key:
        raise CatalogError(
            f"{where}.from: {doc.from_!r} is no key field of the map; key fields: {', '.join(key)}"
        )
    chain = _decoders(doc.decoders, where)
    if not chain:
        raise CatalogError(f"{where}.decoders: a derived field needs at least one decoder")
    return DerivedSpec(
        name=doc.name,
        source=key[doc.from_],
        decoders=chain,
        attribute=doc.attribute or doc.name,
        description=doc.description,
    )


def _size(
    doc: int | str,
    params: Mapping[str, ParameterSpec],
    hist: HistogramSpec | None,
    where: str,
) -> MapSize:
    ints = [name for name, p in params.items() if p.type == "int"]
    factors: list[int | str] = []
    for part in str(doc).split("*"):
        part = part.strip()
        if part.isdigit() and int(part) > 0:
            factors.append(int(part))
        elif (part == SLOTS and hist is not None) or part in ints:
            factors.append(part)
        else:
            raise CatalogError(
                f"{where}: {part!r} is neither a number above 0 nor an int parameter of the "
                f"program ({', '.join(ints) or 'none'}); write a number, a parameter or a "
                "product of them, e.g. max_devices * 2 (and, for a histogram map, slots)"
            )
    if hist is not None and hist.convention == "exponential" and SLOTS not in factors:
        raise CatalogError(
            f"{where}: an exponential histogram's slots follow its scale; write its size "
            f"with slots, e.g. slots, or max_cgroups * slots"
        )
    return MapSize(tuple(factors))


def _map(doc: MapDoc, params: Mapping[str, ParameterSpec], where: str) -> MapSpec:
    key = tuple(_field(f, f"{where}.key[{i}] ({f.name})") for i, f in enumerate(doc.key))
    value = tuple(_field(f, f"{where}.value[{i}] ({f.name})") for i, f in enumerate(doc.value))
    hist = (
        _histogram(doc.histogram, key, value, params, f"{where}.histogram")
        if doc.histogram
        else None
    )
    by_name = {f.name: f for f in key}
    derived: list[DerivedSpec] = []
    for i, d in enumerate(doc.derived):
        if d.name in by_name or d.name in {x.name for x in derived}:
            raise CatalogError(
                f"{where}.derived[{i}].name: {d.name!r} is already a key field of the map"
            )
        derived.append(_derived(d, by_name, f"{where}.derived[{i}] ({d.name})"))
    integer_keys = [f.name for f in key if not f.c_type.startswith("char")]
    if doc.pid_field and doc.pid_field not in integer_keys:
        raise CatalogError(
            f"{where}.pid_field: {doc.pid_field!r} is no integer key field; "
            f"integer key fields: {', '.join(integer_keys) or 'none'}"
        )
    return MapSpec(
        name=doc.name,
        size=_size(doc.max_entries, params, hist, f"{where}.max_entries"),
        key=key,
        value=value,
        description=doc.description,
        histogram=hist,
        dropped_counter=doc.dropped_counter,
        enabled_by=doc.enabled_by,
        pid_field=doc.pid_field,
        written_keys=doc.written_keys,
        write_behind=doc.write_behind,
        derived=tuple(derived),
    )


def _histogram(
    doc: HistogramDoc,
    key: Sequence[FieldSpec],
    value: Sequence[FieldSpec],
    params: Mapping[str, ParameterSpec],
    where: str,
) -> HistogramSpec:
    if doc.convention not in SLOT_CONVENTIONS:
        raise CatalogError(
            f"{where}.convention: {doc.convention!r} is not one of {', '.join(SLOT_CONVENTIONS)}"
        )
    if doc.convention == "exponential":
        _exponential(doc, params, where)
    elif doc.slots < 1:
        raise CatalogError(f"{where}.slots: {doc.slots} must be at least 1")
    if doc.convention == "linear" and doc.linear_width <= 0:
        raise CatalogError(f"{where}.linear_width: a linear histogram needs a width above 0")
    increasing = doc.bounds == sorted(set(doc.bounds))
    if doc.convention == "fixed" and (len(doc.bounds) != doc.slots - 1 or not increasing):
        raise CatalogError(
            f"{where}.bounds: a fixed histogram of {doc.slots} slots needs {doc.slots - 1} "
            "strictly increasing bounds (the last slot holds everything above)"
        )
    key_names = [f.name for f in key]
    if doc.slot_field not in key_names:
        raise CatalogError(
            f"{where}.slot_field: {doc.slot_field!r} is no key field; "
            f"key fields: {', '.join(key_names)}"
        )
    value_names = [f.name for f in value]
    for name, given in (("count_field", doc.count_field), ("sum_field", doc.sum_field)):
        if given and given not in value_names:
            raise CatalogError(
                f"{where}.{name}: {given!r} is no value field; "
                f"value fields: {', '.join(value_names)}"
            )
    return HistogramSpec(
        slot_field=doc.slot_field,
        slots=doc.slots,
        count_field=doc.count_field,
        sum_field=doc.sum_field,
        unit=doc.unit,
        convention=doc.convention,
        linear_width=doc.linear_width,
        bounds=tuple(doc.bounds),
        scale=doc.scale,
        min_log2=doc.min_log2,
        max_log2=doc.max_log2,
    )


def _exponential(doc: HistogramDoc, params: Mapping[str, ParameterSpec], where: str) -> None:
    """An exponential histogram's scale, range and (absent) slot count."""
    lo, hi = EXPONENTIAL_SCALES[0], EXPONENTIAL_SCALES[-1]
    if isinstance(doc.scale, str):
        p = params.get(doc.scale)
        if p is None or p.type != "int" or p.min < lo or p.max > hi:
            raise CatalogError(
                f"{where}.scale: {doc.scale!r} is no int parameter of the program within "
                f"{lo}..{hi} (the scales ebpfreceiver.h's exp_slot() computes)"
            )
    elif doc.scale not in EXPONENTIAL_SCALES:
        raise CatalogError(f"{where}.scale: {doc.scale} is not one of {lo}..{hi}")
    if not 0 <= doc.min_log2 < doc.max_log2 <= 63:
        raise CatalogError(
            f"{where}.max_log2: the buckets span 2^min_log2 .. 2^max_log2 units, "
            f"0 <= min_log2 < max_log2 <= 63 (min_log2 {doc.min_log2}, max_log2 {doc.max_log2})"
        )
    if doc.slots:
        raise CatalogError(
            f"{where}.slots: an exponential histogram's slots follow from scale, min_log2 and "
            "max_log2; remove slots"
        )


def _parameter(doc: ParameterDoc, where: str) -> ParameterSpec:
    if doc.type not in ("int", "bool", "enum"):
        raise CatalogError(f"{where}.type: {doc.type!r} is not int, bool or enum")
    # YAML reads `default: true` as a bool and `default: 64` as an int.
    default = str(doc.default).lower() if isinstance(doc.default, bool) else str(doc.default)
    spec = ParameterSpec(
        name=doc.name,
        type=doc.type,
        default=default,
        define=doc.define,
        description=doc.description,
        allowed=tuple(doc.allowed),
        min=doc.min,
        max=doc.max,
    )
    try:
        spec.number(spec.default)  # the default must be valid
    except RequestError as e:
        raise CatalogError(f"{where}.default: {e}") from None
    return spec


_METRIC_TYPES = {
    "sum": pb.METRIC_TYPE_SUM,
    "gauge": pb.METRIC_TYPE_GAUGE,
    "histogram": pb.METRIC_TYPE_HISTOGRAM,
}


def _metric(
    doc: MetricDoc, program: str, maps: Mapping[str, MapSpec], where: str
) -> pb.MetricBinding:
    if doc.map not in maps:
        raise CatalogError(
            f"{where}.map: {doc.map!r} is not a map of {program}; its maps: {', '.join(maps)}"
        )
    if doc.type not in _METRIC_TYPES:
        raise CatalogError(f"{where}.type: {doc.type!r} is not sum, gauge or histogram")
    spec = maps[doc.map]
    key_names = spec.key_names
    for i, a in enumerate(doc.attributes):
        if a.field not in key_names:
            raise CatalogError(
                f"{where}.attributes[{i}].field: {a.field!r} is no key field; "
                f"key fields: {', '.join(key_names)}"
            )
    value_names = [f.name for f in spec.value]
    value_attribute = doc.value_attribute
    for i, vf in enumerate(value_attribute.fields if value_attribute else ()):
        if vf.field not in value_names:
            raise CatalogError(
                f"{where}.value_attribute.fields[{i}].field: {vf.field!r} is no value field; "
                f"value fields: {', '.join(value_names)}"
            )
    return pb.MetricBinding(
        name=doc.name,
        program=program,
        map=doc.map,
        type=_METRIC_TYPES[doc.type],
        unit=doc.unit,
        description=doc.description,
        value_field=doc.value_field,
        attributes=[
            pb.AttributeBinding(field=a.field, name=a.name, resource=a.resource)
            for a in doc.attributes
        ],
        value_attribute=value_attribute.name if value_attribute else "",
        value_fields=[
            pb.ValueFieldBinding(field=vf.field, attribute_value=vf.value)
            for vf in (value_attribute.fields if value_attribute else ())
        ],
    )
