"""The end-of-suite leftover check fails a session that leaks, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from machine_state import MachineState, leftovers

pytestmark = pytest.mark.usefixtures("needs_root")

HERE = Path(__file__).resolve().parent

LEAKY_TEST = """
import subprocess

def test_leaks_a_network_namespace():
    subprocess.run(["ip", "netns", "add", "{name}"], check=True)
"""

TIDY_TEST = """
import subprocess

def test_removes_its_network_namespace():
    subprocess.run(["ip", "netns", "add", "{name}"], check=True)
    subprocess.run(["ip", "netns", "del", "{name}"], check=True)
"""


def _run_session(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_one.py").write_text(body)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "machine_state",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_one.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )


def test_a_session_that_leaks_a_namespace_fails_and_names_it(tmp_path: Path) -> None:
    name = f"ebpf-test-leak-{os.getpid()}"
    try:
        r = _run_session(tmp_path, LEAKY_TEST.format(name=name))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the tests left these behind" in r.stdout
    assert f"network namespace {name}" in r.stdout


def test_a_session_that_cleans_up_passes(tmp_path: Path) -> None:
    name = f"ebpf-test-tidy-{os.getpid()}"
    r = _run_session(tmp_path, TIDY_TEST.format(name=name))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left these behind" not in r.stdout


def _state(**kw: object) -> MachineState:
    base: dict[str, object] = dict(
        programs={},
        netns=frozenset(),
        loop_devices={},
        nft_tables=frozenset(),
        cgroups=frozenset(),
        mounts=frozenset(),
        processes={},
    )
    base.update(kw)
    return MachineState(**base)  # type: ignore[arg-type]


def test_programs_count_when_ours_or_held_by_nobody() -> None:
    me, child, stranger = 100, 101, 200
    before = _state(programs={1: frozenset([stranger])})
    after = _state(
        programs={
            1: frozenset([stranger]),  # was there before
            2: frozenset([stranger]),  # another process's, not ours
            3: frozenset([me]),  # a ProgramManager never released
            4: frozenset([child]),  # a sidecar never stopped
            5: frozenset(),
        },  # pinned or held by a link
        processes={me: 1, child: me, stranger: 1},
    )
    found = leftovers(before, after, me)
    assert [line.split(" is ")[0] for line in found if line.startswith("BPF")] == [
        "BPF program 3",
        "BPF program 4",
        "BPF program 5",
    ]
    assert any(line.startswith(f"process {child} ") for line in found)


def test_new_devices_namespaces_cgroups_and_mounts_are_listed() -> None:
    before = _state(loop_devices={"/dev/loop0": "/a"}, cgroups=frozenset(["/sys/fs/cgroup/x"]))
    after = _state(
        netns=frozenset(["n"]),
        loop_devices={"/dev/loop0": "/a", "/dev/loop1": "/b"},
        nft_tables=frozenset(["inet t"]),
        cgroups=frozenset(["/sys/fs/cgroup/x", "/sys/fs/cgroup/y"]),
        mounts=frozenset([("/mnt", "tmpfs")]),
    )
    assert leftovers(before, after, 1) == [
        "network namespace n",
        "loop device /dev/loop1 backed by /b",
        "nftables table inet t",
        "cgroup /sys/fs/cgroup/y",
        "mount /mnt (tmpfs)",
    ]
