"""Batch reads of BPF maps into columns.

BPF_MAP_LOOKUP_BATCH syscalls copy the keys and values straight into two
flat buffers that the reader keeps from one read to the next, sized to what
the map holds (not to its capacity). numpy structured views over those
buffers then give each field as a column, and per-CPU values are summed as
a reshape and a sum, so no Python code runs per entry: a 1 M-entry map
reads in well under two seconds (bench/snapshot.py). Decoders run once per
distinct raw value (a comm, a cgroup id, a device number), whose results
are mapped back onto the entries. The manifest's fields are checked against
the struct layout BCC derived from the compiled program, so a manifest that
disagrees with its C source fails at load, not with garbage at read time.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ebpf_sidecar import decoders
from ebpf_sidecar.catalog import FieldSpec, MapSpec
from ebpf_sidecar.decoders import DROP
from ebpf_sidecar.libbpf import read_u64, write_u64
from ebpf_sidecar.write_behind import WriteBehind
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]


class LayoutError(ValueError):
    """The manifest's fields do not match the compiled struct."""


def _field_dtype(f: FieldSpec) -> str:
    if f.c_type.startswith("char"):
        return f"V{f.size}"  # raw bytes, trailing NULs included (S would strip them)
    return f"<{'i' if f.signed else 'u'}{f.size}"


@dataclass(frozen=True)
class Layout:
    """Where each manifest field sits in one key or value of ``stride`` bytes."""

    fields: tuple[FieldSpec, ...]  # in offset order
    dtype: np.dtype[Any]  # a numpy structured type of ``stride`` bytes

    @classmethod
    def of(cls, ctype: Any, fields: Sequence[FieldSpec], stride: int, where: str) -> Layout:
        """Check ``fields`` against BCC's ctypes type and build the record type."""
        if hasattr(ctype, "_fields_"):
            placed = []
            # members named __* are the program's own bookkeeping (padding,
            # cpu.c's __written), not fields of the manifest
            compiled = {n for n, *_ in ctype._fields_ if not n.startswith("__")}
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
        dtype = np.dtype(
            {
                "names": [f.name for _, f in placed],
                "formats": [_field_dtype(f) for _, f in placed],
                "offsets": [offset for offset, _ in placed],
                "itemsize": stride,
            }
        )
        return cls(tuple(f for _, f in placed), dtype)

    @property
    def stride(self) -> int:
        return int(self.dtype.itemsize)

    def arrays(self, raw: Any, count: int) -> dict[str, Array]:
        """Each field of the first ``count`` records of ``raw`` as a column (views, no copy)."""
        records = np.frombuffer(raw, dtype=self.dtype, count=count)
        return {f.name: records[f.name] for f in self.fields}

    def columns(self, raw: bytes, count: int) -> dict[str, list[Any]]:
        """Each field as a list of Python values (ints, or bytes for char arrays)."""
        return {name: _to_list(a) for name, a in self.arrays(raw, count).items()}


def _to_list(a: Array) -> list[Any]:
    if a.dtype.kind == "V":
        return [v.tobytes() for v in a]
    return list(a.tolist())


# The buffers a reader starts with hold this many bytes of keys and values
# (they grow to what the map holds, and shrink back when it holds less): a
# map of a million entries holding a hundred is read into a few KiB, not
# into capacity * CPUs (that was 70-140 ms and +110 MB of RSS a read at
# max_processes=1048576).
BATCH_BYTES = 256 * 1024
# ...but never fewer entries than this (per-CPU values on a many-CPU host)
MIN_BATCH = 64


class BatchBuffers:
    """Key and value buffers reused by every read of a map, sized to what it holds.

    Batch syscalls write into them at the offset of the entries read so
    far: no copy between a batch and the columns.
    """

    def __init__(self, key_size: int, value_size: int, capacity: int) -> None:
        self.key_size, self.value_size = key_size, value_size
        fit = max(MIN_BATCH, BATCH_BYTES // (key_size + value_size))
        self.batch = max(1, min(capacity, fit))
        self.entries = 0
        self.keys: Array = np.empty(0, np.uint8)
        self.values: Array = np.empty(0, np.uint8)
        self._allocate(self.batch)

    def _allocate(self, entries: int, keep: int = 0) -> None:
        keys = np.empty(self.key_size * entries, np.uint8)
        values = np.empty(self.value_size * entries, np.uint8)
        keys[: keep * self.key_size] = self.keys[: keep * self.key_size]
        values[: keep * self.value_size] = self.values[: keep * self.value_size]
        self.keys, self.values, self.entries = keys, values, entries

    def grow(self, keep: int) -> None:
        """Twice the room, keeping the first ``keep`` entries read."""
        self._allocate(self.entries * 2, keep)

    def fit(self, held: int) -> None:
        """After a read of ``held`` entries: give back room the map no longer needs."""
        if self.entries > self.batch and held < self.entries // 4:
            self._allocate(max(self.batch, 2 * held))

    def key_ptr(self, entry: int) -> ct.c_void_p:
        return ct.c_void_p(self.keys.ctypes.data + entry * self.key_size)

    def value_ptr(self, entry: int) -> ct.c_void_p:
        return ct.c_void_p(self.values.ctypes.data + entry * self.value_size)


def _lookup_batch(map_fd: int, buffers: BatchBuffers, capacity: int, delete: bool = False) -> int:
    """Every entry of a map into ``buffers``, their number; with ``delete``,
    removed as they are read (one syscall a batch)."""
    from ebpf_sidecar.libbpf import lib

    call = lib.bpf_lookup_and_delete_batch if delete else lib.bpf_lookup_batch
    what = "BPF_MAP_LOOKUP_AND_DELETE_BATCH" if delete else "BPF_MAP_LOOKUP_BATCH"
    in_batch, out_batch, count = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
    total = 0
    started = False
    while total < capacity:
        if buffers.entries - total < buffers.batch:
            buffers.grow(total)
        count.value = buffers.entries - total
        res = call(
            map_fd,
            ct.byref(in_batch) if started else None,
            ct.byref(out_batch),
            buffers.key_ptr(total),
            buffers.value_ptr(total),
            ct.byref(count),
        )
        err = ct.get_errno()
        got = count.value
        total += got
        if res != 0:
            if err == errno.ENOENT:  # the normal end of the map
                break
            if err == errno.ENOSPC and got == 0:  # a bucket larger than the room left
                buffers.grow(total)
                continue
            raise OSError(err, f"{what} failed: {os.strerror(err)}")
        if got == 0:
            break
        in_batch.value = out_batch.value
        started = True
    return total


def _delete_batch(map_fd: int, keys: bytes, key_size: int) -> None:
    from ebpf_sidecar.libbpf import lib

    count = ct.c_uint32(len(keys) // key_size)
    buf = ct.create_string_buffer(keys, len(keys))
    if lib.bpf_delete_batch(map_fd, buf, ct.byref(count)) != 0:
        err = ct.get_errno()
        # ENOENT: an entry vanished meanwhile (e.g. the kernel side deleted it)
        if err != errno.ENOENT:
            raise OSError(err, f"BPF_MAP_DELETE_BATCH failed: {os.strerror(err)}")


def _key_column(keys_raw: Any, key_size: int, count: int) -> Array:
    """Each key as one fixed-width bytes value (comparable as a whole)."""
    return np.frombuffer(keys_raw, dtype=f"S{key_size}", count=count)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hash_rows(column: Array) -> Array:
    """A 64-bit hash of each fixed-width value of ``column`` (to sort and match by; equal
    hashes are checked byte for byte)."""
    n, width = len(column), column.dtype.itemsize
    raw = np.ascontiguousarray(column).view(np.uint8).reshape(n, width)
    if width % 8:
        raw = np.concatenate([raw, np.zeros((n, 8 - width % 8), np.uint8)], axis=1)
    words = raw.view("<u8")
    h = np.zeros(n, np.uint64)
    for j in range(words.shape[1]):
        h = (h ^ words[:, j]) * _MIX
        h ^= h >> np.uint64(29)
    return h


def _factorize(column: Array) -> tuple[Array, Array]:
    """The distinct values of ``column`` and, per entry, the index of its value among them."""
    if column.dtype.kind in "iub":
        distinct = np.unique(column)  # hashed, not sorted per entry
        return distinct, np.searchsorted(distinct, column)
    # wider values (char arrays, whole keys) go by a hash, checked for collisions
    h = _hash_rows(column)
    hashes = np.unique(h)
    inverse = np.searchsorted(hashes, h)
    first = np.empty(len(hashes), np.intp)
    first[inverse] = np.arange(len(column))
    distinct = column[first]
    if bool((distinct[inverse] == column).all()):
        return distinct, inverse
    return tuple(np.unique(column, return_inverse=True))  # type: ignore[return-value]


def _proc_pids(proc: str) -> Array:
    return np.fromiter((int(name) for name in os.listdir(proc) if name.isdigit()), dtype=np.int64)


class ExitedProcessReaper:
    """Deletes entries of exited processes once their last values went out.

    An entry whose pid has no /proc entry is exported in two snapshots of
    every stream that reads the map (the second catches a final update
    racing the exit, such as the dying task's last context switch), then
    deleted, so short-lived pids do not pile up as series, and a stream that
    reads faster never deletes what a slower one has not exported yet.
    /proc must be the host's (hostPID in Kubernetes).

    The pid column is compared with one listing of /proc, and the state (how
    often each stream exported each dead process's entry) is kept as arrays
    in the order of the read: when the map's order did not change, as
    between most reads of a large map, counts carry over row by row; else
    dead entries are matched by a hash of their key. No Python code runs per
    entry.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._streams: set[object] = set()
        # the keys of the previous read, in read order, and per stream how
        # many of its snapshots each entry of a dead process was in (0 for a
        # live one; 2 at most)
        self._keys: Array = np.empty(0, dtype="S1")
        self._exports: dict[object, Array] = {}
        self.deleted: Array = np.empty(0, dtype="S1")  # the keys the last reap deleted

    def subscribe(self, stream: object) -> None:
        """``stream`` reads the map from now on: deletions wait for it too."""
        self._streams.add(stream)

    def unsubscribe(self, stream: object) -> None:
        self._streams.discard(stream)
        self._exports.pop(stream, None)

    def reap(
        self,
        map_fd: int,
        keys_raw: Any,
        key_size: int,
        pids: Sequence[int] | Array,
        stream: object = None,
        same_keys: bool = False,
    ) -> int:
        """After ``stream`` exported a read: delete what every stream has exported twice.

        ``same_keys``: the caller knows the keys are the previous call's, in
        the same order (a written-keys state whose slots did not change):
        not compared again.
        """
        pid_col = np.asarray(pids, dtype=np.int64)
        alive = _proc_pids(self.proc)  # one listing of /proc per snapshot
        keys = _key_column(keys_raw, key_size, len(pid_col))
        dead = ~np.isin(pid_col, alive)
        if len(keys) == len(self._keys) and (same_keys or bool((keys == self._keys).all())):
            # the map's entries in the same order as at the previous read
            exports = {s: np.where(dead, c, 0).astype(np.uint8) for s, c in self._exports.items()}
        else:
            exports = self._carry(keys, dead)
            self._keys = keys.copy()  # the buffer is the next read's
        mine = exports.get(stream, np.zeros(len(keys), np.uint8))
        exports[stream] = np.where(dead, np.minimum(mine, 1) + 1, 0).astype(np.uint8)
        expired = dead.copy()
        for r in self._streams | {stream}:
            if r in exports:
                expired &= exports[r] >= 2
            else:
                expired[:] = False
        self._exports = exports
        self.deleted = keys[expired]
        n = len(self.deleted)
        if n:
            _delete_batch(map_fd, self.deleted.tobytes(), key_size)
        return n

    def _carry(self, keys: Array, dead: Array) -> dict[object, Array]:
        """The streams' counts of the previous read's dead entries moved to
        where those entries are in this read (matched by a hash of the key,
        checked byte for byte): the map's order changed."""
        out = {s: np.zeros(len(keys), np.uint8) for s in self._exports}
        had = np.zeros(len(self._keys), bool)
        for counts in self._exports.values():
            had |= counts > 0
        old_rows = np.flatnonzero(had)
        rows = np.flatnonzero(dead)
        if not len(old_rows) or not len(rows):
            return out
        old_hash = _hash_rows(self._keys[old_rows])
        order = np.argsort(old_hash)
        old_rows, old_hash = old_rows[order], old_hash[order]
        h = _hash_rows(keys[rows])
        at = np.searchsorted(old_hash, h)
        found = at < len(old_rows)
        found[found] = old_hash[at[found]] == h[found]
        found[found] = self._keys[old_rows[at[found]]] == keys[rows[found]]
        for s, counts in self._exports.items():
            out[s][rows[found]] = counts[old_rows[at[found]]]
        return out


@dataclass(frozen=True)
class _Coded:
    """A decoded column kept as its distinct decoded values and a code per entry."""

    table: Array  # object array: the decoded value of each distinct raw value
    codes: Array  # per entry, its index into table

    def __len__(self) -> int:
        return len(self.codes)

    def materialize(self) -> Array:
        return self.table[self.codes]


Col = Any  # a numpy array, or a _Coded column


def _take(col: Col, rows: Array) -> Col:
    """``col`` at ``rows`` (a mask or indexes)."""
    return _Coded(col.table, col.codes[rows]) if isinstance(col, _Coded) else col[rows]


def _repeat(col: Col, c: int) -> Col:
    """Each value of ``col`` ``c`` times in a row."""
    if isinstance(col, _Coded):
        return _Coded(col.table, np.repeat(col.codes, c))
    return np.repeat(col, c)


def _plain(col: Col) -> Array:
    return col.materialize() if isinstance(col, _Coded) else col


@dataclass
class _Rows:
    """The columns of one read while they are decoded and filtered."""

    keys: dict[str, Any] = field(default_factory=dict)  # arrays, or object arrays of decoded values
    values: dict[str, Any] = field(default_factory=dict)
    drop: Array | None = None  # entries a filtering decoder dropped

    def dropped(self, mask: Array | None) -> None:
        if mask is not None:
            self.drop = mask if self.drop is None else self.drop | mask


def _decode_distinct(
    chain: Sequence[decoders.Decoder],
    column: Array,
    text: bool,
    factorized: tuple[Array, Array] | None = None,
) -> tuple[Col, Array | None]:
    """``chain`` on each distinct value of ``column`` once, mapped back onto every entry.

    Returns the decoded column (a _Coded column) and the entries a filter
    dropped (None when none). ``factorized``: ``_factorize(column)`` when
    the caller has it already. With ``text`` (the field travels as strings),
    every value becomes valid text here, once per distinct value. A numeric
    column without decoders comes back as it is.
    """
    if not chain and not text:
        return column, None
    if len(column) == 0:
        return np.empty(0, dtype=object), None
    distinct, inverse = factorized if factorized is not None else _factorize(column)
    raw = _to_list(distinct)
    decoded = decoders.apply(chain, raw) if chain else raw
    if text:
        decoded = [v if v is DROP else _text(v) for v in decoded]
    table = np.empty(len(decoded), dtype=object)
    table[:] = decoded
    dropped = np.fromiter((v is DROP for v in decoded), dtype=bool, count=len(decoded))
    return _Coded(table, inverse), (dropped[inverse] if dropped.any() else None)


def _text(value: Any) -> str:
    """A value of a string column as valid text: bytes as a C string, and
    undecodable bytes (surrogates a decoder passed on) as U+FFFD."""
    text = value if isinstance(value, str) else str(decoders.get("string").decode([value])[0])
    try:
        text.encode("utf-8")
    except UnicodeError:
        return _valid_text(text)
    return text


U64_MAX = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def _sum_cpus(column: Array, n: int, c: int) -> tuple[Array, Array | None]:
    """Each run of ``c`` per-CPU values summed; the sums past 2^64 - 1 (saturated) marked."""
    if column.dtype.kind == "u":
        per_cpu = column.astype(np.uint64, copy=False).reshape(n, c)
        total = per_cpu[:, 0].copy()
        over = np.zeros(n, bool)
        for j in range(1, c):
            following = total + per_cpu[:, j]
            over |= following < total  # wrapped around
            total = following
        if over.any():
            total[over] = U64_MAX
            return total, over
        return total, None
    # signed values, and values a decoder made: Python integers, exact
    summed = column.astype(object).reshape(n, c).sum(axis=1)
    return np.asarray(summed, dtype=object), None


DEFAULT_FULL_EVERY = 30


class Changes:
    """What one changes-only stream sent of one map: the state its client keeps.

    Each row (a key, and a CPU for per-CPU reads) has a slot while it is in
    the map. A read is matched against the state by the rows' raw key bytes
    (fast when the map's order did not change, else by a hash, checked byte
    for byte) and compared by its raw value bytes, before anything is
    decoded: only rows that are new or whose raw value changed are decoded
    and sent, and the slots of rows gone are sent as removed. A decoded
    attribute that changes while its raw key does not (a process that
    renamed itself, a cgroup path found later) goes out with the entry's
    next change or the next whole snapshot: every ``full_every`` reads the
    map is sent whole, and the state starts over from it. Rows a decoder
    drops are not kept: they are decoded again at every read, like a whole
    read decodes them.
    """

    def __init__(self, full_every: int = DEFAULT_FULL_EVERY) -> None:
        self.full_every = max(1, full_every)
        self.reads = 0
        self.ids: Array = np.empty(0, dtype="S1")  # by slot: the row's key bytes
        self.raw: Array = np.empty((0, 0), dtype=np.uint8)  # by slot: its value bytes
        self.live: Array = np.empty(0, dtype=bool)
        # the read in progress (between match and settle)
        self._full = True
        self._slots: Array = np.empty(0, np.intp)  # the slot of each row to send
        self._had: Array = np.empty(0, bool)  # whether the client has that slot already
        self._removed: Array = np.empty(0, np.intp)
        # written-keys reads (match_written): the live slots sorted by a hash
        # of their key, kept up to date instead of sorted at every read
        self._index: tuple[Array, Array] | None = None
        # the reader's deletion log entries applied (MapReader._deletions)
        self.deletions_seen = 0
        # the written-keys sets' overflow count when this state last took keys
        self.written_lost = 0
        # grows whenever a slot comes or goes (live_ids caches by it)
        self.layout = 0
        self._live_ids: tuple[int, Array] | None = None

    def full_due(self, width: int) -> bool:
        """Whether the next read goes whole (its rows ``width`` bytes)."""
        return self.reads % self.full_every == 0 or (width,) != self.raw.shape[1:]

    def match(self, ids: Array, raw: Array, whole: bool = False) -> Array | None:
        """Match a read's rows (``ids``: key bytes; ``raw``: value bytes, a row
        each) against the state; the rows to decode and send, in read order
        (None: every row, the read is sent whole, as always with ``whole``).
        :meth:`settle` finishes."""
        n = len(ids)
        full = whole or self.full_due(raw.shape[1])
        self.reads += 1
        self.layout += 1
        self._full = full
        self._index = None  # rebuilt by a written-keys read that needs it
        if full:
            self.ids, self.raw = ids.copy(), raw.copy()
            self.live = np.ones(n, bool)
            self._slots, self._had = np.arange(n), np.zeros(n, bool)
            self._removed = np.empty(0, np.intp)
            return None
        slot_of, found, same_order = self._match(ids)
        hit = np.zeros(len(self.ids), bool)
        hit[slot_of[found]] = True
        removed = np.flatnonzero(self.live & ~hit)
        self.live[removed] = False
        changed = ~found
        if same_order:
            changed = _rows_differ(self.raw, raw)
        else:
            at = np.flatnonzero(found)
            changed[at] = _rows_differ(self.raw[slot_of[at]], raw[at])
        new = np.flatnonzero(~found)
        if len(new):
            slot_of[new] = self._allocate(len(new))
            self.ids[slot_of[new]] = ids[new]
            self.live[slot_of[new]] = True
        sent = np.flatnonzero(changed)
        self.raw[slot_of[sent]] = raw[sent]
        self._slots, self._had = slot_of[sent], found[sent]
        self._removed = removed
        return sent

    def match_written(self, ids: Array, raw: Array, gone: Array) -> Array:
        """A written-keys read: ``ids``/``raw`` are only the rows written since
        the previous read, ``gone`` the keys deleted since; every row is
        sent (its slot found by a hash of its key, or a new one), and the
        slots of the keys gone are sent as removed. :meth:`settle` finishes."""
        self.reads += 1
        self._full = False
        hashes, slots = self._sorted_index()
        removed = np.empty(0, np.intp)
        if len(gone):
            at, found = self._find(hashes, slots, gone)
            removed = np.unique(slots[at[found]])
            removed = removed[self.live[removed]]
            self.live[removed] = False
            keep = np.ones(len(slots), bool)
            keep[at[found]] = False
            hashes, slots = hashes[keep], slots[keep]
        at, found = self._find(hashes, slots, ids)
        slot_of = np.zeros(len(ids), np.intp)
        slot_of[found] = slots[at[found]]
        new = np.flatnonzero(~found)
        if len(new):
            slot_of[new] = self._allocate(len(new))
            self.ids[slot_of[new]] = ids[new]
            self.live[slot_of[new]] = True
            h = _hash_rows(ids[new])
            order = np.argsort(h)
            where = np.searchsorted(hashes, h[order])
            hashes = np.insert(hashes, where, h[order])
            slots = np.insert(slots, where, slot_of[new][order])
        self._index = (hashes, slots)
        if len(removed) or len(new) or not self.live[slot_of].all():
            self.layout += 1  # slots came or went
        self.live[slot_of] = True  # also a slot a decoder dropped before
        self.raw[slot_of] = raw
        self._slots, self._had = slot_of, found
        self._removed = removed
        return np.arange(len(ids))

    def live_ids(self) -> Array:
        """The keys of the live slots (what the client holds), in slot order;
        the same array while no slot came or went."""
        if self._live_ids is None or self._live_ids[0] != self.layout:
            self._live_ids = (self.layout, np.ascontiguousarray(self.ids[self.live]))
        return self._live_ids[1]

    def index_keys(self) -> None:
        """Build what :meth:`match_written` finds slots by, if not built yet."""
        self._sorted_index()

    def _sorted_index(self) -> tuple[Array, Array]:
        if self._index is None:
            slots = np.flatnonzero(self.live)
            h = _hash_rows(self.ids[slots])
            order = np.argsort(h)
            self._index = (h[order], slots[order])
        return self._index

    def _find(self, hashes: Array, slots: Array, ids: Array) -> tuple[Array, Array]:
        """Per key of ``ids``: its position in the index, and whether it is there."""
        h = _hash_rows(ids)
        at = np.searchsorted(hashes, h)
        found = at < len(hashes)
        found[found] = hashes[at[found]] == h[found]
        found[found] = self.ids[slots[at[found]]] == ids[found]
        return at, found

    def settle(self, kept: Array | None, snap: pb.MapSnapshot) -> None:
        """Set the snapshot's slots once the rows :meth:`match` returned are
        decoded; ``kept``: which of them a decoder did not drop (None: all)."""
        slots, removed = self._slots, self._removed
        if kept is not None:
            dropped = slots[~kept]
            self.live[dropped] = False  # not sent: the client must not hold it
            self._index = None  # nor may a written-keys read find it by its key
            self.layout += 1
            removed = np.concatenate([removed, dropped[self._had[~kept]]])
            slots = slots[kept]
        snap.changes_only = not self._full
        snap.slots = slots.astype("<u4").tobytes()
        snap.removed_slots = removed.astype("<u4").tobytes()

    def _match(self, ids: Array) -> tuple[Array, Array, bool]:
        """Per row, its slot in the state and whether it has one; whether
        every row is where it was (row i in slot i, nothing added or gone)."""
        n = len(ids)
        if n == len(self.ids) and bool(self.live.all()) and bool((ids == self.ids).all()):
            return np.arange(n), np.ones(n, bool), True
        slots = np.flatnonzero(self.live)
        state_hash = _hash_rows(self.ids[slots])
        order = np.argsort(state_hash)
        slots, state_hash = slots[order], state_hash[order]
        h = _hash_rows(ids)
        at = np.searchsorted(state_hash, h)
        found = at < len(slots)
        found[found] = state_hash[at[found]] == h[found]
        slot_of = np.zeros(n, np.intp)
        slot_of[found] = slots[at[found]]
        found[found] = self.ids[slot_of[found]] == ids[found]
        return slot_of, found, False

    def _allocate(self, count: int) -> Array:
        """``count`` free slots (removed rows' first), growing the state when needed."""
        free = np.flatnonzero(~self.live)[:count]
        more = count - len(free)
        if more:
            size = len(self.ids)
            grown = max(more, size // 2)
            self.ids = np.concatenate([self.ids, np.zeros(grown, self.ids.dtype)])
            self.live = np.concatenate([self.live, np.zeros(grown, bool)])
            self.raw = np.concatenate([self.raw, np.zeros((grown, self.raw.shape[1]), np.uint8)])
            free = np.concatenate([free, np.arange(size, size + more)])
        return free


def _rows_differ(a: Array, b: Array) -> Array:
    """Per row of two equally shaped byte matrices, whether the rows differ."""
    if a.shape[1] % 8 == 0 and a.flags.c_contiguous and b.flags.c_contiguous:
        a, b = a.view("<u8"), b.view("<u8")  # a word at a time
    return np.asarray((a != b).any(axis=1), dtype=bool)


class WrittenKeys:
    """The keys a program wrote since the sidecar's previous read of a map
    (the manifest's ``written_keys``; bpf/cpu/cpu.c shows the program's side).

    ``tables``: the maps ``<prefix>_epoch`` (u64[1]), ``<prefix>_0`` and
    ``_1`` (key -> u8) and ``_lost`` (u64[1]). The program keeps, per entry,
    the epoch it was last written in, and puts the entry's key into the set
    of the epoch's parity the first time it writes it in an epoch; epoch 0
    records nothing. A read starts the next epoch, then drains the set of
    the one that ended: a write racing the switch lands in the other set,
    drained one read later. Every changes-only state (one per stream) gets
    every key drained, so several streams can read the map; a state reads
    the whole map instead when a set overflowed (``_lost`` grew) since it
    last took keys.
    """

    def __init__(self, tables: Sequence[Any], key_size: int) -> None:
        epoch, set0, set1, lost = tables
        self.epoch_fd, self.lost_fd = int(epoch.map_fd), int(lost.map_fd)
        self.set_fds = (int(set0.map_fd), int(set1.map_fd))
        self.capacity = int(set0.max_entries)
        self.buffers = BatchBuffers(key_size, ct.sizeof(set0.Leaf), self.capacity)
        self.key_size = key_size
        self._pending: weakref.WeakKeyDictionary[Changes, list[Array]] = weakref.WeakKeyDictionary()

    def begin(self, changes: Changes) -> None:
        """Before ``changes`` reads the whole map: from now on it is given the
        keys written (those written before are in the whole read)."""
        self._advance()
        self._pending[changes] = []
        changes.written_lost = read_u64(self.lost_fd)

    def take(self, changes: Changes) -> Array | None:
        """The keys written since ``changes`` last read (distinct, in no
        order); None when it must read the whole map instead."""
        lost = read_u64(self.lost_fd)
        if changes not in self._pending or lost != changes.written_lost:
            return None
        self._advance()
        taken = self._pending[changes]
        self._pending[changes] = []
        if not taken:
            return np.empty(0, f"S{self.key_size}")
        return np.unique(np.concatenate(taken))

    def _advance(self) -> None:
        """Start the next epoch and hand the ended one's keys to every state."""
        epoch = read_u64(self.epoch_fd)
        write_u64(self.epoch_fd, epoch + 1)
        n = _lookup_batch(self.set_fds[epoch & 1], self.buffers, self.capacity, delete=True)
        if n:
            keys = _key_column(self.buffers.keys, self.key_size, n).copy()
            for pending in self._pending.values():
                pending.append(keys)
        self.buffers.fit(n)


def _lookup_keys(map_fd: int, keys: Array, key_size: int, value_size: int) -> tuple[Array, Array]:
    """The values of ``keys`` (one lookup each); the keys found and their
    values as byte buffers laid out as a batch read lays them out.

    A loop per key: bpf() has no batch lookup of given keys (the batch
    commands walk the whole map, which is what written keys avoid). It runs
    per key written since the previous read, not per entry of the map:
    10 k lookups take ~27 ms (docs/overhead.md, "Changes only")."""
    from ebpf_sidecar.libbpf import lib

    n = len(keys)
    kbuf = np.ascontiguousarray(keys).view(np.uint8).reshape(-1)
    vbuf = np.empty(n * value_size, np.uint8)
    kp, vp = kbuf.ctypes.data, vbuf.ctypes.data
    found = np.zeros(n, bool)
    lookup = lib.so.bpf_map_lookup_elem
    for i in range(n):
        found[i] = lookup(map_fd, kp + i * key_size, vp + i * value_size) == 0
    if found.all():
        return kbuf, vbuf
    rows = np.flatnonzero(found)
    k = kbuf.reshape(n, key_size)[rows].reshape(-1)
    v = vbuf.reshape(n, value_size)[rows].reshape(-1)
    return k, v


# How many reaper deletions a map remembers for changes-only states reading
# written keys; a state further behind reads the whole map.
DELETIONS_KEPT = 64


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
        written_keys: Sequence[Any] | None = None,
        write_behind: Sequence[Any] | None = None,
    ) -> None:
        """``table``: BCC's table, or a :class:`PinnedTable` of an adopted instance.

        ``max_entries``: the size the manifest gives the map for the parameters used.
        ``written_keys``, ``write_behind``: the maps those options of its
        manifest name (MapSpec.side_maps; :class:`WrittenKeys`, :class:`WriteBehind`).
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
        self.written = WrittenKeys(written_keys, self.key_size) if written_keys else None
        self.write_behind = WriteBehind(write_behind) if write_behind else None
        # what the reaper deleted, for states reading written keys (which do
        # not walk the map, so see no entry go): the log's entries from
        # number _deletions_base on
        self._deletions: list[Array] = []
        self._deletions_base = 0
        # the state and its layout the reaper last went over (written keys)
        self._reaped: tuple[weakref.ref[Changes], int] | None = None

    def read(
        self,
        snap: pb.MapSnapshot,
        clear: bool = False,
        per_cpu: bool = False,
        stream: object = None,
        packed: bool = False,
        changes: Changes | None = None,
    ) -> None:
        """``stream``: who reads, for the exited-process reaper (subscribe it first).

        ``packed``: fill the packed columns (StreamRequest.packed_columns).
        ``changes``: what the stream sent of this map so far; only the rows
        that changed since are filled (StreamRequest.changes_only). Not with
        ``clear``: every cleared read is news.
        """
        if per_cpu and not self.per_cpu:
            raise ValueError(f"map {self.spec.name!r} is not a per-CPU map")
        if clear and changes is not None:
            raise ValueError("a map read with clear is sent whole, not as changes")
        with self._lock:
            self._read(snap, clear, per_cpu, stream, packed, changes)

    def subscribe(self, stream: object) -> None:
        """``stream`` reads this map from now on (the reaper waits for its exports)."""
        if self.reaper is not None:
            with self._lock:
                self.reaper.subscribe(stream)

    def unsubscribe(self, stream: object) -> None:
        if self.reaper is not None:
            with self._lock:
                self.reaper.unsubscribe(stream)

    def _read(
        self,
        snap: pb.MapSnapshot,
        clear: bool,
        per_cpu: bool,
        stream: object,
        packed: bool,
        changes: Changes | None,
    ) -> None:
        if self.write_behind is not None:
            # what the CPUs still hold, into the map first
            snap.late_cpus = len(self.write_behind.flush())
        delete = clear and not self.is_array
        buffers = self.buffers
        c = self.cpus if self.per_cpu else 1
        # Changes-only with written keys: only the keys the program wrote
        # since this state's previous read are looked up, not the whole map.
        tracked = changes is not None and self.written is not None and not per_cpu
        taken: Array | None = None
        if tracked:
            assert changes is not None and self.written is not None
            behind = changes.deletions_seen < self._deletions_base
            if not changes.full_due(self.value_size) and not behind:
                taken = self.written.take(changes)
            if taken is None:
                self.written.begin(changes)  # before the walk, which sees what came before
        if taken is not None:
            kbuf, vbuf = _lookup_keys(self.table.map_fd, taken, self.key_size, self.value_size)
            n = len(kbuf) // self.key_size
        else:
            n = _lookup_batch(self.table.map_fd, buffers, self.capacity, delete=delete)
            kbuf, vbuf = buffers.keys, buffers.values
        keys = self.key_layout.arrays(kbuf, n)
        values: dict[str, Any] = self.value_layout.arrays(vbuf, n * c)  # c per key
        if clear and self.is_array:
            values = self._since_previous(kbuf[: n * self.key_size].tobytes(), n, c, values)
        pids = keys[self.spec.pid_field] if self.reaper is not None else None
        # Changes-only: rows are matched and compared raw, and only the rows
        # that changed are decoded (the decoders are most of a read's cost).
        sent: Array | None = None
        if changes is not None:
            rows_per_entry = c if per_cpu else 1
            raw = vbuf[: n * self.value_size].reshape(
                n * rows_per_entry, self.value_size // rows_per_entry
            )
            if taken is not None:
                seen = changes.deletions_seen - self._deletions_base
                gone = self._deletions[seen:]
                gone_keys = np.concatenate(gone) if gone else np.empty(0, f"S{self.key_size}")
                sent = changes.match_written(
                    _key_column(kbuf, self.key_size, n).copy(), raw.copy(), gone_keys
                )
            else:
                sent = changes.match(self._identities(n, rows_per_entry), raw, whole=tracked)
                if tracked:
                    # the index the next reads find their keys by, built
                    # now: a whole read is slow anyway, a written-keys read
                    # should stay fast
                    changes.index_keys()
            # what the reaper deletes from here on goes out at the next read
            changes.deletions_seen = self._deletions_base + len(self._deletions)
            if sent is not None:
                chosen = np.unique(sent // c) if per_cpu else sent
                keys = {name: col[chosen] for name, col in keys.items()}
                value_rows = (chosen[:, None] * c + np.arange(c)).ravel()
                values = {name: col[value_rows] for name, col in values.items()}
                n = len(chosen)
        rows = _Rows()
        # A derived field decodes its source field's raw values: the distinct
        # values of a column are found once, however many fields decode it.
        factorized: dict[str, tuple[Array, Array]] = {}

        def distinct(name: str) -> tuple[Array, Array] | None:
            if name not in factorized and n:
                factorized[name] = _factorize(keys[name])
            return factorized.get(name)

        for f in self.spec.key:
            text = f.wire_type == pb.FIELD_TYPE_STRING
            if f.decoders or text:
                rows.keys[f.name], mask = _decode_distinct(
                    f.decoders, keys[f.name], text, distinct(f.name)
                )
                rows.dropped(mask)
            else:
                rows.keys[f.name] = keys[f.name]
        for d in self.spec.derived:
            text = d.wire_type == pb.FIELD_TYPE_STRING
            rows.keys[d.name], mask = _decode_distinct(
                d.decoders, keys[d.source.name], text, distinct(d.source.name)
            )
            rows.dropped(mask)
        value_drop = None
        for f in self.spec.value:
            text = f.wire_type == pb.FIELD_TYPE_STRING
            decoded, mask = _decode_distinct(f.decoders, values[f.name], text)
            rows.values[f.name] = _plain(decoded)
            if mask is not None:
                value_drop = mask if value_drop is None else value_drop | mask
        over: dict[str, Array] = {}
        if per_cpu:
            rows.keys = {name: _repeat(col, c) for name, col in rows.keys.items()}
            rows.keys["cpu"] = np.tile(np.arange(c, dtype=np.uint64), n)
            if rows.drop is not None:
                rows.drop = np.repeat(rows.drop, c)
            rows.dropped(value_drop)
            count = n * c
        else:
            if value_drop is not None:  # an entry some CPU's value of was dropped
                rows.dropped(np.asarray(value_drop.reshape(n, c).any(axis=1)))
            if c > 1:
                for name, col in list(rows.values.items()):
                    if rows.drop is not None and col.dtype == object:
                        col = col.copy()
                        col[np.repeat(rows.drop, c)] = 0  # dropped: not summed
                    rows.values[name], mask = _sum_cpus(col, n, c)
                    if mask is not None:
                        over[name] = mask
            count = n
        if sent is not None and per_cpu:
            # the changed CPUs' rows of the entries decoded
            at = np.searchsorted(chosen, sent // c) * c + sent % c
            rows.keys = {name: _take(col, at) for name, col in rows.keys.items()}
            rows.values = {name: col[at] for name, col in rows.values.items()}
            if rows.drop is not None:
                rows.drop = rows.drop[at]
            count = len(at)
        keep = None
        if rows.drop is not None:
            keep = ~rows.drop
            rows.keys = {name: _take(col, keep) for name, col in rows.keys.items()}
            rows.values = {name: col[keep] for name, col in rows.values.items()}
            over = {name: m[keep] for name, m in over.items()}
            count = int(keep.sum())
        if changes is not None:
            changes.settle(keep, snap)
        snap.entries = count
        # An array always holds max_entries entries and is never full: 0 says
        # "no capacity to run out of" to the receiver.
        snap.max_entries = 0 if self.is_array else self.capacity
        clamped = sum(int(m.sum()) for m in over.values())
        if packed:
            for name, t in self._key_types(per_cpu):
                _fill_packed(snap.packed_key_columns.add(), name, t, rows.keys[name])
            for f in self.spec.value:
                clamped += _fill_packed(
                    snap.packed_value_columns.add(), f.name, f.wire_type, rows.values[f.name]
                )
        else:
            for name, t in self._key_types(per_cpu):
                _fill(snap.key_columns.add(), name, t, rows.keys[name])
            for f in self.spec.value:
                clamped += _fill(snap.value_columns.add(), f.name, f.wire_type, rows.values[f.name])
        if clamped:
            log.warning(
                "map %s: %d values out of their 64-bit range (per-CPU values summed past "
                "2^64, or a counter below its previous read) were clamped to the range",
                self.spec.name,
                clamped,
            )
        if self.dropped_table is not None:
            snap.dropped_updates = sum_counter(self.dropped_table)
        if self.reaper is not None and pids is not None and not delete:
            if taken is not None:
                # the read held only the keys written: the reaper goes over
                # every entry the stream's client holds
                assert changes is not None
                held = changes.live_ids()
                pids = held.view(self.key_layout.dtype)[self.spec.pid_field]
                last = self._reaped
                same = last is not None and last[0]() is changes and last[1] == changes.layout
                self.reaper.reap(self.table.map_fd, held, self.key_size, pids, stream, same)
                self._reaped = (weakref.ref(changes), changes.layout)
            else:
                self.reaper.reap(self.table.map_fd, buffers.keys, self.key_size, pids, stream)
                self._reaped = None
            if self.written is not None and len(self.reaper.deleted):
                self._deletions.append(self.reaper.deleted.copy())
                if len(self._deletions) > DELETIONS_KEPT:
                    self._deletions.pop(0)
                    self._deletions_base += 1
        if taken is None:
            buffers.fit(n)

    def _identities(self, n: int, c: int) -> Array:
        """What identifies each row of a read: its key's bytes (and CPU, ``c`` > 1)."""
        keys = _key_column(self.buffers.keys, self.key_size, n)
        if c > 1:
            rows = np.empty(n * c, dtype=[("key", f"V{self.key_size}"), ("cpu", "<u4")])
            rows["key"] = np.repeat(keys.view(f"V{self.key_size}"), c)
            rows["cpu"] = np.tile(np.arange(c, dtype=np.uint32), n)
            ids = rows.view(f"S{self.key_size + 4}")
        else:
            ids = keys.copy()  # the buffer is the next read's
        return ids

    def _key_types(self, per_cpu: bool) -> list[tuple[str, pb.FieldType]]:
        out = [(f.name, f.wire_type) for f in self.spec.key]
        out += [(d.name, d.wire_type) for d in self.spec.derived]
        if per_cpu:
            out.append(("cpu", pb.FIELD_TYPE_UINT))
        return out

    def _since_previous(
        self, keys_raw: bytes, n: int, c: int, values: dict[str, Array]
    ) -> dict[str, Any]:
        """Array maps: each value minus what the previous read saw for its key.

        In Python integers (object arrays): a counter below its previous
        read goes negative and is clamped, and counted, when filled.
        """
        names = list(values)
        cols = {name: values[name].astype(object) for name in names}
        current: dict[bytes, tuple[Any, ...]] = {}
        for i in range(n):
            key = keys_raw[i * self.key_size : (i + 1) * self.key_size]
            row = tuple(cols[name][i * c + j] for name in names for j in range(c))
            current[key] = row
            before = self._previous.get(key)
            if before is not None:
                for k, name in enumerate(names):
                    for j in range(c):
                        cols[name][i * c + j] -= before[k * c + j]
        self._previous = current
        return cols


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
    # slot count is a number its C code clamps to, invisible from here. An
    # exponential histogram's max_entries has the slots as a factor (the
    # manifest checks it), so the sizes above compared them already.
    if hist is None or not array or [f.name for f in spec.key] != [hist.slot_field]:
        return
    if hist.convention == "exponential":
        return
    if hist.slots != compiled:
        raise LayoutError(
            f"{where}.histogram.slots: the manifest says {hist.slots}, the compiled "
            f"array has {compiled} slots"
        )


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


def _clamped(values: list[Any], low: int, high: int) -> tuple[list[Any], int]:
    """``values`` saturated to [low, high], and how many were outside."""
    if not values or (low <= min(values) and max(values) <= high):  # the usual case, in C
        return values, 0
    out = [min(max(v, low), high) for v in values]
    return out, sum(1 for v in values if not low <= v <= high)


def _narrowest(values: Array, signed: bool) -> np.dtype[Any]:
    """The narrowest little-endian integer type that holds every value."""
    if not len(values):
        return np.dtype("<i1" if signed else "<u1")
    low, high = int(values.min()), int(values.max())
    for width in (1, 2, 4, 8):
        if signed and -(1 << (8 * width - 1)) <= low and high < 1 << (8 * width - 1):
            return np.dtype(f"<i{width}")
        if not signed and high < 1 << (8 * width):
            return np.dtype(f"<u{width}")
    return np.dtype("<i8" if signed else "<u8")


def _fill_packed(column: pb.PackedColumn, name: str, t: pb.FieldType, values: Col) -> int:
    """Fill a packed column; the number of integers clamped to the wire type's range."""
    column.field, column.type = name, t
    if t == pb.FIELD_TYPE_STRING:
        if isinstance(values, _Coded):
            table, codes = values.table, values.codes
        else:  # raw or numeric values shown as text: once per distinct value
            table, codes = _factorize(values) if len(values) else (values, values)
            table = np.asarray(_to_list(table), dtype=object)
        column.dictionary.extend(["" if v is DROP else _text(v) for v in table.tolist()])
        wire = _narrowest(np.array([len(table) - 1]), signed=False)
        column.indexes = np.asarray(codes).astype(wire).tobytes()
        column.width = wire.itemsize
        return 0
    values = _plain(values)
    signed = t == pb.FIELD_TYPE_INT
    clamped = 0
    if values.dtype.kind not in "iu" or (values.dtype.kind == "i") != signed:
        low, high = (I64_MIN, I64_MAX) if signed else (0, U64_MAX)
        listed, clamped = _clamped(values.tolist(), low, high)
        values = np.array(listed, dtype="<i8" if signed else "<u8")
    wire = _narrowest(values, signed)
    column.values = values.astype(wire).tobytes()
    column.width = wire.itemsize
    return clamped


def _fill(column: pb.Column, name: str, t: pb.FieldType, values: Col) -> int:
    """Fill ``column`` from an array or list; the number of integers clamped
    to the wire type's range.

    The sum of a u64 over CPUs can pass 2^64 (each CPU's counter is a u64);
    protobuf would refuse the whole map for one such value, so it saturates
    at 2^64 - 1 (and the reader logs it).
    """
    column.field = name
    if isinstance(values, _Coded):
        if t == pb.FIELD_TYPE_STRING:
            column.strings.extend(values.materialize().tolist())  # valid text (_decode_distinct)
            return 0
        values = values.materialize()
    if isinstance(values, np.ndarray):
        if t == pb.FIELD_TYPE_STRING and values.dtype == object:
            column.strings.extend(values.tolist())  # valid text already (_decode_distinct)
            return 0
        if t == pb.FIELD_TYPE_UINT and values.dtype.kind == "u":
            column.uints.extend(values.tolist())  # within range by its type
            return 0
        if t == pb.FIELD_TYPE_INT and values.dtype.kind == "i":
            column.ints.extend(values.tolist())
            return 0
        values = _to_list(values)
    if t == pb.FIELD_TYPE_STRING:
        texts = [_text(v) for v in values]
        column.strings.extend(texts)
        return 0
    if t == pb.FIELD_TYPE_INT:
        values, clamped = _clamped(values, I64_MIN, I64_MAX)
        column.ints.extend(values)
    else:
        values, clamped = _clamped(values, 0, U64_MAX)
        column.uints.extend(values)
    return clamped
