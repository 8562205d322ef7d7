"""Reads of real BPF maps: per-CPU entries, clear-after-read, filters, derived fields.

The maps are filled from user space with known per-CPU values, so every
expected number is exact.
"""

from __future__ import annotations

import ctypes as ct
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebpf_sidecar.catalog import MapSpec, Program
from ebpf_sidecar.manifest import load_manifest
from ebpf_sidecar.maps import ExitedProcessReaper, LayoutError, MapReader
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

pytestmark = pytest.mark.usefixtures("needs_root")

SOURCE = """
struct k { u32 id; };
struct v { u64 n; u64 m; };
BPF_PERCPU_HASH(h, struct k, struct v, 64);
BPF_PERCPU_ARRAY(a, struct v, 4);
BPF_HASH(plain, struct k, struct v, 16);
"""

MANIFEST = """
name: prog
hooks: []
maps:
  - name: h
    max_entries: 64
    key:
      - name: id
        type: u32
        decoders: [{static_map: {map: {1: one, 2: two, 7: seven}, drop_unknown: true}}]
    derived:
      - {name: first, from: id, decoders: [{static_map: {map: {1: first}, default: other}}]}
      - {name: id_hex, from: id, decoders: [hex]}
    value:
      - {name: n, type: u64}
      - {name: m, type: u64}
  - name: a
    max_entries: 4
    key:
      - {name: slot, type: u32}
    value:
      - {name: n, type: u64}
      - {name: m, type: u64}
  - name: plain
    max_entries: 16
    key:
      - {name: id, type: u32}
    value:
      - {name: n, type: u64}
      - {name: m, type: u64}
"""


def _program(tmp_path: Path, name: str, source: str, manifest: str) -> Program:
    """A catalog folder ``name`` with ``source`` and ``manifest``, loaded."""
    d = tmp_path / name
    d.mkdir()
    (d / f"{name}.c").write_text(source)
    (d / "manifest.yaml").write_text(manifest)
    return load_manifest(d / "manifest.yaml")


@pytest.fixture
def bpf(tmp_path: Path) -> Iterator[tuple[Any, dict[str, MapReader]]]:
    from bcc import BPF

    program = _program(tmp_path, "prog", SOURCE, MANIFEST)
    b = BPF(text=SOURCE.encode())
    try:
        readers = {
            name: MapReader(b[name.encode()], spec, name, spec.size.entries({}))
            for name, spec in program.maps.items()
        }
        yield b, readers
    finally:
        b.cleanup()


def _put(table: Any, key: Any, per_cpu_n: list[int], m: int = 0) -> None:
    leaf = table.Leaf()
    for cpu, n in enumerate(per_cpu_n):
        leaf[cpu].n = n
        leaf[cpu].m = m
    table[key] = leaf


def _read(
    reader: MapReader, clear: bool = False, per_cpu: bool = False
) -> tuple[int, dict[str, list[Any]]]:
    snap = pb.MapSnapshot()
    reader.read(snap, clear=clear, per_cpu=per_cpu)
    cols: dict[str, list[Any]] = {}
    for c in [*snap.key_columns, *snap.value_columns]:
        vals: list[Any] = list(c.strings) or list(c.uints) or list(c.ints)
        assert len(vals) in (0, snap.entries), f"column {c.field} has {len(vals)} values"
        cols[c.field] = vals
    return snap.entries, cols


def _cpus(table: Any) -> int:
    return int(table.total_cpu)


def test_per_cpu_keeps_one_entry_per_cpu(bpf: tuple[Any, dict[str, MapReader]]) -> None:
    b, readers = bpf
    h = b[b"h"]
    cpus = _cpus(h)
    _put(h, h.Key(7), [10 + c for c in range(cpus)], m=1)
    n, cols = _read(readers["h"], per_cpu=True)
    assert n == cpus
    assert cols["cpu"] == list(range(cpus))
    assert cols["id"] == ["seven"] * cpus
    assert cols["n"] == [10 + c for c in range(cpus)]
    # without per_cpu the CPUs are summed into one entry
    n, cols = _read(readers["h"])
    assert n == 1 and "cpu" not in cols
    assert cols["n"] == [sum(10 + c for c in range(cpus))]
    assert cols["m"] == [cpus]


def test_per_cpu_on_a_plain_map_is_refused(bpf: tuple[Any, dict[str, MapReader]]) -> None:
    _, readers = bpf
    with pytest.raises(ValueError, match=r"'plain' is not a per-CPU map"):
        _read(readers["plain"], per_cpu=True)


def test_clear_after_read_deletes_hash_entries(bpf: tuple[Any, dict[str, MapReader]]) -> None:
    b, readers = bpf
    h = b[b"h"]
    cpus = _cpus(h)
    _put(h, h.Key(1), [5] * cpus)
    _put(h, h.Key(2), [7] * cpus)
    n, cols = _read(readers["h"], clear=True)
    assert n == 2
    assert sorted(zip(cols["id"], cols["n"], strict=True)) == [("one", 5 * cpus), ("two", 7 * cpus)]
    assert len(list(h.keys())) == 0, "lookup-and-delete left entries behind"
    _put(h, h.Key(2), [1] * cpus)
    n, cols = _read(readers["h"], clear=True)
    assert (n, cols["id"], cols["n"]) == (1, ["two"], [cpus])
    assert _read(readers["h"], clear=True)[0] == 0


def test_clear_after_read_on_an_array_subtracts_the_previous_read(
    bpf: tuple[Any, dict[str, MapReader]],
) -> None:
    # Array entries cannot be deleted: the reader returns the increase since
    # its previous read instead, exactly.
    b, readers = bpf
    a = b[b"a"]
    cpus = _cpus(a)
    _put(a, ct.c_int(2), [5] * cpus)
    n, cols = _read(readers["a"], clear=True)
    assert n == 4 and cols["n"] == [0, 0, 5 * cpus, 0]
    _put(a, ct.c_int(2), [8] * cpus)
    _put(a, ct.c_int(0), [1] + [0] * (cpus - 1))
    n, cols = _read(readers["a"], clear=True)
    assert cols["n"] == [1, 0, 3 * cpus, 0]
    assert _read(readers["a"], clear=True)[1]["n"] == [0, 0, 0, 0]
    # per CPU as well
    _put(a, ct.c_int(3), list(range(1, cpus + 1)))
    n, cols = _read(readers["a"], clear=True, per_cpu=True)
    assert n == 4 * cpus
    assert cols["n"][3 * cpus :] == list(range(1, cpus + 1))


def test_a_dropping_decoder_removes_the_entry_from_every_column(
    bpf: tuple[Any, dict[str, MapReader]],
) -> None:
    b, readers = bpf
    h = b[b"h"]
    cpus = _cpus(h)
    for key, n in ((1, 10), (3, 30), (2, 20), (4, 40)):  # 3 and 4 are not in the table
        _put(h, h.Key(key), [n] + [0] * (cpus - 1), m=key)
    n, cols = _read(readers["h"])
    assert n == 2
    rows = sorted(zip(cols["id"], cols["first"], cols["id_hex"], cols["n"], cols["m"], strict=True))
    assert rows == [("one", "first", "0x1", 10, cpus * 1), ("two", "other", "0x2", 20, cpus * 2)]
    n, cols = _read(readers["h"], per_cpu=True)
    assert n == 2 * cpus and sorted(set(cols["id"])) == ["one", "two"]
    assert all(len(c) == n for c in cols.values())


def test_derived_fields_travel_after_the_key_fields(bpf: tuple[Any, dict[str, MapReader]]) -> None:
    b, readers = bpf
    h = b[b"h"]
    _put(h, h.Key(7), [1] * _cpus(h))
    snap = pb.MapSnapshot()
    readers["h"].read(snap)
    assert [c.field for c in snap.key_columns] == ["id", "first", "id_hex"]
    assert list(snap.key_columns[1].strings) == ["other"]
    assert list(snap.key_columns[2].strings) == ["0x7"]


def test_exited_processes_are_deleted_after_two_more_reads(
    bpf: tuple[Any, dict[str, MapReader]], tmp_path: Path
) -> None:
    b, _ = bpf
    plain = b[b"plain"]
    for pid in (1, 2):
        plain[plain.Key(pid)] = plain.Leaf(5, 0)
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)  # pid 1 lives, pid 2 has exited
    reaper = ExitedProcessReaper(str(proc))
    keys_raw = struct.pack("<II", 1, 2)
    assert reaper.reap(plain.map_fd, keys_raw, 4, [1, 2]) == 0  # exported once more
    assert sorted(k.id for k in plain) == [1, 2]
    assert reaper.reap(plain.map_fd, keys_raw, 4, [1, 2]) == 1  # and now deleted
    assert sorted(k.id for k in plain) == [1]


def test_a_size_other_than_the_compiled_one_is_refused(tmp_path: Path) -> None:
    from bcc import BPF

    manifest = MANIFEST.replace("max_entries: 64", "max_entries: 32")
    spec = _program(tmp_path, "prog", SOURCE, manifest).maps["h"]
    b = BPF(text=SOURCE.encode())
    try:
        with pytest.raises(
            LayoutError,
            match=r"h\.max_entries: the manifest says 32 = 32 for "
            r"these parameters, the compiled map has 64 entries",
        ):
            MapReader(b[b"h"], spec, "h", spec.size.entries({}))
    finally:
        b.cleanup()


def test_a_histograms_slots_are_the_compiled_arrays_size(tmp_path: Path) -> None:
    from bcc import BPF

    histogram = "    histogram: {slot_field: slot, slots: SLOTS, count_field: n, unit: ns}\n"
    d = tmp_path / "prog"
    d.mkdir()
    (d / "prog.c").write_text(SOURCE)
    manifest = MANIFEST.replace("  - name: plain\n", histogram + "  - name: plain\n")
    b = BPF(text=SOURCE.encode())
    try:
        for slots, fits in ((4, True), (3, False)):
            (d / "manifest.yaml").write_text(manifest.replace("SLOTS", str(slots)))
            spec = load_manifest(d / "manifest.yaml").maps["a"]
            if fits:
                MapReader(b[b"a"], spec, "a", 4)
                continue
            with pytest.raises(
                LayoutError,
                match=r"a\.histogram\.slots: the manifest says 3, "
                r"the compiled array has 4 slots",
            ):
                MapReader(b[b"a"], spec, "a", 4)
    finally:
        b.cleanup()


LARGE_SOURCE = 'BPF_F_TABLE("hash", u32, u64, large, 1048576, BPF_F_NO_PREALLOC);\n'
LARGE_MANIFEST = """
name: large
hooks: []
maps:
  - name: large
    max_entries: 1048576
    key: [{name: id, type: u32}]
    value: [{name: n, type: u64}]
"""


@pytest.fixture
def large_map(tmp_path: Path) -> Iterator[tuple[Any, MapSpec]]:
    """An empty 1M-entry hash map (not preallocated) and its manifest spec."""
    from bcc import BPF

    spec = _program(tmp_path, "large", LARGE_SOURCE, LARGE_MANIFEST).maps["large"]
    b = BPF(text=LARGE_SOURCE.encode())
    try:
        yield b[b"large"], spec
    finally:
        b.cleanup()


def test_a_large_map_holding_few_entries_is_read_into_buffers_of_its_entries(
    large_map: tuple[Any, MapSpec],
) -> None:
    import tracemalloc

    table, spec = large_map
    for i in range(89):
        table[table.Key(i)] = table.Leaf(i * 10)
    reader = MapReader(table, spec, "large", 1048576)
    _read(reader)  # a first read may allocate what every later one reuses
    tracemalloc.start()
    try:
        n, cols = _read(reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 89 and sorted(cols["n"]) == [i * 10 for i in range(89)]
    # capacity * (key + value) would be 12 MiB; 89 entries are about 1 KiB
    assert peak < 256 * 1024, f"a read allocated {peak} bytes"


def test_a_map_larger_than_one_batch_is_read_whole(large_map: tuple[Any, MapSpec]) -> None:
    from ebpf_sidecar import maps

    table, spec = large_map
    entries = 3 * maps.BATCH_BYTES // (4 + 8) + 17  # three batches and a bit
    keys = (table.Key * entries)(*range(entries))
    leaves = (table.Leaf * entries)(*range(entries))
    table.items_update_batch(keys, leaves)
    reader = MapReader(table, spec, "large", 1048576)
    n, cols = _read(reader)
    assert n == entries and sorted(cols["id"]) == list(range(entries))
    n, cols = _read(reader, clear=True)
    assert n == entries and sum(cols["n"]) == entries * (entries - 1) // 2
    assert _read(reader)[0] == 0


CGROUP_SOURCE = "BPF_HASH(by_cgroup, u64, u64, 16);\n"
CGROUP_MANIFEST = """
name: by_cgroup
hooks: []
maps:
  - name: by_cgroup
    max_entries: 16
    key: [{name: cgroup_id, type: u64, decoders: [cgroup]}]
    value: [{name: n, type: u64}]
"""


@pytest.fixture
def invalid_utf8_cgroup() -> Iterator[int]:
    """A cgroup whose name has bytes that are no UTF-8, under the cgroup2 mount; its id."""
    from ebpf_sidecar.decoders.cgroup import PATHS

    mount = PATHS.mount()
    assert mount is not None, "no cgroup2 mount"
    path = os.fsencode(mount.mountpoint) + b"/ebpf-test-\xff\xfe-" + os.urandom(4).hex().encode()
    os.mkdir(path)
    try:
        yield os.stat(path).st_ino
    finally:
        os.rmdir(path)


def test_a_cgroup_name_that_is_not_utf8_does_not_break_the_map(
    tmp_path: Path, invalid_utf8_cgroup: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bcc import BPF

    from ebpf_sidecar.decoders.cgroup import PATHS

    monkeypatch.setattr(PATHS, "_walked_at", None)  # walk now, whenever the last walk was
    spec = _program(tmp_path, "by_cgroup", CGROUP_SOURCE, CGROUP_MANIFEST).maps["by_cgroup"]
    b = BPF(text=CGROUP_SOURCE.encode())
    try:
        table = b[b"by_cgroup"]
        table[table.Key(invalid_utf8_cgroup)] = table.Leaf(3)
        snap = pb.MapSnapshot()
        MapReader(table, spec, "by_cgroup", 16).read(snap)
        [name] = snap.key_columns[0].strings
        assert name.startswith("/ebpf-test-\ufffd\ufffd-"), name
        assert pb.MapSnapshot.FromString(snap.SerializeToString()) == snap
    finally:
        b.cleanup()


def test_per_cpu_values_summed_past_u64_saturate(
    bpf: tuple[Any, dict[str, MapReader]], caplog: pytest.LogCaptureFixture
) -> None:
    b, readers = bpf
    h = b[b"h"]
    cpus = _cpus(h)
    assert cpus > 1, "summing needs two CPUs"
    _put(h, h.Key(1), [(1 << 64) - 1] * cpus, m=1)
    _put(h, h.Key(2), [5] * cpus)
    snap = pb.MapSnapshot()
    readers["h"].read(snap)
    values = {c.field: list(c.uints) for c in snap.value_columns}
    keys = list(snap.key_columns[0].strings)
    assert dict(zip(keys, values["n"], strict=True)) == {"one": (1 << 64) - 1, "two": 5 * cpus}
    assert sorted(values["m"]) == [0, cpus]
    assert pb.MapSnapshot.FromString(snap.SerializeToString()) == snap
    assert "map h: 1 values out of their 64-bit range" in caplog.text


def test_a_faster_stream_does_not_delete_what_a_slower_one_has_not_exported(
    bpf: tuple[Any, dict[str, MapReader]], tmp_path: Path
) -> None:
    b, _ = bpf
    plain = b[b"plain"]
    plain[plain.Key(2)] = plain.Leaf(5, 0)
    proc = tmp_path / "proc"
    proc.mkdir()  # pid 2 has exited
    reaper = ExitedProcessReaper(str(proc))
    fast, slow = object(), object()
    reaper.subscribe(fast)
    reaper.subscribe(slow)
    keys_raw = struct.pack("<I", 2)
    for _ in range(3):  # the fast stream reads three times
        assert reaper.reap(plain.map_fd, keys_raw, 4, [2], fast) == 0
    assert reaper.reap(plain.map_fd, keys_raw, 4, [2], slow) == 0  # slow: exported once
    assert [k.id for k in plain] == [2], "deleted before the slow stream's second export"
    assert reaper.reap(plain.map_fd, keys_raw, 4, [2], slow) == 1  # both twice: deleted
    assert [k.id for k in plain] == []


def test_a_closed_stream_no_longer_holds_deletions_back(
    bpf: tuple[Any, dict[str, MapReader]], tmp_path: Path
) -> None:
    b, _ = bpf
    plain = b[b"plain"]
    plain[plain.Key(2)] = plain.Leaf(5, 0)
    proc = tmp_path / "proc"
    proc.mkdir()
    reaper = ExitedProcessReaper(str(proc))
    live, gone = object(), object()
    reaper.subscribe(live)
    reaper.subscribe(gone)
    keys_raw = struct.pack("<I", 2)
    assert reaper.reap(plain.map_fd, keys_raw, 4, [2], live) == 0
    reaper.unsubscribe(gone)
    assert reaper.reap(plain.map_fd, keys_raw, 4, [2], live) == 1


def _rows(snap: pb.MapSnapshot) -> list[tuple[Any, ...]]:
    """A snapshot's entries as rows (columns in order), classic or packed columns."""
    import numpy as np

    cols: list[list[Any]] = []
    for c in [*snap.key_columns, *snap.value_columns]:
        cols.append(list(c.strings) or list(c.uints) or list(c.ints))
    for p in [*snap.packed_key_columns, *snap.packed_value_columns]:
        if p.type == pb.FIELD_TYPE_STRING:
            idx = np.frombuffer(p.indexes, dtype=f"<u{p.width}")
            cols.append([p.dictionary[i] for i in idx])
        else:
            kind = "i" if p.type == pb.FIELD_TYPE_INT else "u"
            cols.append(np.frombuffer(p.values, dtype=f"<{kind}{p.width}").tolist())
    assert all(len(c) == snap.entries for c in cols)
    return list(zip(*cols, strict=True)) if cols else []


def _slots(raw: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(raw) // 4}I", raw))


def _apply(state: dict[int, tuple[Any, ...]], snap: pb.MapSnapshot) -> None:
    """What a client does with a changes-only stream's map snapshot."""
    if not snap.changes_only:
        state.clear()
    for slot in _slots(snap.removed_slots):
        del state[slot]
    for slot, row in zip(_slots(snap.slots), _rows(snap), strict=True):
        state[slot] = row


@pytest.mark.parametrize("per_cpu", [False, True])
def test_changes_only_reads_rebuild_what_full_reads_show(
    bpf: tuple[Any, dict[str, MapReader]], per_cpu: bool
) -> None:
    from ebpf_sidecar.maps import Changes

    b, readers = bpf
    h, reader = b[b"h"], readers["h"]
    cpus = _cpus(h)
    changes = Changes(full_every=4)
    state: dict[int, tuple[Any, ...]] = {}
    history = [
        {1: 10, 2: 20, 3: 30},  # 3 is dropped by the id decoder
        {1: 10, 2: 21, 3: 30},  # one value changed
        {1: 10, 3: 30},  # one removed
        {1: 10, 7: 70},  # one added (in the freed slot)
        {1: 11, 7: 70},  # a change
        {1: 11, 7: 70},  # nothing changed (and the fourth read is whole)
        {2: 5},
    ]
    sent = []
    for entries in history:
        for k in list(h.keys()):
            if k.id not in entries:
                del h[k]
        for key, n in entries.items():
            _put(h, h.Key(key), [n] + [1] * (cpus - 1), m=key)
        full = pb.MapSnapshot()
        reader.read(full, per_cpu=per_cpu)
        packed = pb.MapSnapshot()
        reader.read(packed, per_cpu=per_cpu, packed=True, changes=changes)
        _apply(state, packed)
        assert sorted(state.values()) == sorted(_rows(full))
        sent.append(
            (packed.entries, len(_slots(packed.removed_slots))) if packed.changes_only else None
        )
    rows = cpus if per_cpu else 1
    assert sent == [
        None,  # the first read is whole
        (1, 0),  # one value changed (on one CPU)
        (0, rows),  # one removed
        (rows, 0),  # one added
        None,  # every fourth read is whole
        (0, 0),  # nothing changed
        (rows, 2 * rows),  # one added, two removed
    ]


def test_packed_columns_hold_what_columns_hold(bpf: tuple[Any, dict[str, MapReader]]) -> None:
    b, readers = bpf
    h = b[b"h"]
    cpus = _cpus(h)
    for key, n in ((1, 10), (3, 30), (2, 20), (7, 70)):
        _put(h, h.Key(key), [n] * cpus, m=key)
    for per_cpu in (False, True):
        classic, packed = pb.MapSnapshot(), pb.MapSnapshot()
        readers["h"].read(classic, per_cpu=per_cpu)
        readers["h"].read(packed, per_cpu=per_cpu, packed=True)
        assert not packed.key_columns and not packed.value_columns
        assert [c.field for c in packed.packed_key_columns] == [
            c.field for c in classic.key_columns
        ]
        assert sorted(_rows(packed)) == sorted(_rows(classic))


WRITTEN_SOURCE = """
struct k { u32 pid; };
struct v { u64 n; u64 m; u64 __written; };
BPF_PERCPU_HASH(procs, struct k, struct v, 64);
BPF_ARRAY(procs_written_epoch, u64, 1);
BPF_HASH(procs_written_0, struct k, u8, 64);
BPF_HASH(procs_written_1, struct k, u8, 64);
BPF_ARRAY(procs_written_lost, u64, 1);
"""

WRITTEN_MANIFEST = """
name: prog
hooks: []
maps:
  - name: procs
    max_entries: 64
    pid_field: pid
    written_keys: procs_written
    key:
      - {name: pid, type: u32}
    value:
      - {name: n, type: u64}
      - {name: m, type: u64}
"""


class _Program:
    """What bpf/cpu/cpu.c does on a write, from user space: the value (on
    every CPU) and, at an entry's first write in an epoch, its key in the
    epoch's set."""

    def __init__(self, b: Any) -> None:
        self.b = b
        self.procs = b[b"procs"]

    def write(self, pid: int, n: int) -> None:
        epoch = self.b[b"procs_written_epoch"][0].value
        key = self.procs.Key(pid)
        leaf = self.procs.Leaf()
        before = self.procs.get(key)
        for cpu in range(len(leaf)):
            leaf[cpu].n, leaf[cpu].m = n, pid
            setattr(leaf[cpu], "__written", epoch)
        self.procs[key] = leaf
        if epoch and (before is None or getattr(before[0], "__written") != epoch):
            self.b[f"procs_written_{epoch & 1}".encode()][key] = ct.c_uint8(1)

    def expected(self) -> list[tuple[Any, ...]]:
        return sorted(
            (k.pid, sum(c.n for c in v), sum(c.m for c in v)) for k, v in self.procs.items()
        )


@pytest.fixture
def written(tmp_path: Path) -> Iterator[tuple[_Program, MapReader, Path]]:
    from bcc import BPF

    spec = _program(tmp_path, "prog", WRITTEN_SOURCE, WRITTEN_MANIFEST).maps["procs"]
    b = BPF(text=WRITTEN_SOURCE.encode())
    proc = tmp_path / "proc"  # the reaper's /proc: which pids live
    proc.mkdir()
    try:
        written = [b[m.encode()] for m in spec.written_maps]
        reader = MapReader(b[b"procs"], spec, "procs", 64, written_keys=written)
        assert reader.reaper is not None
        reader.reaper.proc = str(proc)
        yield _Program(b), reader, proc
    finally:
        b.cleanup()


def test_written_keys_reads_look_up_only_what_was_written(
    written: tuple[_Program, MapReader, Path],
) -> None:
    """A changes-only state of a map with written_keys sends what the
    program wrote since its previous read, found without walking the map,
    and what the exited-process reaper deleted; its client holds what the
    map holds after every read. Two streams read the same map, each getting
    every write."""
    from ebpf_sidecar.maps import Changes

    program, reader, proc = written
    streams: dict[str, tuple[object, Changes, dict[int, tuple[Any, ...]]]] = {
        name: (object(), Changes(full_every=100), {}) for name in ("a", "b")
    }
    for stream, _, _ in streams.values():
        reader.subscribe(stream)

    def read(name: str) -> tuple[int, int] | None:
        stream, changes, state = streams[name]
        snap = pb.MapSnapshot()
        held = program.expected()  # as read (the reaper deletes after the read)
        reader.read(snap, stream=stream, packed=True, changes=changes)
        _apply(state, snap)
        assert sorted(state.values()) == held, name
        return (snap.entries, len(_slots(snap.removed_slots))) if snap.changes_only else None

    for pid in (1, 2, 3):
        (proc / str(pid)).mkdir()
        program.write(pid, 10 * pid)
    assert read("a") is None  # the first read is whole, and starts the epochs
    assert read("b") is None
    program.write(2, 21)
    program.write(2, 22)  # twice in one epoch: the key once
    assert read("a") == (1, 0)
    assert read("a") == (0, 0)  # nothing written since
    program.write(4, 40)  # a new entry
    (proc / "4").mkdir()
    assert read("a") == (1, 0)
    assert read("b") == (2, 0)  # b gets both writes since its read
    (proc / "3").rmdir()  # pid 3 exits: deleted once both streams exported it twice
    assert read("a") == (0, 0)
    assert read("b") == (0, 0)
    assert read("a") == (0, 0)
    assert read("b") == (0, 0)  # exported twice by both: the reaper deletes it now
    assert [k.pid for k in program.procs].count(3) == 0
    assert read("a") == (0, 1)  # the client is told
    assert read("b") == (0, 1)
    program.write(3, 5)  # the pid comes back: a new entry
    program.write(1, 11)
    assert read("a") == (2, 0)
    assert read("b") == (2, 0)
    program.write(9, 90)  # a process that is already gone when read: reaped too
    assert read("a") == (1, 0)
    assert read("b") == (1, 0)  # pid 3 (gone again) exported twice by both: deleted
    assert read("a") == (0, 1)
    assert read("b") == (0, 1)  # and now pid 9
    assert [k.pid for k in program.procs].count(9) == 0, "a new entry of a dead pid stays"
    assert read("a") == (0, 1)
    assert read("b") == (0, 1)
    # a set that could not take a key: the state reads the whole map
    lost = program.b[b"procs_written_lost"]
    lost[0] = ct.c_uint64(lost[0].value + 1)
    program.write(2, 23)
    assert read("a") is None
    assert read("b") is None
    program.write(1, 12)
    assert read("a") == (1, 0)
    assert read("b") == (1, 0)
