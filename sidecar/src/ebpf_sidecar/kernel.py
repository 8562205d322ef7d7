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


def tracepoint_fields(category: str, event: str) -> list[str]:
    """Field names of a tracepoint's format on the running kernel ([] if absent)."""
    path = TRACEFS / "events" / category / event / "format"
    try:
        text = path.read_text()
    except OSError:
        return []
    fields = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("field:") or "common_" in line.split(";")[0]:
            continue
        decl = line.split(";")[0][len("field:"):].strip()
        name = decl.split()[-1].split("[")[0]
        fields.append(name)
    return fields


def tracepoint_defines(hooks: list[str]) -> list[str]:
    """-D flags telling a program which fields its tracepoints have here.

    Tracepoint formats change between kernels (tcp_retransmit_skb gained
    ``err`` in 6.x); a program can test ``#ifdef TP_<EVENT>_HAS_<FIELD>``
    instead of failing to compile where a field is missing.
    """
    flags = []
    for hook in hooks:
        kind, _, rest = hook.partition(":")
        if kind != "tracepoint":
            continue
        category, _, event = rest.partition(":")
        for field in tracepoint_fields(category, event):
            flags.append(f"-DTP_{event.upper()}_HAS_{field.upper()}=1")
    return flags


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
