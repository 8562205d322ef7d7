"""Helpers for tests that look at what the kernel has loaded."""

from __future__ import annotations

import json
import subprocess
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
