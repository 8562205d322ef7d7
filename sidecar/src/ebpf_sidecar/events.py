"""Kernel events: BPF ring buffers read continuously, sent as OTLP log records.

A program declares its events in its manifest (``events:``): the ring buffer
it writes them into (``BPF_RINGBUF_OUTPUT``), the event struct's fields with
their decoders and attribute names, the severity and body templates. When a
stream asks for an event type, the program's :class:`EventSource` starts a
thread that polls the ring buffer (``bpf_poll_ringbuf``, libbcc's consumer,
which takes any ring buffer fd: a fresh instance's or an adopted pinned one)
and hands each decoded event to every stream that subscribed, each through
its own :class:`EventSink`:

- a per-stream, per-event-type rate limit (events per second): events over
  it are counted as ``rate_limited``, not sent;
- a bounded queue: a stream that does not take its events (a stalled
  receiver) loses the newest ones, counted as ``stream_behind``.

Events the kernel wrote while nobody read (between streams, or while a
crashed sidecar's pinned instance waited for its successor) are still in
the buffer and go to the next stream; what did not fit was counted as
``ring_buffer_full``.

The kernel side never waits for the reader: a full ring buffer makes
``ringbuf_output`` fail, and the program counts that in the event's dropped
counter (``ring_buffer_full``).

Times: events carry ``bpf_ktime_get_ns()`` (CLOCK_MONOTONIC); :class:`Clock`
converts them to wall time with the offset between CLOCK_REALTIME and
CLOCK_MONOTONIC, measured between two monotonic reads (sub-microsecond
error) and re-measured with every batch, so that an NTP step is followed.

Records are OpenTelemetry log records built with ``opentelemetry-proto``:
``event_name`` the event's name, ``time_unix_nano`` the kernel's moment,
``observed_time_unix_nano`` when the sidecar read it, severity, a one-line
body, one attribute per exported field, and the resource attributes
(``process.pid``, ``container.id``, ``k8s.pod.uid``) on a ResourceLogs per
distinct set.
"""

from __future__ import annotations

import ctypes as ct
import logging
import re
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from ebpf_sidecar import __version__, decoders
from ebpf_sidecar.catalog import DerivedSpec, EventField, EventSpec, FieldSpec
from ebpf_sidecar.decoders import cgroup
from ebpf_sidecar.maps import Layout, LayoutError

log = logging.getLogger(__name__)

SCOPE_NAME = "github.com/ebpfreceiver/ebpfreceiver/sidecar"
# How long one poll waits for events; also how soon a reader notices it
# should stop.
POLL_MS = 100
# Events a stream holds that it has not sent yet; more are counted as
# stream_behind (a stalled client must not grow the sidecar).
MAX_PENDING = 20_000
# What a stream counts of the events it drops (EventDrops fields; the
# kernel counts ring_buffer_full).
RATE_LIMITED = "rate_limited"
STREAM_BEHIND = "stream_behind"
# An event of a cgroup the sidecar does not know yet (a container started a
# moment ago) walks the cgroup tree again, at most this often.
CGROUP_REFRESH_S = 0.02


# --- clocks -----------------------------------------------------------------------------


class Clock:
    """Kernel monotonic time (bpf_ktime_get_ns) to Unix time."""

    def __init__(
        self,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        realtime_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._mono = monotonic_ns
        self._real = realtime_ns
        self.offset_ns = 0
        self.measure()

    def measure(self) -> int:
        """Re-measure REALTIME - MONOTONIC: the narrowest of three brackets."""
        best: tuple[int, int] | None = None
        for _ in range(3):
            before = self._mono()
            real = self._real()
            after = self._mono()
            width = after - before
            if best is None or width < best[0]:
                best = (width, real - (before + after) // 2)
        assert best is not None
        self.offset_ns = best[1]
        return self.offset_ns

    def wall(self, ktime_ns: int) -> int:
        return ktime_ns + self.offset_ns


# The one clock conversion of the sidecar, re-measured by every reader's batch.
CLOCK = Clock()


# --- the event struct ---------------------------------------------------------------------

_CTYPES: dict[str, Any] = {
    "char": ct.c_char,
    "s8": ct.c_byte,
    "u8": ct.c_ubyte,
    "unsigned char": ct.c_ubyte,
    "short": ct.c_short,
    "s16": ct.c_short,
    "u16": ct.c_ushort,
    "unsigned short": ct.c_ushort,
    "int": ct.c_int,
    "s32": ct.c_int,
    "u32": ct.c_uint,
    "unsigned int": ct.c_uint,
    "long": ct.c_long,
    "unsigned long": ct.c_ulong,
    "long long": ct.c_longlong,
    "s64": ct.c_longlong,
    "u64": ct.c_ulonglong,
    "unsigned long long": ct.c_ulonglong,
}
_ARRAY = re.compile(r"^(.+?) ?\[(\d+)\]$")


def struct_of(members: Sequence[str]) -> Any:
    """A ctypes struct from BCC's description of an event struct.

    BCC records the struct a program passes to ``ringbuf_output`` as
    ``name#type`` strings (``lib.bpf_perf_event_field``); a pinned instance
    keeps them in its layout file, so that an adopted ring buffer is read
    with the struct it was compiled with.
    """
    fields = []
    for member in members:
        name, _, ctype = member.partition("#")
        array = _ARRAY.match(ctype)
        base = array.group(1) if array else ctype
        if base not in _CTYPES:
            raise LayoutError(f"event struct member {member!r}: type {base!r} is not supported")
        t = _CTYPES[base]
        fields.append((name, t * int(array.group(2)) if array else t))
    return type("EventStruct", (ct.Structure,), {"_fields_": fields})


def compiled_members(bpf: Any, ring_buffer: str) -> list[str]:
    """The ``name#type`` strings BCC recorded for what the program writes into the buffer."""
    from bcc.libbcc import lib

    n = lib.bpf_perf_event_fields(bpf.module, ring_buffer.encode())
    return [
        lib.bpf_perf_event_field(bpf.module, ring_buffer.encode(), i).decode() for i in range(n)
    ]


# --- decoding and records ---------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One decoded event: its kernel time and every field by name."""

    spec: EventSpec
    ktime_ns: int
    values: dict[str, Any]


def decode(spec: EventSpec, layout: Layout, raw: Sequence[bytes]) -> list[Event]:
    """Decode a batch of raw events (each ``layout.stride`` bytes or more)."""
    if not raw:
        return []
    size = layout.stride
    blob = b"".join(r[:size].ljust(size, b"\0") for r in raw)
    columns = layout.columns(blob, len(raw))
    decoded: dict[str, list[Any]] = {}
    for f in spec.fields:
        fs = f.field
        assert isinstance(fs, FieldSpec)
        column = columns[fs.name]
        decoded[fs.name] = decoders.apply(fs.decoders, column) if fs.decoders else column
    for d in spec.derived:
        derived = d.field
        assert isinstance(derived, DerivedSpec)
        source = columns[derived.source.name]
        if derived.decoders and derived.decoders[0] is cgroup.CGROUP:
            newest = max(int(t) for t in columns[spec.time_field]) / 1e9
            cgroup.PATHS.refresh_for(source, newest, CGROUP_REFRESH_S)
        decoded[d.name] = decoders.apply(derived.decoders, source)
    out = []
    times = columns[spec.time_field]
    for i in range(len(raw)):
        values = {name: col[i] for name, col in decoded.items()}
        if any(v is decoders.DROP for v in values.values()):
            continue
        out.append(Event(spec, int(times[i]), values))
    return out


def human_bytes(n: float) -> str:
    """1.9 GiB, 512 MiB, 300 B."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class _BodyFormatter(string.Formatter):
    """``{f:bytes}`` a byte count, ``{f:+text}`` " text <value>" or nothing when empty."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec.startswith("+"):
            return f" {format_spec[1:]} {value}" if value else ""
        if format_spec == "bytes":
            return human_bytes(int(value))
        return str(super().format_field(value, format_spec))


_FORMATTER = _BodyFormatter()


def body(spec: EventSpec, values: Mapping[str, Any]) -> str:
    """The first template whose required fields (all but ``:+`` ones) are set."""
    for template in spec.body:
        needed = [
            name
            for _, name, fmt, _ in string.Formatter().parse(template)
            if name is not None and not (fmt or "").startswith("+")
        ]
        if all(values.get(n) not in (0, "", None) for n in needed):
            return _FORMATTER.format(template, **values)
    return spec.name


def _any_value(v: Any) -> common_pb2.AnyValue:
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, bytes):
        return common_pb2.AnyValue(string_value=v.decode(errors="replace"))
    return common_pb2.AnyValue(string_value=str(v))


def _attributes(fields: Sequence[EventField], values: Mapping[str, Any]) -> list[Any]:
    out = []
    for f in fields:
        v = values[f.name]
        if not f.export or (f.omit_zero and v in (0, "", b"")):
            continue
        if f.resource and v == "":
            continue  # a host process has no container.id: none, not an empty one
        out.append(common_pb2.KeyValue(key=f.attribute, value=_any_value(v)))
    return out


def logs_data(events: Sequence[tuple[Event, int]], clock: Clock) -> logs_pb2.LogsData:
    """A LogsData of (event, observed Unix ns) pairs, one ResourceLogs per resource."""
    data = logs_pb2.LogsData()
    by_resource: dict[tuple[Any, ...], Any] = {}
    for event, observed in events:
        spec = event.spec
        fields = (*spec.fields, *spec.derived)
        resource = [f for f in fields if f.resource and f.export]
        key = tuple((f.attribute, event.values[f.name]) for f in resource)
        scope = by_resource.get(key)
        if scope is None:
            rl = data.resource_logs.add()
            rl.resource.CopyFrom(
                resource_pb2.Resource(
                    attributes=_attributes(resource, event.values) if resource else [],
                )
            )
            scope = rl.scope_logs.add()
            scope.scope.name = SCOPE_NAME
            scope.scope.version = __version__
            by_resource[key] = scope
        record = scope.log_records.add()
        record.time_unix_nano = clock.wall(event.ktime_ns)
        record.observed_time_unix_nano = observed
        record.severity_number = spec.severity_number
        record.severity_text = spec.severity.upper()
        record.event_name = spec.name
        record.body.string_value = body(spec, event.values)
        record.attributes.extend(_attributes([f for f in fields if not f.resource], event.values))
    return data


# --- streams ------------------------------------------------------------------------------


@dataclass
class _Limit:
    per_second: int
    second: int = -1
    sent: int = 0


@dataclass
class EventSink:
    """One stream's events: pending records and what it could not take."""

    limits: dict[str, _Limit] = field(default_factory=dict)
    # (event name, reason) -> count since the stream started
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    pending: list[tuple[Event, int]] = field(default_factory=list)
    max_pending: int = MAX_PENDING
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False

    def want(self, event: str, rate_limit: int) -> None:
        self.limits[event] = _Limit(rate_limit)
        for reason in (RATE_LIMITED, STREAM_BEHIND):
            self.dropped.setdefault((event, reason), 0)

    def offer(self, events: Sequence[Event], observed: int) -> None:
        second = observed // 1_000_000_000
        with self._cond:
            added = False
            for e in events:
                limit = self.limits.get(e.spec.name)
                if limit is None:
                    continue
                if limit.second != second:
                    limit.second, limit.sent = second, 0
                if limit.sent >= limit.per_second:
                    self._count(e.spec.name, RATE_LIMITED)
                    continue
                limit.sent += 1
                if len(self.pending) >= self.max_pending:
                    self._count(e.spec.name, STREAM_BEHIND)
                    continue
                self.pending.append((e, observed))
                added = True
            if added:
                self._cond.notify_all()

    def _count(self, event: str, reason: str) -> None:
        self.dropped[(event, reason)] = self.dropped.get((event, reason), 0) + 1

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for events; whether there are any."""
        with self._cond:
            if not self.pending and not self._closed:
                self._cond.wait(max(0.0, timeout))
            return bool(self.pending)

    def take(self) -> list[tuple[Event, int]]:
        with self._cond:
            out, self.pending = self.pending, []
            return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class EventSource:
    """One ring buffer of a loaded program, read while any stream subscribes."""

    def __init__(
        self,
        spec: EventSpec,
        ring_buffer_fd: int,
        members: Sequence[str],
        dropped: Any | None,
        where: str,
    ) -> None:
        self.spec = spec
        self.fd = ring_buffer_fd
        self.members = list(members)
        ctype = struct_of(members)
        self.layout = Layout.of(ctype, spec.struct_fields, ct.sizeof(ctype), where)
        self._dropped_table = dropped
        self._subscribers: dict[int, EventSink] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ring_buffer_full(self) -> int:
        """Events the kernel could not write since the program was loaded."""
        if self._dropped_table is None:
            return 0
        from ebpf_sidecar.maps import sum_counter

        return sum_counter(self._dropped_table)

    def subscribe(self, sink: EventSink) -> None:
        with self._lock:
            self._subscribers[id(sink)] = sink
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"events {self.spec.name}", daemon=True
                )
                self._thread.start()

    def unsubscribe(self, sink: EventSink) -> None:
        with self._lock:
            self._subscribers.pop(id(sink), None)
            thread = self._thread if not self._subscribers else None
            if thread is not None:
                self._stop.set()
                self._thread = None
        if thread is not None:
            thread.join()

    def close(self) -> None:
        with self._lock:
            self._subscribers.clear()
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        from ebpf_sidecar.libbpf import RINGBUF_CB_TYPE, lib

        batch: list[bytes] = []

        def collect(_ctx: Any, data: Any, size: int) -> int:
            batch.append(ct.string_at(data, size))
            return 0

        callback = RINGBUF_CB_TYPE(collect)
        rb = lib.bpf_new_ringbuf(self.fd, callback, None)
        if not rb:
            log.error("cannot read the ring buffer of %s", self.spec.name)
            return
        try:
            while not self._stop.is_set():
                lib.bpf_poll_ringbuf(rb, POLL_MS)
                if batch:
                    raw, batch[:] = list(batch), []
                    self._dispatch(raw)
        finally:
            lib.bpf_free_ringbuf(rb)

    def _dispatch(self, raw: Sequence[bytes]) -> None:
        try:
            events = decode(self.spec, self.layout, raw)
        except Exception:  # one bad batch must not stop the reader
            log.exception("decoding %d events of %s failed", len(raw), self.spec.name)
            return
        CLOCK.measure()
        observed = time.time_ns()
        with self._lock:
            subscribers = list(self._subscribers.values())
        for sink in subscribers:
            sink.offer(events, observed)
