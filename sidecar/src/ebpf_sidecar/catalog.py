"""The program catalog: BCC sources plus their manifests.

A manifest (``bpf/<program>/manifest.yaml``) says which hooks a program uses,
the layout of its maps (key and value fields, in struct order), how keys are
decoded, which typed parameters it takes, and the metrics it emits by default.
Programs are only ever referred to by name; source never comes over the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

_C_TYPES = re.compile(r"^(u8|u16|u32|u64|s8|s16|s32|s64|char\[(\d+)\])$")
_INT_SIZES = {"8": 1, "16": 2, "32": 4, "64": 8}


class CatalogError(ValueError):
    """A manifest is malformed; the message names the file and the field."""


class RequestError(ValueError):
    """A request names something the catalog does not have, or a bad value."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    c_type: str
    decoders: tuple[decoders.Decoder, ...]
    unit: str
    attribute: str
    description: str

    @property
    def size(self) -> int:
        m = _C_TYPES.match(self.c_type)
        assert m is not None
        if m.group(2):
            return int(m.group(2))
        return _INT_SIZES[self.c_type[1:]]

    @property
    def signed(self) -> bool:
        return self.c_type.startswith("s")

    @property
    def raw_type(self) -> pb.FieldType:
        """The wire type of the undecoded value."""
        if self.c_type.startswith("char"):
            return pb.FIELD_TYPE_STRING
        return pb.FIELD_TYPE_INT if self.signed else pb.FIELD_TYPE_UINT

    @property
    def wire_type(self) -> pb.FieldType:
        return decoders.output_type(self.decoders, self.raw_type)

    def to_proto(self) -> pb.Field:
        return pb.Field(
            name=self.name,
            type=self.wire_type,
            size=self.size,
            decoders=[d.spec for d in self.decoders],
            unit=self.unit,
            attribute=self.attribute,
            description=self.description,
        )


@dataclass(frozen=True)
class DerivedSpec:
    """A key field computed by the sidecar from another key field's raw value.

    ``decoders`` run on the raw value of key field ``source`` (not on its
    decoded value), e.g. a cgroup id through ``cgroup`` then ``container_id``.
    The field has no bytes in the BPF map; it travels as one more key column.
    """

    name: str
    source: FieldSpec
    decoders: tuple[decoders.Decoder, ...]
    attribute: str
    description: str

    @property
    def wire_type(self) -> pb.FieldType:
        return decoders.output_type(self.decoders, self.source.raw_type)

    def to_proto(self) -> pb.Field:
        return pb.Field(
            name=self.name,
            type=self.wire_type,
            size=0,
            decoders=[d.spec for d in self.decoders],
            attribute=self.attribute,
            description=self.description,
            derived_from=self.source.name,
        )


@dataclass(frozen=True)
class HistogramSpec:
    slot_field: str
    slots: int
    count_field: str
    sum_field: str
    unit: str
    convention: str = "log2_bcc"
    linear_width: float = 0.0
    bounds: tuple[float, ...] = ()

    def to_proto(self) -> pb.HistogramLayout:
        return pb.HistogramLayout(
            slot_field=self.slot_field,
            convention=SLOT_CONVENTIONS[self.convention],
            slots=self.slots,
            count_field=self.count_field,
            sum_field=self.sum_field,
            unit=self.unit,
            linear_width=self.linear_width,
            bounds=list(self.bounds),
        )


# Manifest names of the slot conventions (see SlotConvention in the proto).
SLOT_CONVENTIONS = {
    "log2_bcc": pb.SLOT_CONVENTION_LOG2_BCC,
    "log2_exponent": pb.SLOT_CONVENTION_LOG2_EXPONENT,
    "linear": pb.SLOT_CONVENTION_LINEAR,
    "fixed": pb.SLOT_CONVENTION_FIXED,
}


@dataclass(frozen=True)
class MapSpec:
    name: str
    kind: str
    max_entries: int
    key: tuple[FieldSpec, ...]
    value: tuple[FieldSpec, ...]
    description: str
    histogram: HistogramSpec | None = None
    dropped_counter: str = ""
    # A bool parameter that compiles this map (and its hook) in or out.
    enabled_by: str = ""
    # A key field holding a process id (tgid): entries of processes that have
    # exited are deleted once their final values have been exported.
    pid_field: str = ""
    # Key fields the sidecar computes from other key fields (after ``key``).
    derived: tuple[DerivedSpec, ...] = ()

    @property
    def key_names(self) -> list[str]:
        """Every key column of a snapshot: the map's key fields, then derived ones."""
        return [f.name for f in self.key] + [d.name for d in self.derived]

    def to_proto(self) -> pb.Map:
        m = pb.Map(
            name=self.name,
            kind=pb.MAP_KIND_HISTOGRAM if self.histogram else pb.MAP_KIND_COUNTERS,
            max_entries=self.max_entries,
            key_fields=[f.to_proto() for f in self.key] + [d.to_proto() for d in self.derived],
            value_fields=[f.to_proto() for f in self.value],
            description=self.description,
            enabled_by=self.enabled_by,
        )
        if self.histogram:
            m.histogram.CopyFrom(self.histogram.to_proto())
        return m


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str
    default: str
    define: str
    description: str
    allowed: tuple[str, ...] = ()
    min: int = 0
    max: int = 0

    def to_proto(self) -> pb.Parameter:
        return pb.Parameter(
            name=self.name,
            type=self.type,
            default=self.default,
            allowed=list(self.allowed),
            min=self.min,
            max=self.max,
            description=self.description,
        )

    def compile_define(self, text: str, where: str) -> str:
        """Validate a text value and turn it into a -D flag (never raw flags)."""
        if self.type == "int":
            try:
                value = int(text, 0)
            except ValueError:
                raise RequestError(f"{where}: {text!r} is not an integer") from None
            if not self.min <= value <= self.max:
                raise RequestError(
                    f"{where}: {value} is out of range; use {self.min}..{self.max}"
                )
            return f"-D{self.define}={value}"
        if self.type == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise RequestError(f"{where}: {text!r} is not a boolean; use true or false")
            return f"-D{self.define}={1 if lowered == 'true' else 0}"
        # enum: the index of the value, with one define per allowed name too
        if text not in self.allowed:
            raise RequestError(f"{where}: {text!r} is not one of {', '.join(self.allowed)}")
        return f"-D{self.define}={self.allowed.index(text)}"


@dataclass(frozen=True)
class Program:
    name: str
    description: str
    source: Path
    hooks: tuple[str, ...]
    maps: Mapping[str, MapSpec]
    parameters: Mapping[str, ParameterSpec]
    default_metrics: tuple[pb.MetricBinding, ...] = field(default=())
    # "struct.member" offsets the program needs, read from the running
    # kernel's BTF and passed as -DBTF_OFFSET_<STRUCT>_<MEMBER>=<bytes>.
    btf_offsets: tuple[str, ...] = ()

    def to_proto(self) -> pb.Program:
        return pb.Program(
            name=self.name,
            description=self.description,
            hooks=list(self.hooks),
            maps=[m.to_proto() for m in self.maps.values()],
            parameters=[p.to_proto() for p in self.parameters.values()],
            default_metrics=list(self.default_metrics),
        )

    def map_enabled(self, spec: MapSpec, values: Mapping[str, str]) -> bool:
        if not spec.enabled_by:
            return True
        param = self.parameters[spec.enabled_by]
        return values.get(param.name, param.default).strip().lower() == "true"

    def cflags(self, values: Mapping[str, str]) -> list[str]:
        """Compile-time defines for validated parameter values (defaults filled in)."""
        for name in values:
            if name not in self.parameters:
                valid = ", ".join(self.parameters) or "none"
                raise RequestError(
                    f"programs[{self.name}].parameters: unknown parameter {name!r}; "
                    f"valid parameters: {valid}"
                )
        return [
            spec.compile_define(
                values.get(name, spec.default), f"programs[{self.name}].parameters.{name}"
            )
            for name, spec in sorted(self.parameters.items())
        ]


# A catalog directory's folder of headers its programs share (ebpfreceiver.h
# in the built-in catalog); every program compiles with all of them on its
# include path, so programs of --programs-dir can use the built-in helpers.
INCLUDE_FOLDER = "include"


class Catalog:
    def __init__(self, programs: Iterable[Program], include_dirs: Iterable[Path] = ()) -> None:
        self.include_dirs = tuple(include_dirs)
        self.programs: dict[str, Program] = {}
        for p in programs:
            if p.name in self.programs:
                raise CatalogError(
                    f"program {p.name!r} is defined twice "
                    f"({self.programs[p.name].source} and {p.source})"
                )
            self.programs[p.name] = p

    @classmethod
    def load(cls, directories: Iterable[Path]) -> Catalog:
        directories = [Path(d) for d in directories]
        manifests = [m for d in directories for m in sorted(d.glob("*/manifest.yaml"))]
        includes = [d / INCLUDE_FOLDER for d in directories if (d / INCLUDE_FOLDER).is_dir()]
        return cls((load_manifest(m) for m in manifests), includes)

    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise RequestError(
                f"unknown program {name!r}; valid programs: {', '.join(sorted(self.programs))}"
            ) from None

    def map(self, program: str, name: str) -> MapSpec:
        p = self.program(program)
        try:
            return p.maps[name]
        except KeyError:
            raise RequestError(
                f"program {program!r} has no map {name!r}; its maps: {', '.join(p.maps)}"
            ) from None


# --- manifest parsing ----------------------------------------------------------


def _req(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise CatalogError(f"{where}: missing required key {key!r}")
    return doc[key]


def _decoders(doc: Mapping[str, Any], where: str) -> tuple[decoders.Decoder, ...]:
    entries = doc.get("decoders", ()) or ()
    if not isinstance(entries, list | tuple):
        raise CatalogError(f"{where}.decoders: must be a list, not {entries!r}")
    chain = []
    for i, entry in enumerate(entries):
        try:
            chain.append(decoders.resolve(entry))
        except decoders.DecoderSpecError as e:
            raise CatalogError(f"{where}.decoders[{i}]: {e}") from None
    return tuple(chain)


def _field(doc: Mapping[str, Any], where: str) -> FieldSpec:
    name = str(_req(doc, "name", where))
    c_type = str(_req(doc, "type", f"{where} ({name})"))
    if not _C_TYPES.match(c_type):
        raise CatalogError(f"{where}.type: {c_type!r} is not u8..u64, s8..s64 or char[N]")
    return FieldSpec(
        name=name,
        c_type=c_type,
        decoders=_decoders(doc, f"{where} ({name})"),
        unit=str(doc.get("unit", "")),
        attribute=str(doc.get("attribute", name)),
        description=str(doc.get("description", "")),
    )


def _derived(doc: Any, key: Mapping[str, FieldSpec], where: str) -> DerivedSpec:
    if not isinstance(doc, Mapping):
        raise CatalogError(f"{where}: must be a mapping with name, from and decoders")
    name = str(_req(doc, "name", where))
    where = f"{where} ({name})"
    source = str(_req(doc, "from", where))
    if source not in key:
        raise CatalogError(
            f"{where}.from: {source!r} is no key field of the map; key fields: {', '.join(key)}"
        )
    chain = _decoders(doc, where)
    if not chain:
        raise CatalogError(f"{where}.decoders: a derived field needs at least one decoder")
    return DerivedSpec(
        name=name,
        source=key[source],
        decoders=chain,
        attribute=str(doc.get("attribute", name)),
        description=str(doc.get("description", "")),
    )


def _map(doc: Mapping[str, Any], where: str) -> MapSpec:
    name = str(_req(doc, "name", where))
    where = f"{where} ({name})"
    key = tuple(_field(f, f"{where}.key[{i}]") for i, f in enumerate(_req(doc, "key", where)))
    value = tuple(
        _field(f, f"{where}.value[{i}]") for i, f in enumerate(_req(doc, "value", where))
    )
    hist = None
    if "histogram" in doc:
        h = doc["histogram"]
        hist = HistogramSpec(
            slot_field=str(_req(h, "slot_field", f"{where}.histogram")),
            slots=int(_req(h, "slots", f"{where}.histogram")),
            count_field=str(_req(h, "count_field", f"{where}.histogram")),
            sum_field=str(h.get("sum_field", "")),
            unit=str(_req(h, "unit", f"{where}.histogram")),
            convention=str(h.get("convention", "log2_bcc")),
            linear_width=float(h.get("linear_width", 0)),
            bounds=tuple(float(b) for b in h.get("bounds", ())),
        )
        _check_layout(hist, f"{where}.histogram")
        if hist.slot_field not in {f.name for f in key}:
            raise CatalogError(f"{where}.histogram.slot_field: {hist.slot_field!r} is no key field")
        for vf in (hist.count_field, hist.sum_field):
            if vf and vf not in {f.name for f in value}:
                raise CatalogError(f"{where}.histogram: {vf!r} is no value field")
    by_name = {f.name: f for f in key}
    derived: list[DerivedSpec] = []
    for i, d in enumerate(doc.get("derived", ()) or ()):
        spec = _derived(d, by_name, f"{where}.derived[{i}]")
        if spec.name in by_name or spec.name in {x.name for x in derived}:
            raise CatalogError(
                f"{where}.derived[{i}].name: {spec.name!r} is already a key field of the map"
            )
        derived.append(spec)
    pid_field = str(doc.get("pid_field", ""))
    if pid_field and pid_field not in {f.name for f in key if not f.c_type.startswith("char")}:
        raise CatalogError(f"{where}.pid_field: {pid_field!r} is no integer key field")
    return MapSpec(
        name=name,
        kind="histogram" if hist else "counters",
        max_entries=int(_req(doc, "max_entries", where)),
        key=key,
        value=value,
        description=str(doc.get("description", "")),
        histogram=hist,
        dropped_counter=str(doc.get("dropped_counter", "")),
        enabled_by=str(doc.get("enabled_by", "")),
        pid_field=pid_field,
        derived=tuple(derived),
    )


def _check_layout(h: HistogramSpec, where: str) -> None:
    if h.convention not in SLOT_CONVENTIONS:
        raise CatalogError(
            f"{where}.convention: {h.convention!r} is not one of {', '.join(SLOT_CONVENTIONS)}"
        )
    if h.slots < 1:
        raise CatalogError(f"{where}.slots: {h.slots} must be at least 1")
    if h.convention == "linear" and h.linear_width <= 0:
        raise CatalogError(f"{where}.linear_width: a linear histogram needs a width above 0")
    increasing = list(h.bounds) == sorted(set(h.bounds))
    if h.convention == "fixed" and (len(h.bounds) != h.slots - 1 or not increasing):
        raise CatalogError(
            f"{where}.bounds: a fixed histogram of {h.slots} slots needs {h.slots - 1} "
            "strictly increasing bounds (the last slot holds everything above)"
        )


def _parameter(doc: Mapping[str, Any], where: str) -> ParameterSpec:
    name = str(_req(doc, "name", where))
    ptype = str(_req(doc, "type", where))
    if ptype not in ("int", "bool", "enum"):
        raise CatalogError(f"{where}.type: {ptype!r} is not int, bool or enum")
    spec = ParameterSpec(
        name=name,
        type=ptype,
        default=str(_req(doc, "default", where)).lower() if ptype == "bool"
        else str(_req(doc, "default", where)),
        define=str(_req(doc, "define", where)),
        description=str(doc.get("description", "")),
        allowed=tuple(str(a) for a in doc.get("allowed", ())),
        min=int(doc.get("min", 0)),
        max=int(doc.get("max", 0)),
    )
    spec.compile_define(spec.default, f"{where}.default")  # the default must be valid
    return spec


_METRIC_TYPES = {
    "sum": pb.METRIC_TYPE_SUM,
    "gauge": pb.METRIC_TYPE_GAUGE,
    "histogram": pb.METRIC_TYPE_HISTOGRAM,
}


def _metric(doc: Mapping[str, Any], program: str, maps: Mapping[str, MapSpec], where: str) -> (
    pb.MetricBinding
):
    name = str(_req(doc, "name", where))
    where = f"{where} ({name})"
    map_name = str(_req(doc, "map", where))
    if map_name not in maps:
        raise CatalogError(f"{where}.map: {map_name!r} is not a map of {program}")
    mtype = str(_req(doc, "type", where))
    if mtype not in _METRIC_TYPES:
        raise CatalogError(f"{where}.type: {mtype!r} is not sum, gauge or histogram")
    key_names = set(maps[map_name].key_names)
    attrs = []
    for i, a in enumerate(doc.get("attributes", ())):
        if a["field"] not in key_names:
            raise CatalogError(f"{where}.attributes[{i}].field: {a['field']!r} is no key field")
        attrs.append(
            pb.AttributeBinding(
                field=a["field"], name=a["name"], resource=bool(a.get("resource", False))
            )
        )
    value_names = {f.name for f in maps[map_name].value}
    value_attribute = doc.get("value_attribute") or {}
    value_fields = []
    for i, vf in enumerate(value_attribute.get("fields", ())):
        if vf["field"] not in value_names:
            raise CatalogError(
                f"{where}.value_attribute.fields[{i}].field: {vf['field']!r} is no value field"
            )
        value_fields.append(
            pb.ValueFieldBinding(field=vf["field"], attribute_value=str(vf["value"]))
        )
    return pb.MetricBinding(
        name=name,
        program=program,
        map=map_name,
        type=_METRIC_TYPES[mtype],
        unit=str(doc.get("unit", "")),
        description=str(doc.get("description", "")),
        value_field=str(doc.get("value_field", "")),
        attributes=attrs,
        value_attribute=str(value_attribute.get("name", "")),
        value_fields=value_fields,
    )


def _btf_offsets(specs: Any, where: str) -> tuple[str, ...]:
    for spec in specs:
        if not re.fullmatch(r"[A-Za-z_]\w*\.[A-Za-z_]\w*", str(spec)):
            raise CatalogError(f"{where}: {spec!r} is not struct.member")
    return tuple(str(s) for s in specs)


def load_manifest(path: Path) -> Program:
    where = str(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CatalogError(f"{where}: not valid YAML: {e}") from None
    name = str(_req(doc, "name", where))
    if name != path.parent.name:
        raise CatalogError(f"{where}.name: {name!r} must match its folder {path.parent.name!r}")
    source = path.parent / str(doc.get("source", f"{name}.c"))
    if not source.is_file():
        raise CatalogError(f"{where}.source: {source} does not exist")
    maps = {}
    for i, m in enumerate(_req(doc, "maps", where)):
        spec = _map(m, f"{where}.maps[{i}]")
        maps[spec.name] = spec
    params = {}
    for i, p in enumerate(doc.get("parameters", ()) or ()):
        pspec = _parameter(p, f"{where}.parameters[{i}]")
        params[pspec.name] = pspec
    for spec in maps.values():
        if spec.enabled_by and (
            spec.enabled_by not in params or params[spec.enabled_by].type != "bool"
        ):
            raise CatalogError(
                f"{where}: map {spec.name!r} is enabled_by {spec.enabled_by!r}, "
                "which is not a bool parameter of the program"
            )
    metrics = tuple(
        _metric(m, name, maps, f"{where}.default_metrics[{i}]")
        for i, m in enumerate(doc.get("default_metrics", ()) or ())
    )
    return Program(
        name=name,
        description=str(doc.get("description", "")).strip(),
        source=source,
        hooks=tuple(str(h) for h in _req(doc, "hooks", where)),
        btf_offsets=_btf_offsets(doc.get("btf_offsets", ()) or (), f"{where}.btf_offsets"),
        maps=maps,
        parameters=params,
        default_metrics=metrics,
    )
