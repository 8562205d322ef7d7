"""Batch reads of BPF maps into columns.

BPF_MAP_LOOKUP_BATCH syscalls copy the keys and values, a bounded batch at a
time, into two flat buffers sized to what the map holds; ``struct.iter_unpack`` then
splits them into columns in C, so the per-entry cost stays far below the
5 µs of BCC's ``Table.items()``. The manifest's fields are checked against the
struct layout BCC derived from the compiled program, so a manifest that
disagrees with its C source fails at load, not with garbage at read time.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ebpf_sidecar import decoders
from ebpf_sidecar.catalog import FieldSpec, MapSpec
from ebpf_sidecar.decoders import DROP
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

log = logging.getLogger(__name__)

_INT_CODES = {
    (1, False): "B",
    (2, False): "H",
    (4, False): "I",
    (8, False): "Q",
    (1, True): "b",
    (2, True): "h",
    (4, True): "i",
    (8, True): "q",
}


class LayoutError(ValueError):
    """The manifest's fields do not match the compiled struct."""


@dataclass(frozen=True)
class Layout:
    """Where each manifest field sits in one key or value of ``stride`` bytes."""

    fields: tuple[FieldSpec, ...]  # in offset order
    unpacker: struct.Struct

    @classmethod
    def of(cls, ctype: Any, fields: Sequence[FieldSpec], stride: int, where: str) -> Layout:
        """Check ``fields`` against BCC's ctypes type and build the unpacker."""
        if hasattr(ctype, "_fields_"):
            placed = []
            compiled = {n for n, *_ in ctype._fields_ if not n.startswith("__pad")}
            declared = {f.name for f in fields}
            if compiled != declared:
                raise LayoutError(
                    f"{where}: manifest fields {sorted(declared)} do not match the "
                    f"compiled struct's {sorted(compiled)}"
                )
            for f in fields:
                member = getattr(ctype, f.name)
                if member.size != f.size:
                    raise LayoutError(
                        f"{where}.{f.name}: manifest says {f.c_type} ({f.size} bytes), "
                        f"the compiled struct has {member.size} bytes"
                    )
                placed.append((member.offset, f))
        else:
            if len(fields) != 1 or ct.sizeof(ctype) != fields[0].size:
                raise LayoutError(
                    f"{where}: the compiled type is a {ct.sizeof(ctype)}-byte scalar; "
                    "the manifest must declare exactly one field of that size"
                )
            placed = [(0, fields[0])]
        placed.sort(key=lambda p: p[0])
        fmt, pos = "<", 0
        for offset, f in placed:
            fmt += "x" * (offset - pos)
            fmt += f"{f.size}s" if f.c_type.startswith("char") else _INT_CODES[(f.size, f.signed)]
            pos = offset + f.size
        fmt += "x" * (stride - pos)
        return cls(tuple(f for _, f in placed), struct.Struct(fmt))

    def columns(self, raw: bytes, count: int) -> dict[str, list[Any]]:
        if count == 0:
            return {f.name: [] for f in self.fields}
        rows = struct.iter_unpack(self.unpacker.format, raw[: count * self.unpacker.size])
        cols = list(zip(*rows, strict=True))
        return {f.name: list(c) for f, c in zip(self.fields, cols, strict=True)}


# One batch syscall copies at most this many bytes of keys and values: the
# buffers a reader keeps, whatever the map's capacity. A map of a million
# entries holding a hundred is read into a few KiB, not into capacity * CPUs
# (that was 70-140 ms and +110 MB of RSS a read at max_processes=1048576).
BATCH_BYTES = 256 * 1024
# ...but never fewer entries than this (per-CPU values on a many-CPU host)
MIN_BATCH = 64


class BatchBuffers:
    """Key and value buffers for one batch syscall, reused by every read of a map."""

    def __init__(self, key_size: int, value_size: int, capacity: int) -> None:
        self.key_size, self.value_size = key_size, value_size
        fit = max(MIN_BATCH, BATCH_BYTES // (key_size + value_size))
        self._allocate(max(1, min(capacity, fit)))

    def _allocate(self, entries: int) -> None:
        self.entries = entries
        self.keys = ct.create_string_buffer(self.key_size * entries)
        self.values = ct.create_string_buffer(self.value_size * entries)

    def grow(self) -> None:
        """Room for a hash bucket larger than a batch (the kernel returns whole buckets)."""
        self._allocate(self.entries * 2)


def _lookup_batch(
    map_fd: int, buffers: BatchBuffers, capacity: int, delete: bool = False
) -> tuple[bytes, bytes, int]:
    """Every entry of a map; with ``delete``, removed as it is read (one syscall a batch)."""
    from ebpf_sidecar.libbpf import lib

    call = lib.bpf_lookup_and_delete_batch if delete else lib.bpf_lookup_batch
    what = "BPF_MAP_LOOKUP_AND_DELETE_BATCH" if delete else "BPF_MAP_LOOKUP_BATCH"
    keys, values = bytearray(), bytearray()
    in_batch, out_batch, count = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
    total = 0
    started = False
    while total < capacity:
        count.value = buffers.entries
        res = call(
            map_fd,
            ct.byref(in_batch) if started else None,
            ct.byref(out_batch),
            buffers.keys,
            buffers.values,
            ct.byref(count),
        )
        err = ct.get_errno()
        got = count.value
        keys += memoryview(buffers.keys)[: got * buffers.key_size]
        values += memoryview(buffers.values)[: got * buffers.value_size]
        total += got
        if res != 0:
            if err == errno.ENOENT:  # the normal end of the map
                break
            if err == errno.ENOSPC and got == 0:  # a bucket larger than a batch
                buffers.grow()
                continue
            raise OSError(err, f"{what} failed: {os.strerror(err)}")
        if got == 0:
            break
        in_batch.value = out_batch.value
        started = True
    return bytes(keys), bytes(values), total


def _delete_batch(map_fd: int, keys: bytes, key_size: int) -> None:
    from ebpf_sidecar.libbpf import lib

    count = ct.c_uint32(len(keys) // key_size)
    buf = ct.create_string_buffer(keys, len(keys))
    if lib.bpf_delete_batch(map_fd, buf, ct.byref(count)) != 0:
        err = ct.get_errno()
        # ENOENT: an entry vanished meanwhile (e.g. the kernel side deleted it)
        if err != errno.ENOENT:
            raise OSError(err, f"BPF_MAP_DELETE_BATCH failed: {os.strerror(err)}")


class ExitedProcessReaper:
    """Deletes entries of exited processes once their last values went out.

    An entry whose pid has no /proc entry is exported in two snapshots of
    every stream that reads the map (the second catches a final update
    racing the exit, such as the dying task's last context switch), then
    deleted, so short-lived pids do not pile up as series, and a stream that
    reads faster never deletes what a slower one has not exported yet.
    /proc must be the host's (hostPID in Kubernetes).
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._streams: set[object] = set()
        # key bytes of a dead process's entry -> snapshots of each stream it was in
        self._exports: dict[bytes, dict[object, int]] = {}

    def subscribe(self, stream: object) -> None:
        """``stream`` reads the map from now on: deletions wait for it too."""
        self._streams.add(stream)

    def unsubscribe(self, stream: object) -> None:
        self._streams.discard(stream)
        for exports in self._exports.values():
            exports.pop(stream, None)

    def reap(
        self, map_fd: int, keys_raw: bytes, key_size: int, pids: list[int], stream: object = None
    ) -> int:
        """After ``stream`` exported a read: delete what every stream has exported twice."""
        # One listing of /proc per snapshot, not one stat per entry.
        alive = {int(name) for name in os.listdir(self.proc) if name.isdigit()}
        dead = {
            keys_raw[i * key_size : (i + 1) * key_size]
            for i, pid in enumerate(pids)
            if pid not in alive
        }
        self._exports = {k: e for k, e in self._exports.items() if k in dead}
        for key in dead:
            exports = self._exports.setdefault(key, {})
            exports[stream] = exports.get(stream, 0) + 1
        readers = self._streams | {stream}
        expired = [k for k, e in self._exports.items() if all(e.get(r, 0) >= 2 for r in readers)]
        for key in expired:
            del self._exports[key]
        if expired:
            _delete_batch(map_fd, b"".join(expired), key_size)
        return len(expired)


class MapReader:
    """Reads one map of a loaded program into a MapSnapshot.

    ``read(clear=True)`` returns what accumulated since the previous cleared
    read: hash maps are read with BPF_MAP_LOOKUP_AND_DELETE_BATCH (entries go
    away, increments racing their entry's deletion are lost); array maps
    cannot delete, so the reader subtracts the values of its previous read
    (exact). A reader read with ``clear`` must belong to one stream only.
    ``read(per_cpu=True)`` keeps one entry per CPU of a per-CPU map, with an
    extra key column ``cpu``, instead of summing the CPUs.
    """

    def __init__(
        self,
        table: Any,
        spec: MapSpec,
        where: str,
        max_entries: int,
        dropped_table: Any = None,
        dropped_name: str | None = None,
    ) -> None:
        """``table``: BCC's table, or a :class:`PinnedTable` of an adopted instance.

        ``max_entries``: the size the manifest gives the map for the parameters used.
        """
        self.table = table
        self.spec = spec
        self.dropped_table = dropped_table
        self.dropped_name = dropped_name
        self.cpus = int(getattr(table, "total_cpu", 1))
        self.per_cpu = hasattr(table, "sLeaf")
        self.is_array = _is_array(table)
        self.key_size = ct.sizeof(table.Key)
        self.value_size = ct.sizeof(table.Leaf)  # all CPUs' values for per-CPU maps
        self.capacity = int(table.max_entries)
        self.buffers = BatchBuffers(self.key_size, self.value_size, self.capacity)
        # Streams sharing an instance read its maps from their own threads:
        # one read at a time per map (the buffers and the reaper's state).
        self._lock = threading.Lock()
        _check_size(spec, where, max_entries, self.capacity, self.is_array)
        single_leaf = table.sLeaf if self.per_cpu else table.Leaf
        self.key_layout = Layout.of(table.Key, spec.key, self.key_size, f"{where}.key")
        self.value_layout = Layout.of(
            single_leaf, spec.value, self.value_size // self.cpus, f"{where}.value"
        )
        self.reaper = ExitedProcessReaper() if spec.pid_field else None
        # array maps read with clear: the previous raw values, by key bytes
        self._previous: dict[bytes, tuple[Any, ...]] = {}

    def read(
        self,
        snap: pb.MapSnapshot,
        clear: bool = False,
        per_cpu: bool = False,
        stream: object = None,
    ) -> None:
        """``stream``: who reads, for the exited-process reaper (subscribe it first)."""
        if per_cpu and not self.per_cpu:
            raise ValueError(f"map {self.spec.name!r} is not a per-CPU map")
        with self._lock:
            self._read(snap, clear, per_cpu, stream)

    def subscribe(self, stream: object) -> None:
        """``stream`` reads this map from now on (the reaper waits for its exports)."""
        if self.reaper is not None:
            with self._lock:
                self.reaper.subscribe(stream)

    def unsubscribe(self, stream: object) -> None:
        if self.reaper is not None:
            with self._lock:
                self.reaper.unsubscribe(stream)

    def _read(self, snap: pb.MapSnapshot, clear: bool, per_cpu: bool, stream: object) -> None:
        delete = clear and not self.is_array
        keys_raw, values_raw, n = _lookup_batch(
            self.table.map_fd, self.buffers, self.capacity, delete=delete
        )
        keys = self.key_layout.columns(keys_raw, n)
        c = self.cpus if self.per_cpu else 1
        values = self.value_layout.columns(values_raw, n * c)  # c values per key
        if clear and self.is_array:
            values = self._since_previous(keys_raw, n, c, values)
        key_cols: dict[str, list[Any]] = {
            f.name: decoders.apply(f.decoders, keys[f.name]) for f in self.spec.key
        }
        for d in self.spec.derived:
            key_cols[d.name] = decoders.apply(d.decoders, keys[d.source.name])
        value_cols = {f.name: decoders.apply(f.decoders, values[f.name]) for f in self.spec.value}
        if per_cpu:
            key_cols = {name: [v for v in col for _ in range(c)] for name, col in key_cols.items()}
            key_cols["cpu"] = list(range(c)) * n
            rows = n * c
        else:
            if c > 1:
                # sum each run of c per-CPU values; zip over one iterator
                # groups them without a Python-level loop per entry
                value_cols = {
                    name: list(map(sum, zip(*[iter(col)] * c, strict=True)))
                    for name, col in value_cols.items()
                }
            rows = n
        kept = _without_dropped(rows, key_cols, value_cols)
        snap.entries = kept
        # An array always holds max_entries entries and is never full: 0 says
        # "no capacity to run out of" to the receiver.
        snap.max_entries = 0 if self.is_array else self.capacity
        for name, t in self._key_types(per_cpu):
            _fill(snap.key_columns.add(), name, t, key_cols[name])
        clamped = 0
        for f in self.spec.value:
            clamped += _fill(snap.value_columns.add(), f.name, f.wire_type, value_cols[f.name])
        if clamped:
            log.warning(
                "map %s: %d values out of their 64-bit range (per-CPU values summed past "
                "2^64, or a counter below its previous read) were clamped to the range",
                self.spec.name,
                clamped,
            )
        if self.dropped_table is not None:
            snap.dropped_updates = sum_counter(self.dropped_table)
        if self.reaper is not None and not delete:
            self.reaper.reap(
                self.table.map_fd, keys_raw, self.key_size, keys[self.spec.pid_field], stream
            )

    def _key_types(self, per_cpu: bool) -> list[tuple[str, pb.FieldType]]:
        out = [(f.name, f.wire_type) for f in self.spec.key]
        out += [(d.name, d.wire_type) for d in self.spec.derived]
        if per_cpu:
            out.append(("cpu", pb.FIELD_TYPE_UINT))
        return out

    def _since_previous(
        self, keys_raw: bytes, n: int, c: int, values: dict[str, list[Any]]
    ) -> dict[str, list[Any]]:
        """Array maps: each value minus what the previous read saw for its key."""
        names = list(values)
        current: dict[bytes, tuple[Any, ...]] = {}
        for i in range(n):
            key = keys_raw[i * self.key_size : (i + 1) * self.key_size]
            row = tuple(values[name][i * c + j] for name in names for j in range(c))
            current[key] = row
            before = self._previous.get(key)
            if before is not None:
                for k, name in enumerate(names):
                    for j in range(c):
                        values[name][i * c + j] -= before[k * c + j]
        self._previous = current
        return values


class PinnedTable:
    """A pinned map of an adopted instance, with what MapReader uses of BCC's tables.

    The key and value types are BCC's own descriptions, stored when the
    instance was compiled (``ebpf_sidecar.pins``), decoded by BCC's decoder:
    the layouts are exactly those of the compiled program.
    """

    Key: Any
    Leaf: Any

    def __init__(self, fd: int, key: Any, leaf: Any, max_entries: int) -> None:
        self.map_fd = fd
        self.Key, self.Leaf = key, leaf
        self.max_entries = max_entries

    @staticmethod
    def from_desc(fd: int, desc: dict[str, Any]) -> PinnedTable:
        """``desc``: what :func:`describe_table` stored when the instance was pinned."""
        from ebpf_sidecar.libbpf import possible_cpus

        if "key_type" not in desc:
            # pinned by a sidecar before this layout was stored: BCC's own
            # descriptions only, which take BCC to decode; compile it afresh
            raise ValueError("the pinned layout predates flat type descriptions")
        key, leaf = flat_ctype(desc["key_type"]), flat_ctype(desc["leaf_type"])
        kind: type[PinnedTable] = PinnedArray if desc["array"] else PinnedTable
        table = kind(fd, key, leaf, int(desc["max_entries"]))
        if desc["per_cpu"]:
            # as BCC's PerCpuHash/PerCpuArray: values padded to 8 bytes per CPU
            table.sLeaf = leaf
            table.total_cpu = possible_cpus()
            if ct.sizeof(leaf) % 8 == 0:
                table.Leaf = leaf * table.total_cpu
            elif leaf == ct.c_uint:
                table.Leaf = ct.c_uint64 * table.total_cpu
            elif leaf == ct.c_int:
                table.Leaf = ct.c_int64 * table.total_cpu
            else:
                raise LayoutError(f"per-CPU values of {ct.sizeof(leaf)} bytes are not supported")
        return table

    sLeaf: Any  # only per-CPU maps have it (MapReader tests hasattr)
    total_cpu: int

    def __getitem__(self, key: Any) -> Any:
        from ebpf_sidecar.libbpf import lib

        k = self.Key(key.value) if hasattr(key, "value") else key
        leaf = self.Leaf()
        if lib.bpf_lookup_elem(self.map_fd, ct.byref(k), ct.byref(leaf)) != 0:
            err = ct.get_errno()
            raise KeyError(f"lookup failed: {os.strerror(err)}")
        return leaf


class PinnedArray(PinnedTable):
    """A pinned array map (reads with clear subtract, never delete)."""


def _is_array(table: Any) -> bool:
    if isinstance(table, PinnedTable):
        return isinstance(table, PinnedArray)
    from bcc import table as bcc_table  # a BCC table: BCC is loaded already

    return isinstance(table, bcc_table.ArrayBase)


_SCALARS = {
    (1, False): ct.c_uint8,
    (2, False): ct.c_uint16,
    (4, False): ct.c_uint32,
    (8, False): ct.c_uint64,
    (1, True): ct.c_int8,
    (2, True): ct.c_int16,
    (4, True): ct.c_int32,
    (8, True): ct.c_int64,
}


def _flat_member(ctype: Any) -> list[Any]:
    """[size, signed] of an integer type; [size, None] of anything else."""
    size = ct.sizeof(ctype)
    if issubclass(ctype, ct._SimpleCData) and (size, False) in _SCALARS and ctype._type_ != "?":
        try:
            return [size, ctype(-1).value < 0]
        except TypeError:  # char, pointers
            pass
    return [size, None]


def flat_type(ctype: Any) -> dict[str, Any]:
    """A compiled key or value type as JSON: its size, and its top-level members'
    names, offsets, sizes and signedness, all that :class:`MapReader` uses of it.

    Stored with the pins, so that an adopting process rebuilds the type
    (:func:`flat_ctype`) without loading BCC (and with it LLVM) to decode it.
    """
    if hasattr(ctype, "_fields_"):
        members = []
        for name, *_ in ctype._fields_:
            m = getattr(ctype, name)
            member_type = next(f[1] for f in ctype._fields_ if f[0] == name)
            members.append([name, m.offset, *_flat_member(member_type)])
        return {"size": ct.sizeof(ctype), "members": members}
    return {"size": ct.sizeof(ctype), "scalar": _flat_member(ctype)[1]}


def flat_ctype(desc: dict[str, Any]) -> Any:
    """The ctypes type :func:`flat_type` described: same size and member places."""
    size = int(desc["size"])
    if "members" not in desc:
        signed = desc["scalar"]
        if signed is not None and (size, bool(signed)) in _SCALARS:
            return _SCALARS[(size, bool(signed))]
        return ct.c_uint8 * size
    fields: list[tuple[str, Any]] = []
    pos = 0
    for name, offset, msize, signed in sorted(desc["members"], key=lambda m: int(m[1])):
        if offset < pos:
            raise ValueError(f"member {name} overlaps the one before it (a union)")
        if offset > pos:
            fields.append((f"__pad_{pos}", ct.c_uint8 * (offset - pos)))
        scalar = _SCALARS.get((msize, bool(signed))) if signed is not None else None
        fields.append((name, scalar or ct.c_uint8 * msize))
        pos = offset + msize
    if size > pos:
        fields.append((f"__pad_{pos}", ct.c_uint8 * (size - pos)))
    return type("PinnedStruct", (ct.Structure,), {"_pack_": 1, "_fields_": fields})


def _check_size(spec: MapSpec, where: str, declared: int, compiled: int, array: bool) -> None:
    """The manifest's sizes against the compiled map's, like Layout checks the fields."""
    if declared != compiled:
        raise LayoutError(
            f"{where}.max_entries: the manifest says {spec.size} = {declared} for these "
            f"parameters, the compiled map has {compiled} entries; make max_entries follow "
            "the size in the C source"
        )
    hist = spec.histogram
    # An array holding one histogram has one entry per slot; a hash map's
    # slot count is a number its C code clamps to, invisible from here.
    if hist is None or not array or [f.name for f in spec.key] != [hist.slot_field]:
        return
    if hist.slots != compiled:
        raise LayoutError(
            f"{where}.histogram.slots: the manifest says {hist.slots}, the compiled "
            f"array has {compiled} slots"
        )


def _without_dropped(rows: int, *groups: dict[str, list[Any]]) -> int:
    """Remove, in place, every entry that a filtering decoder dropped in any column."""
    # The common case (no filter dropped anything) is a scan in C per column.
    if not any(DROP in col for g in groups for col in g.values()):
        return rows
    drop = {i for g in groups for col in g.values() for i, v in enumerate(col) if v is DROP}
    if not drop:
        return rows
    for g in groups:
        for name, col in g.items():
            g[name] = [v for i, v in enumerate(col) if i not in drop]
    return rows - len(drop)


def sum_counter(table: Any) -> int:
    """Element 0 of a (per-CPU) array counter, summed over CPUs."""
    value = table[ct.c_int(0)]
    try:
        return int(sum(value))
    except TypeError:
        return int(value.value)


def _valid_text(text: str) -> str:
    """``text`` with undecodable bytes (and any other lone surrogate) as U+FFFD or ?."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "replace").decode()


U64_MAX = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def _clamped(values: list[Any], low: int, high: int) -> tuple[list[Any], int]:
    """``values`` saturated to [low, high], and how many were outside."""
    if not values or (low <= min(values) and max(values) <= high):  # the usual case, in C
        return values, 0
    out = [min(max(v, low), high) for v in values]
    return out, sum(1 for v in values if not low <= v <= high)


def _fill(column: pb.Column, name: str, t: pb.FieldType, values: list[Any]) -> int:
    """Fill ``column``; the number of integers clamped to the wire type's range.

    The sum of a u64 over CPUs can pass 2^64 (each CPU's counter is a u64);
    protobuf would refuse the whole map for one such value, so it saturates
    at 2^64 - 1 (and the reader logs it).
    """
    column.field = name
    if t == pb.FIELD_TYPE_STRING:
        texts = [v if isinstance(v, str) else decoders.get("string").decode([v])[0] for v in values]
        try:
            column.strings.extend(texts)
        except (UnicodeError, ValueError):
            # A decoder passed on text that is not valid UTF-8 (surrogates of
            # undecodable bytes): replace those characters, keep the column.
            del column.strings[:]
            column.strings.extend(_valid_text(t) for t in texts)
        return 0
    if t == pb.FIELD_TYPE_INT:
        values, clamped = _clamped(values, I64_MIN, I64_MAX)
        column.ints.extend(values)
    else:
        values, clamped = _clamped(values, 0, U64_MAX)
        column.uints.extend(values)
    return clamped
