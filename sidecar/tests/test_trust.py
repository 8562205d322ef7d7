"""Catalog folders others could write to are refused at start: their C runs in the kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ebpf_sidecar import trust

EXAMPLE = REPO / "examples" / "programs" / "exec_count"
NOBODY = 65534


@pytest.fixture
def programs_dir(tmp_path: Path) -> Path:
    """A copy of the example programs folder, root-owned and 0755, as a start."""
    d = tmp_path / "programs"
    shutil.copytree(EXAMPLE, d / "exec_count")
    for p in [d, *d.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return d


def _start(tmp_path: Path, programs_dir: Path) -> subprocess.CompletedProcess[str]:
    """The sidecar with ``programs_dir``; it must exit at once (a trusted one would not)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ebpf_sidecar",
            "--programs-dir",
            str(programs_dir),
            "--listen",
            f"unix://{tmp_path / 's.sock'}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "make_untrusted, problem",
    [
        (lambda d: d.chmod(0o777), "{d} is writable by its group and others (mode 0777)"),
        (lambda d: d.chmod(0o1777), "{d} is writable by its group and others (mode 1777)"),
        (lambda d: os.chown(d / "exec_count", NOBODY, -1), "{d}/exec_count is owned by uid 65534"),
        (
            lambda d: (d / "exec_count" / "exec_count.c").chmod(0o664),
            "{d}/exec_count/exec_count.c is writable by its group (mode 0664)",
        ),
    ],
    ids=["world-writable", "sticky-is-no-excuse", "program-of-another-user", "group-writable-c"],
)
def test_a_programs_dir_others_could_change_is_refused_at_start(
    tmp_path: Path, programs_dir: Path, make_untrusted: object, problem: str
) -> None:
    assert callable(make_untrusted)
    make_untrusted(programs_dir)
    done = _start(tmp_path, programs_dir)
    assert done.returncode == 2, done.stderr
    assert f"--programs-dir {programs_dir}: the sidecar compiles what is there" in done.stderr
    assert problem.format(d=programs_dir) in done.stderr
    assert not (tmp_path / "s.sock").exists()


def test_a_link_out_of_the_folder_is_checked_where_it_points(
    tmp_path: Path, programs_dir: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    elsewhere.chmod(0o777)
    (programs_dir / "exec_count" / "more.h").symlink_to(elsewhere)
    with pytest.raises(trust.UntrustedPath, match=rf"{elsewhere} is writable by"):
        trust.check_tree(programs_dir, "--programs-dir")


def test_the_repositorys_own_catalog_is_trusted() -> None:
    trust.check_tree(REPO / "bpf", "--catalog")
    trust.check_tree(REPO / "examples" / "programs", "--programs-dir")
