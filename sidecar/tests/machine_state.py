"""The end-of-suite check that tests left the machine as they found it.

A pytest plugin (``pytest_plugins = ["machine_state"]``) used by both the
sidecar's tests and the end-to-end tests. At the start of a session it
records what the machine has: BPF programs (and which processes hold them),
network namespaces, loop devices, nftables tables, cgroups, mounts. At the
end, after every fixture's teardown, it lists what the session added and did
not remove, and fails the session when that list is not empty: a test that
passes only because an earlier one left something behind is a defect, and
so is a test that leaves something for the next run to trip over.

Attribution: a BPF program counts only when this session's process or one
of its children still holds it, or no process does (pinned or held by a
link); programs of other processes on the machine are theirs.

Three mounts are made on purpose by what the tests run: the sidecar mounts
tracefs when it is missing, as it must on a new machine, and bpffs at
/sys/fs/bpf to pin its programs, and `ip netns add` mounts /run/netns. The
check unmounts them again if the session started without them, so the next
session (and the next CI run) exercises those paths too. Whatever a session
leaves pinned in bpffs is a leftover like a loaded program.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

TRACEFS = "/sys/kernel/tracing"
BPFFS = "/sys/fs/bpf"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Deep enough for kubelet-shaped trees (kubepods.slice/<qos>/<pod>/<container>).
CGROUP_DEPTH = 6
# A killed task leaves its cgroup, and a closed program its id, a moment later.
SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class MachineState:
    programs: dict[int, frozenset[int]]  # program id -> pids holding an fd to it
    netns: frozenset[str]
    loop_devices: dict[str, str]  # /dev/loopN -> backing file
    nft_tables: frozenset[str]
    cgroups: frozenset[str]
    mounts: frozenset[tuple[str, str]]  # (mount point, file system type)
    processes: dict[int, int]  # pid -> parent pid
    pins: frozenset[str] = frozenset()  # paths under bpffs


def _run_json(argv: list[str]) -> object:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return json.loads(out) if out.strip() else None


def _processes() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # the comm field may hold spaces and parentheses: the fields follow the last ')'
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _program_holders(program_ids: Iterable[int]) -> dict[int, frozenset[int]]:
    holders: dict[int, set[int]] = {i: set() for i in program_ids}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            infos = list((entry / "fdinfo").iterdir())
        except OSError:
            continue
        for info in infos:
            try:
                text = info.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("prog_id:"):
                    holders.setdefault(int(line.split()[1]), set()).add(int(entry.name))
    return {i: frozenset(p) for i, p in holders.items()}


def _programs() -> dict[int, frozenset[int]]:
    progs = _run_json(["bpftool", "-j", "prog", "show"])
    ids = [int(p["id"]) for p in progs] if isinstance(progs, list) else []
    held = _program_holders(ids)
    return {i: held.get(i, frozenset()) for i in ids}


def _netns() -> frozenset[str]:
    found = _run_json(["ip", "-j", "netns", "list"])
    return frozenset(str(n["name"]) for n in found) if isinstance(found, list) else frozenset()


def _loop_devices() -> dict[str, str]:
    found = _run_json(["losetup", "-J", "-l"])
    if not isinstance(found, dict):
        return {}
    return {str(d["name"]): str(d.get("back-file") or "") for d in found.get("loopdevices", [])}


def _nft_tables() -> frozenset[str]:
    found = _run_json(["nft", "-j", "list", "tables"])
    if not isinstance(found, dict):
        return frozenset()
    return frozenset(
        f"{t['table']['family']} {t['table']['name']}"
        for t in found.get("nftables", [])
        if "table" in t
    )


def _cgroups() -> frozenset[str]:
    found: set[str] = set()
    for top, dirs, _ in os.walk(CGROUP_ROOT):
        depth = len(Path(top).relative_to(CGROUP_ROOT).parts)
        if depth >= CGROUP_DEPTH + 1:
            dirs.clear()
            continue
        # the hierarchies themselves (cpu, memory, unified, ...) are the machine's
        if depth >= 1:
            found.update(os.path.join(top, d) for d in dirs)
    return frozenset(found)


def _mounts() -> frozenset[tuple[str, str]]:
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        found.add((left.split()[4], right.split()[0]))
    return frozenset(found)


def snapshot() -> MachineState:
    return MachineState(
        programs=_programs(),
        netns=_netns(),
        loop_devices=_loop_devices(),
        nft_tables=_nft_tables(),
        cgroups=_cgroups(),
        mounts=_mounts(),
        processes=_processes(),
        pins=_pins(),
    )


def _pins() -> frozenset[str]:
    """What is pinned in bpffs (the sidecar pins its programs there)."""
    if not any(m == BPFFS and fs == "bpf" for m, fs in _mounts()):
        return frozenset()
    found: set[str] = set()
    for folder, dirs, files in os.walk(BPFFS):
        found.update(os.path.join(folder, n) for n in [*dirs, *files])
    # the kernel's own iterators (bpf_preload), there on every mount
    return frozenset(found - {f"{BPFFS}/maps.debug", f"{BPFFS}/progs.debug"})


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _describe_process(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmdline = "?"
    return f"{pid} ({cmdline.strip()[:120]})"


def leftovers(
    before: MachineState,
    after: MachineState,
    session_pid: int,
    ignore_pids: frozenset[int] = frozenset(),
) -> list[str]:
    """What ``after`` has that ``before`` had not, attributed to this session."""
    ours = _descendants(session_pid, after.processes) - ignore_pids
    found = [
        f"process {_describe_process(p)} started by the tests is still running"
        for p in sorted(ours)
    ]
    ours.add(session_pid)
    for prog, holders in sorted(after.programs.items()):
        if prog in before.programs:
            continue
        if not holders:
            found.append(
                f"BPF program {prog} is loaded with no process holding it "
                "(pinned, or held by a link)"
            )
        elif holders & ours:
            found.append(
                f"BPF program {prog} is still held by "
                + ", ".join(_describe_process(p) for p in sorted(holders & ours))
            )
    found += [f"network namespace {n}" for n in sorted(after.netns - before.netns)]
    found += [
        f"loop device {dev} backed by {back or '?'}"
        for dev, back in sorted(after.loop_devices.items())
        if before.loop_devices.get(dev) != back
    ]
    found += [f"nftables table {t}" for t in sorted(after.nft_tables - before.nft_tables)]
    found += [f"cgroup {c}" for c in sorted(after.cgroups - before.cgroups)]
    found += [f"mount {m} ({fs})" for m, fs in sorted(after.mounts - before.mounts)]
    found += [f"pinned BPF object {p}" for p in sorted(after.pins - before.pins)]
    return found


# Mounts that tools make as a side effect and leave for good: the sidecar
# mounts tracefs when missing (as it must on a new machine) and bpffs (to pin
# its programs), `ip netns add` bind-mounts /run/netns on first use. A session
# that started without them unmounts them again, so that the next session
# starts as a new machine does. bpffs that still holds pins stays mounted, so
# that the check reports them instead of the unmount silently freeing them.
RESTORED_MOUNTS = (TRACEFS, BPFFS, "/run/netns")


def _restore_mounts(before: MachineState) -> None:
    had = {m for m, _ in before.mounts}
    for path in RESTORED_MOUNTS:
        if path in had or (path == "/run/netns" and _netns()):
            continue
        if path == BPFFS and _pins():
            continue
        while any(m == path for m, _ in _mounts()):
            subprocess.run(["umount", path], check=True)


class LeftoverCheck:
    def __init__(self) -> None:
        self.before: MachineState | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if os.geteuid() == 0:
            self.before = snapshot()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.before is None:
            return  # not root: the tests themselves fail for that
        _restore_mounts(self.before)
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            left = leftovers(self.before, snapshot(), os.getpid())
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not left:
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "the tests left these behind", red=True, bold=True)
            for line in left:
                reporter.write_line(f"  {line}")
            reporter.write_line(
                "every namespace, loop device, cgroup, nftables table, mount, process and "
                "BPF program a test creates must be removed in a finalizer (another test "
                "run on this machine at the same time can also show up here)"
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(LeftoverCheck(), "machine_state_leftovers")
