"""Helpers for tests that look at what the kernel has loaded."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p["id"]) for p in json.loads(out)}


def _prog_ids_in(fdinfos: list[Path]) -> set[int]:
    ids: set[int] = set()
    for info in fdinfos:
        try:
            lines = info.read_text().splitlines()
        except OSError:
            continue  # closed meanwhile
        ids.update(int(line.split()[1]) for line in lines if line.startswith("prog_id:"))
    return ids


def prog_ids_of(bpf: Any) -> set[int]:
    """Kernel ids of the programs a BCC object has loaded (from fdinfo)."""
    return _prog_ids_in([Path(f"/proc/self/fdinfo/{fn.fd}") for fn in bpf.funcs.values()])


def prog_ids_held_by(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds open (from its fdinfo)."""
    return _prog_ids_in(list(Path(f"/proc/{pid}/fdinfo").iterdir()))


def programs_held_by(pid: int) -> list[dict[str, Any]]:
    """bpftool's records (name, type, recursion_misses, ...) of the programs a process holds.

    ``recursion_misses`` (absent when 0) counts the runs the kernel skipped
    because the program could not run there: for a classic tracepoint, any
    BPF tracing program already running on that CPU; for a raw tracepoint,
    the same program. ``hook`` is added: the name without BCC's
    ``raw_tracepoint__`` prefix, which bpftool shows for some names and not
    for others (it shows the BTF name when the kernel's 15 characters are a
    prefix of it).
    """
    ids = prog_ids_held_by(pid)
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    progs = [p for p in json.loads(out) if int(p["id"]) in ids]
    # A program loaded from the sidecar's compile cache has no BTF, so bpftool
    # shows only the kernel's 15 characters ("raw_tracepoint_"): its raw
    # tracepoint link names the hook.
    links = subprocess.run(
        ["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    tp_names = {
        int(link["prog_id"]): str(link["tp_name"])
        for link in json.loads(links)
        if "tp_name" in link and "prog_id" in link
    }
    for p in progs:
        name = str(p.get("name", "")).removeprefix("raw_tracepoint__")
        p["hook"] = tp_names.get(int(p["id"]), name)
    return progs


def recursion_misses(pid: int, prefix: str) -> dict[str, int]:
    """recursion_misses of the programs a process holds whose hook starts with ``prefix``."""
    return {
        p["hook"]: int(p.get("recursion_misses", 0))
        for p in programs_held_by(pid)
        if p["hook"].startswith(prefix)
    }


@contextlib.contextmanager
def map_reads_running() -> Iterator[Callable[[], int]]:
    """bpf() map lookups in a loop on another thread for as long as the block runs.

    The kernel does each lookup with the CPU's bpf_prog_active held
    (bpf_disable_instrumentation), as it does the sidecar's own reads of its
    maps every collection interval: a classic tracepoint's program that
    fires in an interrupt meanwhile is skipped (counted in its
    recursion_misses). Yields a function that tells how many lookups ran.
    """
    from ebpf_sidecar import pins

    fd = pins.create_array(8, 1)
    stop = threading.Event()
    done = [0]

    def lookups() -> None:
        while not stop.is_set():
            for _ in range(1000):
                pins._lookup(fd, 0, 8)
            done[0] += 1000

    thread = threading.Thread(target=lookups, daemon=True)
    thread.start()
    try:
        yield lambda: done[0]
    finally:
        stop.set()
        thread.join()
        os.close(fd)


def wait_unloaded(ids: set[int], timeout: float = 5.0) -> set[int]:
    """The ids still loaded after up to ``timeout`` s.

    The kernel frees a closed program after an RCU grace period, so an id
    can outlive its last fd by a few milliseconds.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = ids & loaded_prog_ids()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
