import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MapKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_KIND_UNSPECIFIED: _ClassVar[MapKind]
    MAP_KIND_COUNTERS: _ClassVar[MapKind]
    MAP_KIND_HISTOGRAM: _ClassVar[MapKind]

class FieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_TYPE_UNSPECIFIED: _ClassVar[FieldType]
    FIELD_TYPE_UINT: _ClassVar[FieldType]
    FIELD_TYPE_INT: _ClassVar[FieldType]
    FIELD_TYPE_STRING: _ClassVar[FieldType]

class SlotConvention(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SLOT_CONVENTION_UNSPECIFIED: _ClassVar[SlotConvention]
    SLOT_CONVENTION_LOG2_BCC: _ClassVar[SlotConvention]
    SLOT_CONVENTION_LOG2_EXPONENT: _ClassVar[SlotConvention]
    SLOT_CONVENTION_LINEAR: _ClassVar[SlotConvention]
    SLOT_CONVENTION_FIXED: _ClassVar[SlotConvention]
    SLOT_CONVENTION_EXPONENTIAL: _ClassVar[SlotConvention]

class MetricType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_TYPE_UNSPECIFIED: _ClassVar[MetricType]
    METRIC_TYPE_SUM: _ClassVar[MetricType]
    METRIC_TYPE_GAUGE: _ClassVar[MetricType]
    METRIC_TYPE_HISTOGRAM: _ClassVar[MetricType]
MAP_KIND_UNSPECIFIED: MapKind
MAP_KIND_COUNTERS: MapKind
MAP_KIND_HISTOGRAM: MapKind
FIELD_TYPE_UNSPECIFIED: FieldType
FIELD_TYPE_UINT: FieldType
FIELD_TYPE_INT: FieldType
FIELD_TYPE_STRING: FieldType
SLOT_CONVENTION_UNSPECIFIED: SlotConvention
SLOT_CONVENTION_LOG2_BCC: SlotConvention
SLOT_CONVENTION_LOG2_EXPONENT: SlotConvention
SLOT_CONVENTION_LINEAR: SlotConvention
SLOT_CONVENTION_FIXED: SlotConvention
SLOT_CONVENTION_EXPONENTIAL: SlotConvention
METRIC_TYPE_UNSPECIFIED: MetricType
METRIC_TYPE_SUM: MetricType
METRIC_TYPE_GAUGE: MetricType
METRIC_TYPE_HISTOGRAM: MetricType

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("sidecar_version", "protocol_version", "kernel", "programs", "min_interval")
    SIDECAR_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    sidecar_version: str
    protocol_version: str
    kernel: KernelInfo
    programs: _containers.RepeatedCompositeFieldContainer[Program]
    min_interval: _duration_pb2.Duration
    def __init__(self, sidecar_version: _Optional[str] = ..., protocol_version: _Optional[str] = ..., kernel: _Optional[_Union[KernelInfo, _Mapping]] = ..., programs: _Optional[_Iterable[_Union[Program, _Mapping]]] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class KernelInfo(_message.Message):
    __slots__ = ("release", "btf", "raw_tracepoints", "perf_events", "kprobes", "headers")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    BTF_FIELD_NUMBER: _ClassVar[int]
    RAW_TRACEPOINTS_FIELD_NUMBER: _ClassVar[int]
    PERF_EVENTS_FIELD_NUMBER: _ClassVar[int]
    KPROBES_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    release: str
    btf: bool
    raw_tracepoints: bool
    perf_events: bool
    kprobes: bool
    headers: str
    def __init__(self, release: _Optional[str] = ..., btf: _Optional[bool] = ..., raw_tracepoints: _Optional[bool] = ..., perf_events: _Optional[bool] = ..., kprobes: _Optional[bool] = ..., headers: _Optional[str] = ...) -> None: ...

class Program(_message.Message):
    __slots__ = ("name", "description", "hooks", "maps", "parameters", "default_metrics", "events", "profiles")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METRICS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    hooks: _containers.RepeatedScalarFieldContainer[str]
    maps: _containers.RepeatedCompositeFieldContainer[Map]
    parameters: _containers.RepeatedCompositeFieldContainer[Parameter]
    default_metrics: _containers.RepeatedCompositeFieldContainer[MetricBinding]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    profiles: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., hooks: _Optional[_Iterable[str]] = ..., maps: _Optional[_Iterable[_Union[Map, _Mapping]]] = ..., parameters: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ..., default_metrics: _Optional[_Iterable[_Union[MetricBinding, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., profiles: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("name", "description", "severity", "fields", "resource_fields")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    severity: str
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    resource_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., severity: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., resource_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("name", "type", "default", "allowed", "min", "max", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default: str
    allowed: _containers.RepeatedScalarFieldContainer[str]
    min: int
    max: int
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default: _Optional[str] = ..., allowed: _Optional[_Iterable[str]] = ..., min: _Optional[int] = ..., max: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class Field(_message.Message):
    __slots__ = ("name", "type", "size", "decoders", "unit", "attribute", "description", "derived_from")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DECODERS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FROM_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FieldType
    size: int
    decoders: _containers.RepeatedScalarFieldContainer[str]
    unit: str
    attribute: str
    description: str
    derived_from: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FieldType, str]] = ..., size: _Optional[int] = ..., decoders: _Optional[_Iterable[str]] = ..., unit: _Optional[str] = ..., attribute: _Optional[str] = ..., description: _Optional[str] = ..., derived_from: _Optional[str] = ...) -> None: ...

class HistogramLayout(_message.Message):
    __slots__ = ("slot_field", "convention", "slots", "count_field", "sum_field", "unit", "linear_width", "bounds", "scale", "index_offset")
    SLOT_FIELD_FIELD_NUMBER: _ClassVar[int]
    CONVENTION_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    LINEAR_WIDTH_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    INDEX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    slot_field: str
    convention: SlotConvention
    slots: int
    count_field: str
    sum_field: str
    unit: str
    linear_width: float
    bounds: _containers.RepeatedScalarFieldContainer[float]
    scale: int
    index_offset: int
    def __init__(self, slot_field: _Optional[str] = ..., convention: _Optional[_Union[SlotConvention, str]] = ..., slots: _Optional[int] = ..., count_field: _Optional[str] = ..., sum_field: _Optional[str] = ..., unit: _Optional[str] = ..., linear_width: _Optional[float] = ..., bounds: _Optional[_Iterable[float]] = ..., scale: _Optional[int] = ..., index_offset: _Optional[int] = ...) -> None: ...

class Map(_message.Message):
    __slots__ = ("name", "kind", "max_entries", "key_fields", "value_fields", "histogram", "description", "enabled_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELDS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: MapKind
    max_entries: int
    key_fields: _containers.RepeatedCompositeFieldContainer[Field]
    value_fields: _containers.RepeatedCompositeFieldContainer[Field]
    histogram: HistogramLayout
    description: str
    enabled_by: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[MapKind, str]] = ..., max_entries: _Optional[int] = ..., key_fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., value_fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., histogram: _Optional[_Union[HistogramLayout, _Mapping]] = ..., description: _Optional[str] = ..., enabled_by: _Optional[str] = ...) -> None: ...

class AttributeBinding(_message.Message):
    __slots__ = ("field", "name", "resource")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    field: str
    name: str
    resource: bool
    def __init__(self, field: _Optional[str] = ..., name: _Optional[str] = ..., resource: _Optional[bool] = ...) -> None: ...

class ValueFieldBinding(_message.Message):
    __slots__ = ("field", "attribute_value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    attribute_value: str
    def __init__(self, field: _Optional[str] = ..., attribute_value: _Optional[str] = ...) -> None: ...

class MetricBinding(_message.Message):
    __slots__ = ("name", "program", "map", "type", "unit", "description", "value_field", "attributes", "value_attribute", "value_fields")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    VALUE_ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    program: str
    map: str
    type: MetricType
    unit: str
    description: str
    value_field: str
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeBinding]
    value_attribute: str
    value_fields: _containers.RepeatedCompositeFieldContainer[ValueFieldBinding]
    def __init__(self, name: _Optional[str] = ..., program: _Optional[str] = ..., map: _Optional[str] = ..., type: _Optional[_Union[MetricType, str]] = ..., unit: _Optional[str] = ..., description: _Optional[str] = ..., value_field: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[AttributeBinding, _Mapping]]] = ..., value_attribute: _Optional[str] = ..., value_fields: _Optional[_Iterable[_Union[ValueFieldBinding, _Mapping]]] = ...) -> None: ...

class ProgramRequest(_message.Message):
    __slots__ = ("name", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MapRequest(_message.Message):
    __slots__ = ("program", "map", "clear_after_read", "per_cpu")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    CLEAR_AFTER_READ_FIELD_NUMBER: _ClassVar[int]
    PER_CPU_FIELD_NUMBER: _ClassVar[int]
    program: str
    map: str
    clear_after_read: bool
    per_cpu: bool
    def __init__(self, program: _Optional[str] = ..., map: _Optional[str] = ..., clear_after_read: _Optional[bool] = ..., per_cpu: _Optional[bool] = ...) -> None: ...

class EventRequest(_message.Message):
    __slots__ = ("program", "event", "min_severity", "rate_limit")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    program: str
    event: str
    min_severity: str
    rate_limit: int
    def __init__(self, program: _Optional[str] = ..., event: _Optional[str] = ..., min_severity: _Optional[str] = ..., rate_limit: _Optional[int] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("programs", "maps", "interval", "events", "profiles", "packed_columns", "changes_only", "full_snapshot_every")
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    PACKED_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_ONLY_FIELD_NUMBER: _ClassVar[int]
    FULL_SNAPSHOT_EVERY_FIELD_NUMBER: _ClassVar[int]
    programs: _containers.RepeatedCompositeFieldContainer[ProgramRequest]
    maps: _containers.RepeatedCompositeFieldContainer[MapRequest]
    interval: _duration_pb2.Duration
    events: _containers.RepeatedCompositeFieldContainer[EventRequest]
    profiles: ProfilesRequest
    packed_columns: bool
    changes_only: bool
    full_snapshot_every: int
    def __init__(self, programs: _Optional[_Iterable[_Union[ProgramRequest, _Mapping]]] = ..., maps: _Optional[_Iterable[_Union[MapRequest, _Mapping]]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., events: _Optional[_Iterable[_Union[EventRequest, _Mapping]]] = ..., profiles: _Optional[_Union[ProfilesRequest, _Mapping]] = ..., packed_columns: _Optional[bool] = ..., changes_only: _Optional[bool] = ..., full_snapshot_every: _Optional[int] = ...) -> None: ...

class ProfilesRequest(_message.Message):
    __slots__ = ("program", "per_container", "cgroups")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    PER_CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CGROUPS_FIELD_NUMBER: _ClassVar[int]
    program: str
    per_container: bool
    cgroups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, program: _Optional[str] = ..., per_container: _Optional[bool] = ..., cgroups: _Optional[_Iterable[str]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("field", "uints", "ints", "strings")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    UINTS_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    field: str
    uints: _containers.RepeatedScalarFieldContainer[int]
    ints: _containers.RepeatedScalarFieldContainer[int]
    strings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, field: _Optional[str] = ..., uints: _Optional[_Iterable[int]] = ..., ints: _Optional[_Iterable[int]] = ..., strings: _Optional[_Iterable[str]] = ...) -> None: ...

class PackedColumn(_message.Message):
    __slots__ = ("field", "type", "values", "dictionary", "indexes", "width")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DICTIONARY_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    field: str
    type: FieldType
    values: bytes
    dictionary: _containers.RepeatedScalarFieldContainer[str]
    indexes: bytes
    width: int
    def __init__(self, field: _Optional[str] = ..., type: _Optional[_Union[FieldType, str]] = ..., values: _Optional[bytes] = ..., dictionary: _Optional[_Iterable[str]] = ..., indexes: _Optional[bytes] = ..., width: _Optional[int] = ...) -> None: ...

class MapSnapshot(_message.Message):
    __slots__ = ("program", "map", "attach_time_unix_nano", "entries", "key_columns", "value_columns", "max_entries", "dropped_updates", "error", "packed_key_columns", "packed_value_columns", "changes_only", "slots", "removed_slots", "late_cpus")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    ATTACH_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    KEY_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALUE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PACKED_KEY_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PACKED_VALUE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_ONLY_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    LATE_CPUS_FIELD_NUMBER: _ClassVar[int]
    program: str
    map: str
    attach_time_unix_nano: int
    entries: int
    key_columns: _containers.RepeatedCompositeFieldContainer[Column]
    value_columns: _containers.RepeatedCompositeFieldContainer[Column]
    max_entries: int
    dropped_updates: int
    error: str
    packed_key_columns: _containers.RepeatedCompositeFieldContainer[PackedColumn]
    packed_value_columns: _containers.RepeatedCompositeFieldContainer[PackedColumn]
    changes_only: bool
    slots: bytes
    removed_slots: bytes
    late_cpus: int
    def __init__(self, program: _Optional[str] = ..., map: _Optional[str] = ..., attach_time_unix_nano: _Optional[int] = ..., entries: _Optional[int] = ..., key_columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., value_columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., max_entries: _Optional[int] = ..., dropped_updates: _Optional[int] = ..., error: _Optional[str] = ..., packed_key_columns: _Optional[_Iterable[_Union[PackedColumn, _Mapping]]] = ..., packed_value_columns: _Optional[_Iterable[_Union[PackedColumn, _Mapping]]] = ..., changes_only: _Optional[bool] = ..., slots: _Optional[bytes] = ..., removed_slots: _Optional[bytes] = ..., late_cpus: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("sequence", "time_unix_nano", "maps", "read_duration", "logs", "profiles", "event_drops", "program_costs", "sidecar_cost")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    READ_DURATION_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    EVENT_DROPS_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_COSTS_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_COST_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time_unix_nano: int
    maps: _containers.RepeatedCompositeFieldContainer[MapSnapshot]
    read_duration: _duration_pb2.Duration
    logs: bytes
    profiles: bytes
    event_drops: _containers.RepeatedCompositeFieldContainer[EventDrops]
    program_costs: _containers.RepeatedCompositeFieldContainer[ProgramCost]
    sidecar_cost: SidecarCost
    def __init__(self, sequence: _Optional[int] = ..., time_unix_nano: _Optional[int] = ..., maps: _Optional[_Iterable[_Union[MapSnapshot, _Mapping]]] = ..., read_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., logs: _Optional[bytes] = ..., profiles: _Optional[bytes] = ..., event_drops: _Optional[_Iterable[_Union[EventDrops, _Mapping]]] = ..., program_costs: _Optional[_Iterable[_Union[ProgramCost, _Mapping]]] = ..., sidecar_cost: _Optional[_Union[SidecarCost, _Mapping]] = ...) -> None: ...

class ProgramCost(_message.Message):
    __slots__ = ("program", "hook", "attach_time_unix_nano", "run_time_ns", "runs", "recursion_misses")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    HOOK_FIELD_NUMBER: _ClassVar[int]
    ATTACH_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    RUN_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    RECURSION_MISSES_FIELD_NUMBER: _ClassVar[int]
    program: str
    hook: str
    attach_time_unix_nano: int
    run_time_ns: int
    runs: int
    recursion_misses: int
    def __init__(self, program: _Optional[str] = ..., hook: _Optional[str] = ..., attach_time_unix_nano: _Optional[int] = ..., run_time_ns: _Optional[int] = ..., runs: _Optional[int] = ..., recursion_misses: _Optional[int] = ...) -> None: ...

class SidecarCost(_message.Message):
    __slots__ = ("start_time_unix_nano", "cpu_time_ns", "memory_rss_bytes", "run_time_stats")
    START_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUN_TIME_STATS_FIELD_NUMBER: _ClassVar[int]
    start_time_unix_nano: int
    cpu_time_ns: int
    memory_rss_bytes: int
    run_time_stats: bool
    def __init__(self, start_time_unix_nano: _Optional[int] = ..., cpu_time_ns: _Optional[int] = ..., memory_rss_bytes: _Optional[int] = ..., run_time_stats: _Optional[bool] = ...) -> None: ...

class EventDrops(_message.Message):
    __slots__ = ("program", "event", "attach_time_unix_nano", "ring_buffer_full", "rate_limited", "stream_behind")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ATTACH_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    RING_BUFFER_FULL_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    STREAM_BEHIND_FIELD_NUMBER: _ClassVar[int]
    program: str
    event: str
    attach_time_unix_nano: int
    ring_buffer_full: int
    rate_limited: int
    stream_behind: int
    def __init__(self, program: _Optional[str] = ..., event: _Optional[str] = ..., attach_time_unix_nano: _Optional[int] = ..., ring_buffer_full: _Optional[int] = ..., rate_limited: _Optional[int] = ..., stream_behind: _Optional[int] = ...) -> None: ...

class FieldError(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PlannedProgram(_message.Message):
    __slots__ = ("name", "parameters", "maps")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    parameters: _containers.ScalarMap[str, str]
    maps: _containers.RepeatedCompositeFieldContainer[Map]
    def __init__(self, name: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., maps: _Optional[_Iterable[_Union[Map, _Mapping]]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("errors", "programs")
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    errors: _containers.RepeatedCompositeFieldContainer[FieldError]
    programs: _containers.RepeatedCompositeFieldContainer[PlannedProgram]
    def __init__(self, errors: _Optional[_Iterable[_Union[FieldError, _Mapping]]] = ..., programs: _Optional[_Iterable[_Union[PlannedProgram, _Mapping]]] = ...) -> None: ...
