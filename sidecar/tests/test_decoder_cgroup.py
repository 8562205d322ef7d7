from __future__ import annotations

import os
from pathlib import Path

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders.cgroup import CgroupPaths, Mount, find_mount

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
ESCAPED = "30 23 0:26 /sub /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n"


def test_finds_cgroup2_wherever_it_is_mounted() -> None:
    assert find_mount(HYBRID) == Mount("/sys/fs/cgroup/unified", "/")
    assert find_mount(UNIFIED) == Mount("/sys/fs/cgroup", "/")
    assert find_mount(ESCAPED) == Mount("/mnt/my cg", "/sub")
    assert find_mount(HYBRID.splitlines()[0]) is None


def _tree(tmp_path: Path, root: str = "/") -> tuple[CgroupPaths, Path]:
    mnt = tmp_path / "cg"
    (mnt / "a" / "b").mkdir(parents=True)
    (mnt / "c").mkdir()
    (mnt / "file").write_text("")
    info = tmp_path / "mountinfo"
    info.write_text(f"41 31 0:38 {root} {mnt} rw - cgroup2 cgroup2 rw\n")
    return CgroupPaths(str(info), refresh_interval=5.0), mnt


def test_ids_are_directory_inodes(tmp_path: Path) -> None:
    paths, mnt = _tree(tmp_path)
    ino = {p: os.stat(mnt / p.lstrip("/")).st_ino for p in ("/", "/a", "/a/b", "/c")}
    assert paths.decode([ino["/a/b"], ino["/"], ino["/c"], ino["/a"]]) == ["/a/b", "/", "/c", "/a"]
    assert paths.walks == 1


def test_misses_refresh_rate_limited_and_removed_cgroups_are_remembered(tmp_path: Path) -> None:
    paths, mnt = _tree(tmp_path)
    b = os.stat(mnt / "a" / "b").st_ino
    assert paths.path(b, now=0.0) == "/a/b"
    (mnt / "d").mkdir()
    d = os.stat(mnt / "d").st_ino
    assert paths.path(d, now=1.0) == ""  # a miss, but the last walk is too recent
    assert paths.walks == 1
    (mnt / "a" / "b").rmdir()
    assert paths.path(d, now=6.0) == "/d"  # refreshed
    assert paths.walks == 2
    assert paths.path(b, now=6.5) == "/a/b", "a removed cgroup lost its path"
    assert paths.path(123456789, now=7.0) == ""
    assert paths.walks == 2


def test_a_subtree_mount_prefixes_its_root(tmp_path: Path) -> None:
    paths, mnt = _tree(tmp_path, root="/kubepods.slice")
    assert paths.decode([os.stat(mnt / "c").st_ino]) == ["/kubepods.slice/c"]


def test_bounded(tmp_path: Path) -> None:
    paths, _ = _tree(tmp_path)
    paths.max_entries = 2
    paths.decode([1])
    assert len(paths._paths) == 2


def test_no_cgroup2_mount_is_empty(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(HYBRID.splitlines()[0] + "\n")
    assert CgroupPaths(str(info)).decode([1, "x"]) == ["", ""]


def test_real_root_cgroup_of_this_machine() -> None:
    mount = find_mount(Path("/proc/self/mountinfo").read_text())
    assert mount is not None, "no cgroup2 mount"
    assert decoders.apply(["cgroup"], [os.stat(mount.mountpoint).st_ino]) == ["/"]
    assert decoders.get("cgroup").failure == '""'
