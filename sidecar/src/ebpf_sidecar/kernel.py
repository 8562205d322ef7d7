"""What the running kernel offers, and the mounts BCC needs."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")


@dataclass(frozen=True)
class KernelInfo:
    release: str
    btf: bool
    raw_tracepoints: bool
    perf_events: bool
    kprobes: bool
    headers: str

    def summary(self) -> str:
        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        return (
            f"kernel {self.release}: BTF {yes(self.btf)}, raw tracepoints "
            f"{yes(self.raw_tracepoints)}, perf events {yes(self.perf_events)}, "
            f"kprobes {yes(self.kprobes)}, headers {self.headers or 'none found'}"
        )


def ensure_tracefs() -> None:
    """Mount tracefs when it is missing: BCC reads tracepoint formats there.

    Minimal hosts and containers often have /sys/kernel/tracing empty.
    """
    if (TRACEFS / "events").is_dir():
        return
    log.info("tracefs is not mounted; mounting it at %s", TRACEFS)
    result = subprocess.run(
        ["mount", "-t", "tracefs", "tracefs", str(TRACEFS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"tracefs is not mounted at {TRACEFS} and mounting it failed: "
            f"{result.stderr.strip()}; mount it (mount -t tracefs tracefs {TRACEFS}) "
            "or give the sidecar CAP_SYS_ADMIN"
        )


def _headers_dir(release: str) -> str:
    build = Path("/lib/modules") / release / "build"
    if build.exists():
        return os.path.realpath(build)
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return "/sys/kernel/kheaders.tar.xz"
    return ""


def detect() -> KernelInfo:
    from bcc import BPF

    release = platform.release()
    return KernelInfo(
        release=release,
        btf=BTF_VMLINUX.exists(),
        raw_tracepoints=bool(BPF.support_raw_tracepoint()),
        perf_events=Path("/proc/sys/kernel/perf_event_paranoid").exists(),
        kprobes=(TRACEFS / "kprobe_events").exists(),
        headers=_headers_dir(release),
    )
