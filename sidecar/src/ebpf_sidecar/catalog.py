"""The program catalog's model: programs, their maps, fields and parameters.

Each program is a BCC source plus what its manifest says (decoded by
``manifest.py``): which hooks it uses, the layout of its maps (key and value
fields, in struct order), how keys are decoded, which typed parameters it
takes, and the metrics it emits by default. Programs are only ever referred
to by name; source never comes over the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

# The C types a manifest field may have: fixed-size integers and char arrays.
C_TYPES = re.compile(r"^(u8|u16|u32|u64|s8|s16|s32|s64|char\[(\d+)\])$")
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
        m = C_TYPES.match(self.c_type)
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
    slots: int  # 0 for "exponential": its slots follow from scale, min_log2, max_log2
    count_field: str
    sum_field: str
    unit: str
    convention: str = "log2_bcc"
    linear_width: float = 0.0
    bounds: tuple[float, ...] = ()
    # "exponential": the scale (a number, or an int parameter such as
    # histogram_scale), and the powers of two of the unit the buckets span:
    # slot 0 holds values up to 2^min_log2, the last slot those above
    # 2^max_log2. A scale of 0 is BCC's log2 slots, max_log2 + 2 of them (the
    # last from 2^max_log2 up): ebpfreceiver.h's latency_slot() and
    # LATENCY_SLOTS() compute the same.
    scale: int | str = 0
    min_log2: int = 0
    max_log2: int = 0

    def scale_for(self, parameters: Mapping[str, int]) -> int:
        return parameters[self.scale] if isinstance(self.scale, str) else self.scale

    def slots_for(self, parameters: Mapping[str, int]) -> int:
        """The number of slots for these parameter values (Program.parameter_values)."""
        if self.convention != "exponential":
            return self.slots
        scale = self.scale_for(parameters)
        if scale == 0:
            return self.max_log2 + 2
        return ((self.max_log2 - self.min_log2) << scale) + 2

    def to_proto(self, parameters: Mapping[str, int]) -> pb.HistogramLayout:
        layout = pb.HistogramLayout(
            slot_field=self.slot_field,
            convention=SLOT_CONVENTIONS[self.convention],
            slots=self.slots_for(parameters),
            count_field=self.count_field,
            sum_field=self.sum_field,
            unit=self.unit,
            linear_width=self.linear_width,
            bounds=list(self.bounds),
        )
        if self.convention == "exponential":
            scale = self.scale_for(parameters)
            if scale == 0:
                layout.convention = pb.SLOT_CONVENTION_LOG2_BCC
            else:
                layout.scale = scale
                layout.index_offset = self.min_log2 << scale
        return layout


# Manifest names of the slot conventions (see SlotConvention in the proto).
SLOT_CONVENTIONS = {
    "log2_bcc": pb.SLOT_CONVENTION_LOG2_BCC,
    "log2_exponent": pb.SLOT_CONVENTION_LOG2_EXPONENT,
    "linear": pb.SLOT_CONVENTION_LINEAR,
    "fixed": pb.SLOT_CONVENTION_FIXED,
    "exponential": pb.SLOT_CONVENTION_EXPONENTIAL,
}
# The scales ebpfreceiver.h's exp_slot() computes (0: BCC's log2 slots).
EXPONENTIAL_SCALES = range(4)


# The factor of a map's max_entries that is its histogram's number of slots.
SLOTS = "slots"


@dataclass(frozen=True)
class MapSize:
    """A map's max_entries: a product of numbers and int parameters.

    ``max_devices * 2 * 36`` in a manifest, so the size the sidecar reports
    and checks follows the parameter that sizes the map in the C source.
    """

    # a number, the name of an int parameter, or SLOTS: the map's histogram
    # slots for the parameters (which can follow a parameter, histogram_scale)
    factors: tuple[int | str, ...]

    def entries(self, parameters: Mapping[str, int], slots: int = 0) -> int:
        """The size for these parameter values (Program.parameter_values)."""
        size = 1
        for factor in self.factors:
            if factor == SLOTS:
                size *= slots
            else:
                size *= parameters[factor] if isinstance(factor, str) else factor
        return size

    def __str__(self) -> str:
        return " * ".join(str(f) for f in self.factors)


def enabling_parameter(enabled_by: str) -> tuple[str, bool]:
    """A map's ``enabled_by`` as (bool parameter, the value that compiles the
    map in): ``count_errors`` is there when true, ``!per_cgroup`` when false."""
    return (enabled_by[1:], False) if enabled_by.startswith("!") else (enabled_by, True)


def _prefixed(prefix: str, parts: Sequence[str]) -> list[str]:
    """``<prefix>_<part>`` for each part; none without a prefix."""
    return [f"{prefix}_{part}" for part in parts] if prefix else []


@dataclass(frozen=True)
class MapSpec:
    name: str
    size: MapSize
    key: tuple[FieldSpec, ...]
    value: tuple[FieldSpec, ...]
    description: str
    histogram: HistogramSpec | None = None
    dropped_counter: str = ""
    # A bool parameter that compiles this map (and its hook) in when true, or
    # with a leading "!" in when false (enabling_parameter).
    enabled_by: str = ""
    # A key field holding a process id (tgid): entries of processes that have
    # exited are deleted once their final values have been exported.
    pid_field: str = ""
    # Key fields the sidecar computes from other key fields (after ``key``).
    derived: tuple[DerivedSpec, ...] = ()
    # The prefix of the maps in which the program records the keys it wrote
    # (<prefix>_epoch, _0, _1, _lost; ebpf_sidecar.maps.WrittenKeys), which
    # changes-only reads look up instead of walking the map.
    written_keys: str = ""
    # The prefix of the maps of the barrier that makes the program write the
    # updates it keeps per CPU into this map before a read (<prefix>_generation,
    # _flushed; ebpf_sidecar.write_behind).
    write_behind: str = ""

    @property
    def written_maps(self) -> list[str]:
        """The maps of written_keys, none without it."""
        return _prefixed(self.written_keys, ("epoch", "0", "1", "lost"))

    @property
    def write_behind_maps(self) -> list[str]:
        """The maps of write_behind's barrier, none without it."""
        return _prefixed(self.write_behind, ("generation", "flushed"))

    @property
    def side_maps(self) -> dict[str, list[str]]:
        """Per option that names further maps of the program (written_keys,
        write_behind), the maps it names, for the options set."""
        options = {"written_keys": self.written_maps, "write_behind": self.write_behind_maps}
        return {option: maps for option, maps in options.items() if maps}

    @property
    def key_names(self) -> list[str]:
        """Every key column of a snapshot: the map's key fields, then derived ones."""
        return [f.name for f in self.key] + [d.name for d in self.derived]

    def entries(self, parameters: Mapping[str, int]) -> int:
        """max_entries for these parameter values (Program.parameter_values)."""
        slots = self.histogram.slots_for(parameters) if self.histogram else 0
        return self.size.entries(parameters, slots)

    def to_proto(self, parameters: Mapping[str, int]) -> pb.Map:
        """The map as Describe shows it, sized and laid out for these parameter values."""
        m = pb.Map(
            name=self.name,
            kind=pb.MAP_KIND_HISTOGRAM if self.histogram else pb.MAP_KIND_COUNTERS,
            max_entries=self.entries(parameters),
            key_fields=[f.to_proto() for f in self.key] + [d.to_proto() for d in self.derived],
            value_fields=[f.to_proto() for f in self.value],
            description=self.description,
            enabled_by=self.enabled_by,
        )
        if self.histogram:
            m.histogram.CopyFrom(self.histogram.to_proto(parameters))
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

    def number(self, text: str) -> int:
        """Validate a text value: the number its -D define gets (never raw flags).

        An int is itself, a bool 1 or 0, an enum value its index in ``allowed``.
        A bad value raises :class:`RequestError` saying what is wrong and the
        valid choices; the caller names the field.
        """
        if self.type == "int":
            try:
                value = int(text, 0)
            except ValueError:
                raise RequestError(
                    f"{text!r} is not an integer; use a whole number in {self.min}..{self.max}"
                ) from None
            if not self.min <= value <= self.max:
                raise RequestError(f"{value} is out of range; use {self.min}..{self.max}")
            return value
        if self.type == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise RequestError(f"{text!r} is not a boolean; use true or false")
            return 1 if lowered == "true" else 0
        if text not in self.allowed:
            raise RequestError(f"{text!r} is not one of {', '.join(self.allowed)}")
        return self.allowed.index(text)


# OpenTelemetry severity numbers (logs data model) of the severities an
# event may have, least severe first.
SEVERITIES: dict[str, int] = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "warn": 13,
    "error": 17,
    "fatal": 21,
}


@dataclass(frozen=True)
class EventField:
    """A field of an event struct (or one derived from such a field)."""

    field: FieldSpec | DerivedSpec
    # a resource attribute (process.pid, container.id, k8s.pod.uid)
    resource: bool = False
    # leave the attribute out when the value is 0 or empty
    omit_zero: bool = False
    # false for the kernel side's own bookkeeping: no attribute at all
    export: bool = True

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def attribute(self) -> str:
        return self.field.attribute


@dataclass(frozen=True)
class EventSpec:
    """A kind of event a program writes into a BPF ring buffer.

    ``fields`` are the event struct's members (checked against the compiled
    struct when the program loads); ``derived`` are computed from them like a
    map's derived key fields. ``body`` holds templates (``str.format`` with
    the decoded fields by name); the first whose fields are all non-zero
    and non-empty is the record's body (see :mod:`ebpf_sidecar.events`).
    """

    name: str
    ring_buffer: str
    dropped_counter: str
    severity: str
    time_field: str
    description: str
    body: tuple[str, ...]
    fields: tuple[EventField, ...]
    derived: tuple[EventField, ...] = ()

    @property
    def struct_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f.field for f in self.fields if isinstance(f.field, FieldSpec))

    @property
    def severity_number(self) -> int:
        return SEVERITIES[self.severity]

    def to_proto(self) -> pb.Event:
        exported = [f for f in (*self.fields, *self.derived) if f.export]
        return pb.Event(
            name=self.name,
            description=self.description,
            severity=self.severity,
            fields=[f.field.to_proto() for f in exported],
            resource_fields=[f.name for f in exported if f.resource],
        )


@dataclass(frozen=True)
class ProfileSpec:
    """Where a stack-sampling program keeps its samples (the manifest's ``profile``).

    ``counts_map`` counts samples per key (one of its key fields names the
    user stack, one the kernel stack, as ids into the BPF_STACK_TRACE map
    ``stack_map``); ``frequency_parameter`` is the int parameter its
    perf event's sample frequency comes from.
    """

    counts_map: str
    count_field: str
    stack_map: str
    user_stack_field: str
    kernel_stack_field: str
    frequency_parameter: str


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
    # enumerators (e.g. __REQ_FUA) whose values it needs from the running
    # kernel's BTF, passed as -DBTF_ENUM_<NAME>=<value>.
    btf_enums: tuple[str, ...] = ()
    # the kinds of events it sends, by event name (e.g. ebpf.oom.kill)
    events: Mapping[str, EventSpec] = field(default_factory=dict)
    profile: ProfileSpec | None = None

    def to_proto(self) -> pb.Program:
        """The program as Describe shows it: map sizes are those of the defaults."""
        defaults = self.parameter_values({})
        return pb.Program(
            name=self.name,
            description=self.description,
            hooks=list(self.hooks),
            maps=[m.to_proto(defaults) for m in self.maps.values()],
            parameters=[p.to_proto() for p in self.parameters.values()],
            default_metrics=list(self.default_metrics),
            events=[e.to_proto() for e in self.events.values()],
            profiles=self.profile is not None,
        )

    def check_parameters(
        self, values: Mapping[str, str]
    ) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """Every parameter's validated number (defaults filled in), and the
        problems of ``values`` as (parameter name, message), all of them.

        The one place the rules for parameter values live: Stream, Plan and
        compiling all come through here.
        """
        problems = [
            (
                name,
                f"unknown parameter {name!r}; valid parameters: "
                f"{', '.join(self.parameters) or 'none'}",
            )
            for name in values
            if name not in self.parameters
        ]
        numbers = {}
        for name, spec in sorted(self.parameters.items()):
            try:
                numbers[name] = spec.number(values.get(name, spec.default))
            except RequestError as e:
                problems.append((name, str(e)))
        return numbers, problems

    def parameter_values(self, values: Mapping[str, str]) -> dict[str, int]:
        """Every parameter's validated number, by name, defaults filled in."""
        numbers, problems = self.check_parameters(values)
        if problems:
            raise RequestError(
                "; ".join(f"programs[{self.name}].parameters.{n}: {m}" for n, m in problems)
            )
        return numbers

    def map_enabled(self, spec: MapSpec, numbers: Mapping[str, int]) -> bool:
        """Whether validated parameter values (parameter_values) compile the map in."""
        if not spec.enabled_by:
            return True
        name, wanted = enabling_parameter(spec.enabled_by)
        return (numbers[name] == 1) == wanted

    def cflags(self, values: Mapping[str, str]) -> list[str]:
        """Compile-time defines for validated parameter values (defaults filled in)."""
        return [
            f"-D{self.parameters[name].define}={number}"
            for name, number in self.parameter_values(values).items()
        ]


class Catalog:
    """Programs by name, and the header folders every program compiles with."""

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
