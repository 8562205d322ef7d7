"""tracefs: mounted when missing, an error naming the fix when it cannot be.

Each test runs the sidecar's code in a private mount namespace with tracefs
unmounted, so it starts from a fresh machine's state whatever this host has
mounted, and leaves the host's mounts as they were.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import CATALOG_DIR

pytestmark = pytest.mark.usefixtures("needs_root")


def run_without_tracefs(code: str, *, can_mount: bool) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh mount namespace where /sys/kernel/tracing is empty.

    Without ``can_mount`` the interpreter runs with CAP_SYS_ADMIN removed
    from its bounding set, as a sidecar given only CAP_BPF + CAP_PERFMON.
    """
    drop = "setpriv --bounding-set -sys_admin " if not can_mount else ""
    script = (
        "umount /sys/kernel/tracing 2>/dev/null; "
        "if [ -d /sys/kernel/tracing/events ]; then echo 'tracefs still mounted' >&2; exit 99; fi; "
        f'exec {drop}"$0" -c "$1"'
    )
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            sys.executable,
            code,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tracefs_is_mounted_when_missing() -> None:
    r = run_without_tracefs(
        "from ebpf_sidecar import kernel\n"
        "print(kernel.tracepoint_defines(['tracepoint:sched:sched_switch']))\n"
        "print(kernel.tracepoint_fields('nope', 'missing'))\n",
        can_mount=True,
    )
    assert r.returncode == 0, r.stderr
    defines, absent = r.stdout.splitlines()
    assert "-DTP_SCHED_SWITCH_HAS_PREV_STATE=1" in defines
    # a tracepoint this kernel does not have is a legitimate empty answer
    assert absent == "[]"


def test_unmountable_tracefs_is_an_error_that_names_the_fix() -> None:
    r = run_without_tracefs(
        "from ebpf_sidecar import kernel\n"
        "try:\n"
        "    kernel.tracepoint_fields('sched', 'sched_switch')\n"
        "except kernel.TracefsUnavailable as e:\n"
        "    print('fields:', e)\n"
        "from ebpf_sidecar.manifest import load_catalog\n"
        "from ebpf_sidecar.programs import LoadError, ProgramManager\n"
        f"mgr = ProgramManager(load_catalog([{str(CATALOG_DIR)!r}]))\n"
        "try:\n"
        "    mgr.acquire('oom', {})\n"
        "except LoadError as e:\n"
        "    print('load:', e)\n",
        can_mount=False,
    )
    assert r.returncode == 0, r.stderr
    fields, load = r.stdout.splitlines()
    assert fields.startswith("fields: tracefs is not mounted at /sys/kernel/tracing"), fields
    assert "mount -t tracefs tracefs /sys/kernel/tracing" in fields
    assert "CAP_SYS_ADMIN" in fields
    # a program with classic tracepoints fails to load, saying why, instead
    # of compiling without the fields this kernel has
    assert load.startswith(
        "load: program 'oom' needs tracepoint formats: tracefs is not mounted"
    ), load
