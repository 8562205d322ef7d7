"""Restart without loss: a crashed sidecar's programs keep counting and are adopted.

A "sidecar" here is a ProgramManager with a pin root in a process of its
own, killed with SIGKILL as a crash would; the end-to-end test
(tests/test_restart.py) does the same to the real sidecar and collector.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpf_helpers import loaded_prog_ids, prog_ids_held_by, wait_unloaded
from conftest import CATALOG_DIR
from ebpf_sidecar import events, pins
from ebpf_sidecar.catalog import Catalog
from ebpf_sidecar.programs import LoadedProgram, ProgramManager
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from snapshots import column_sum

pytestmark = pytest.mark.usefixtures("needs_root")

# A sidecar that loads one program, says when it is attached, and waits to be killed.
SIDECAR = r"""
import sys
from pathlib import Path
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager
m = ProgramManager(load_catalog([Path(sys.argv[1])]), pin_root=Path(sys.argv[2]))
m.start()
loaded = m.acquire(sys.argv[3], {})
print(loaded.attach_time_ns, flush=True)
sys.stdin.read()
"""

# Exactly n getppid() calls under a comm of its own (PR_SET_NAME).
GETPPID_LOOP = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
getppid = os.getppid
for _ in range(int(sys.argv[2])):
    getppid()
"""


@pytest.fixture
def pin_root() -> Iterator[Path]:
    """A pin folder of this test's own; removing it detaches whatever it pinned."""
    assert pins.ensure_bpffs(pins.DEFAULT_ROOT), "bpffs cannot be mounted at /sys/fs/bpf"
    root = pins.BPFFS / f"ebpfreceiver-test-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class CrashingSidecar:
    def __init__(self, root: Path, program: str = "syscalls") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SIDECAR, str(CATALOG_DIR), str(root), program],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip(), "the sidecar subprocess died before loading its program"
        self.attach_time_ns = int(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def crash(pin_root: Path) -> Iterator[CrashingSidecar]:
    sidecar = CrashingSidecar(pin_root)
    yield sidecar
    if sidecar.proc.poll() is None:
        sidecar.kill()


def _linked_prog_ids(root: Path) -> set[int]:
    """Ids of the programs the pinned links under ``root`` attach."""
    ids = set()
    for link in root.glob("*/link_*"):
        out = subprocess.run(
            ["bpftool", "-j", "link", "show", "pinned", str(link)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ids.add(int(json.loads(out)["prog_id"]))
    return ids


def _left(root: Path) -> list[Path]:
    """What is pinned under ``root`` (a clean stop removes the folder too)."""
    return list(root.iterdir()) if root.exists() else []


def _getppid_loop(comm: str, n: int) -> None:
    subprocess.run([sys.executable, "-c", GETPPID_LOOP, comm, str(n)], check=True)


def _count(snap: pb.MapSnapshot, syscall: str, comm: str) -> int:
    return column_sum(snap, "count", syscall_id=syscall, comm=comm)


def test_a_killed_sidecars_programs_keep_counting_and_are_adopted(
    catalog: Catalog, pin_root: Path, crash: CrashingSidecar
) -> None:
    ids = _linked_prog_ids(pin_root)
    assert len(ids) == 2, "syscalls has two hooks, each pinned as a link"
    crash.kill()
    assert ids <= loaded_prog_ids(), "the programs went with the sidecar"
    # Counted while no sidecar is alive: nobody holds the maps but the programs.
    comm = f"gap{uuid.uuid4().hex[:8]}"
    _getppid_loop(comm, 4321)

    successor = ProgramManager(catalog, pin_root=pin_root)
    try:
        successor.start()
        loaded = successor.acquire("syscalls", {})
        assert loaded.adopted, "loaded again instead of adopting the pins"
        assert loaded.attach_time_ns == crash.attach_time_ns, "a new start time"
        assert _linked_prog_ids(pin_root) == ids, "a second copy was attached"
        assert ids <= prog_ids_held_by(os.getpid()), "the successor does not hold its links"
        # the programs' run-time statistics are read through their pins
        assert {c.hook for c in loaded.costs()} == {
            "raw_tracepoint:sys_enter",
            "raw_tracepoint:sys_exit",
        }
        snap = pb.MapSnapshot()
        loaded.readers["syscalls"].read(snap)
        assert _count(snap, "getppid", comm) == 4321
        successor.release(loaded)
        assert not _left(pin_root), "pins left after the last stream closed"
        assert not wait_unloaded(ids), "still attached after a clean release"
    finally:
        successor.close()


def test_a_clean_stop_leaves_nothing_pinned_or_loaded(catalog: Catalog, pin_root: Path) -> None:
    manager = ProgramManager(catalog, pin_root=pin_root)
    try:
        manager.acquire("syscalls", {})
        ids = _linked_prog_ids(pin_root)
        assert len(ids) == 2
    finally:
        manager.close()
    assert not _left(pin_root)
    assert not wait_unloaded(ids)


def test_pins_past_their_lease_are_removed_and_the_program_loads_fresh(
    catalog: Catalog, pin_root: Path, crash: CrashingSidecar
) -> None:
    ids = _linked_prog_ids(pin_root)
    crash.kill()
    lease = 0.5
    time.sleep(lease + 0.5)
    successor = ProgramManager(catalog, pin_root=pin_root, lease_s=lease)
    try:
        successor.start()  # sweeps before anything loads
        assert not _left(pin_root), "expired pins were kept"
        assert not wait_unloaded(ids), "expired programs are still attached"
        loaded = successor.acquire("syscalls", {})
        assert not loaded.adopted
        assert loaded.attach_time_ns > crash.attach_time_ns
    finally:
        successor.close()


def test_pins_of_a_living_sidecar_are_not_taken_over(catalog: Catalog, pin_root: Path) -> None:
    first = ProgramManager(catalog, pin_root=pin_root)
    second = ProgramManager(catalog, pin_root=pin_root)
    try:
        a = first.acquire("syscalls", {})
        b = second.acquire("syscalls", {})
        assert a.pins is not None and not b.adopted and b.pins is None
        os.getppid()
    finally:
        second.close()
        first.close()
    assert not _left(pin_root)


def test_a_changed_program_gets_another_instance_key(tmp_path: Path) -> None:
    from ebpf_sidecar.manifest import load_catalog
    from ebpf_sidecar.programs import _full_cflags, instance_key

    shutil.copytree(CATALOG_DIR, tmp_path / "bpf")

    def key() -> str:
        cat = load_catalog([tmp_path / "bpf"])
        p = cat.program("syscalls")
        values = p.parameter_values({})
        return instance_key(p, values, _full_cflags(p, p.cflags({}), cat.include_dirs))

    before = key()
    assert key() == before
    source = tmp_path / "bpf/syscalls/syscalls.c"
    source.write_text(source.read_text() + "\n// changed\n")
    assert key() != before


def test_hooks_detach_and_attach_again_without_reloading(programs: ProgramManager) -> None:
    """What the overhead benchmark's off/on does with the links."""
    loaded = programs.acquire("syscalls", {})
    comm = Path("/proc/self/comm").read_text().strip()

    def count() -> int:
        snap = pb.MapSnapshot()
        loaded.readers["syscalls"].read(snap)
        return _count(snap, "getppid", comm)

    try:
        loaded.detach_hooks()
        before = count()
        for _ in range(100):
            os.getppid()
        assert count() == before, "counted with its hooks detached"
        loaded.attach_hooks()
        for _ in range(100):
            os.getppid()
        assert count() == before + 100
    finally:
        programs.release(loaded)


def test_events_written_while_no_sidecar_lived_reach_the_successor(
    catalog: Catalog, pin_root: Path
) -> None:
    crashed = CrashingSidecar(pin_root, "process")
    try:
        crashed.kill()
        # an abnormal exit while nobody reads: it waits in the pinned ring buffer
        gone = subprocess.run(["sh", "-c", "exit 7"], check=False)
        assert gone.returncode == 7
    finally:
        if crashed.proc.poll() is None:
            crashed.kill()
    successor = ProgramManager(catalog, pin_root=pin_root)
    try:
        successor.start()
        loaded = successor.acquire("process", {})
        assert loaded.adopted, "loaded again instead of adopting the pins"
        source = loaded.events["ebpf.process.exit"]
        sink = events.EventSink()
        sink.want(source.spec.name, 1000)
        source.subscribe(sink)
        try:
            deadline = time.monotonic() + 10
            got: list[events.Event] = []
            while time.monotonic() < deadline and not any(
                e.values["status"] == 7 and e.values["comm"] == "sh" for e in got
            ):
                sink.wait(0.5)
                got += [e for e, _ in sink.take()]
        finally:
            source.unsubscribe(sink)
        assert any(e.values["status"] == 7 and e.values["comm"] == "sh" for e in got), got
        successor.release(loaded)
    finally:
        successor.close()


# Loads the default set as the sidecar does (loaders at once, then adopted) and
# prints which of the compiler's libraries this process has mapped.
LEAN_SIDECAR = r"""
import json, sys
from pathlib import Path
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager
m = ProgramManager(load_catalog([Path(sys.argv[1])]), pin_root=Path(sys.argv[2]), loader=True)
names = sys.argv[3:]
m.prepare([(n, {}, False) for n in names])
loaded = [m.acquire(n, {}) for n in names]
maps = Path("/proc/self/maps").read_text()
print(json.dumps({
    "mapped": sorted({lib for lib in ("libbcc", "libLLVM", "libclang") if lib in maps}),
    "fresh": [not lp.adopted and lp.pins is not None and lp.bpf is None for lp in loaded],
}))
m.close()
"""


def test_loader_processes_compile_and_the_sidecar_never_maps_llvm(pin_root: Path) -> None:
    names = ["syscalls", "process", "oom"]
    out = subprocess.run(
        [sys.executable, "-c", LEAN_SIDECAR, str(CATALOG_DIR), str(pin_root), *names],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["mapped"] == [], "the compiler was loaded into the sidecar"
    assert result["fresh"] == [True] * len(names), "not loaded by loaders and pinned"
    assert not _left(pin_root), "a clean close left pins"


def test_a_delta_streams_instance_from_a_loader_is_not_left_pinned(
    catalog: Catalog, pin_root: Path
) -> None:
    manager = ProgramManager(catalog, pin_root=pin_root, loader=True)
    comm = Path("/proc/self/comm").read_text().strip()
    before = prog_ids_held_by(os.getpid())
    try:
        loaded = manager.acquire("syscalls", {}, exclusive=True)
        assert loaded.pins is None and not _left(pin_root), "an exclusive instance stayed pinned"
        ids = prog_ids_held_by(os.getpid()) - before
        assert ids, "the adopted instance's programs are not held"
        for _ in range(50):
            os.getppid()
        snap = pb.MapSnapshot()
        loaded.readers["syscalls"].read(snap, clear=True)
        assert _count(snap, "getppid", comm) >= 50
        manager.release(loaded)
        assert not wait_unloaded(ids), "released, but its programs are still loaded"
    finally:
        manager.close()


def _compiled_into(cache: Path, catalog: Catalog, pin_root: Path, name: str) -> Path:
    """``name`` loaded once by a sidecar with the compile cache ``cache``, then
    released; its cache entry."""
    first = ProgramManager(catalog, pin_root=pin_root, loader=True, compile_cache=cache)
    try:
        first.release(first.acquire(name, {}))
    finally:
        first.close()
    [entry] = cache.glob(f"{name}-*.json")
    return entry


def test_a_restart_loads_the_program_from_the_compile_cache_and_it_counts(
    catalog: Catalog, pin_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    entry = _compiled_into(cache, catalog, pin_root, "syscalls")
    comm = Path("/proc/self/comm").read_text().strip()
    second = ProgramManager(catalog, pin_root=pin_root, loader=True, compile_cache=cache)
    try:
        with caplog.at_level(logging.INFO, logger="ebpf_sidecar.programs"):
            loaded = second.acquire("syscalls", {})
        assert "syscalls  in" in caplog.text and "from the compile cache" in caplog.text
        assert loaded.pins is not None and not loaded.adopted

        def count() -> int:
            snap = pb.MapSnapshot()
            loaded.readers["syscalls"].read(snap)
            return _count(snap, "getppid", comm)

        before = count()
        for _ in range(100):
            os.getppid()
        assert count() == before + 100
        second.release(loaded)
    finally:
        second.close()
    assert not _left(pin_root)
    assert entry.exists()


def test_a_cache_entry_of_another_kernel_is_replaced_by_a_compile(
    catalog: Catalog, pin_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    entry = _compiled_into(cache, catalog, pin_root, "oom")
    recorded = json.loads(entry.read_text())
    entry.write_text(json.dumps({**recorded, "kernel": "Linux version 0.0.1"}))
    second = ProgramManager(catalog, pin_root=pin_root, loader=True, compile_cache=cache)
    try:
        with caplog.at_level(logging.INFO, logger="ebpf_sidecar"):
            second.release(second.acquire("oom", {}))
        assert "recorded for another kernel" in caplog.text
        assert "by loader process" in caplog.text
    finally:
        second.close()
    assert json.loads(entry.read_text())["kernel"] == recorded["kernel"], "not recorded again"


def test_streams_preparing_the_same_programs_at_once_share_one_instance_each(
    catalog: Catalog, pin_root: Path
) -> None:
    manager = ProgramManager(catalog, pin_root=pin_root, loader=True)
    names = ["process", "oom"]
    got: dict[int, list[LoadedProgram]] = {}

    def stream(i: int) -> None:
        manager.prepare([(n, {}, False) for n in names])
        got[i] = [manager.acquire(n, {}) for n in names]

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [id(lp) for lp in got[0]] == [id(lp) for lp in got[1]]
        assert all(lp.pins is not None and not lp.adopted for lp in got[0])
        assert len(_left(pin_root)) == len(names)
    finally:
        for lp in [*got.get(0, []), *got.get(1, [])]:
            manager.release(lp)
        manager.close()
    assert not _left(pin_root)
