from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cachetools import TTLCache

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders import pid


def test_own_pid_is_named_like_proc_comm() -> None:
    comm = Path("/proc/self/comm").read_text().strip()
    assert decoders.apply(["pid"], [os.getpid()]) == [comm]


def test_exited_process_is_empty() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    pid.NAMES.entries.pop(p.pid, None)
    assert decoders.apply(["pid"], [p.pid, 0, -1, "x"]) == ["", "", "", ""]
    assert decoders.get("pid").failure == '""'


def test_names_are_cached_for_ttl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "comm").write_text("first\n")
    ttl = pid.NAMES.ttl
    now = [100.0]
    monkeypatch.setattr(pid.NAMES, "proc", str(tmp_path))
    monkeypatch.setattr(pid.NAMES, "entries", TTLCache(maxsize=16, ttl=ttl, timer=lambda: now[0]))
    assert pid.process_name(42) == "first"
    (tmp_path / "42" / "comm").write_text("second\n")
    now[0] = 100.0 + ttl / 2
    assert pid.process_name(42) == "first"
    now[0] = 100.0 + ttl + 1
    assert pid.process_name(42) == "second"
