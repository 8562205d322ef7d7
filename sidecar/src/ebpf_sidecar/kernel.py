"""What the running kernel offers, and the mounts BCC needs."""

from __future__ import annotations

import functools
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


class TracefsUnavailable(RuntimeError):
    """tracefs is not mounted and cannot be mounted: tracepoint formats are unknown."""


def tracefs() -> Path:
    """The tracefs mount, mounted here first if it is missing.

    Everything that reads tracefs (BCC attaching TRACEPOINT_PROBEs, the
    tracepoint field defines, kprobe detection) comes through here, so
    nothing depends on an earlier process having mounted it: a fresh host or
    container has /sys/kernel/tracing empty. A missing mount that cannot be
    made is an error naming the fix, never an empty list of fields.
    """
    if (TRACEFS / "events").is_dir():
        return TRACEFS
    log.info("tracefs is not mounted; mounting it at %s", TRACEFS)
    result = subprocess.run(
        ["mount", "-t", "tracefs", "tracefs", str(TRACEFS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not (TRACEFS / "events").is_dir():
        # mount(8) explains over several lines; one line keeps log records whole
        why = " ".join(result.stderr.split()) or f"{TRACEFS}/events is still missing"
        raise TracefsUnavailable(
            f"tracefs is not mounted at {TRACEFS} and mounting it failed ({why}); "
            f"mount it before starting the sidecar (mount -t tracefs tracefs {TRACEFS}, "
            "or in Kubernetes a hostPath volume of /sys/kernel/tracing) or give the "
            "sidecar CAP_SYS_ADMIN so it can mount it itself"
        )
    return TRACEFS


def tracepoint_fields(category: str, event: str) -> list[str]:
    """Field names of a tracepoint's format on the running kernel.

    ``[]`` means this kernel has no such tracepoint; tracefs missing is
    :class:`TracefsUnavailable`, not ``[]``.
    """
    events = tracefs() / "events"
    path = events / category / event / "format"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise TracefsUnavailable(
            f"cannot read the format of tracepoint {category}:{event}: {e}"
        ) from e
    fields = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("field:") or "common_" in line.split(";")[0]:
            continue
        decl = line.split(";")[0][len("field:") :].strip()
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


@functools.cache
def btf_member_offset(struct: str, member: str) -> int | None:
    """Byte offset of ``struct.member`` in the running kernel's BTF, or None.

    Programs never trust the offsets of the headers BCC compiles against
    (they may be another kernel's); the offsets they need come from here.
    """
    if not BTF_VMLINUX.exists():
        return None
    proc = subprocess.Popen(
        ["bpftool", "btf", "dump", "file", str(BTF_VMLINUX)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    header = f"STRUCT '{struct}' "
    inside = False
    try:
        for line in proc.stdout:
            if not inside:
                inside = header in line
                continue
            if not line.startswith("\t"):
                return None  # the struct ended without the member
            name, _, rest = line.strip().partition(" ")
            if name == f"'{member}'":
                bits = int(rest.split("bits_offset=")[1].split()[0])
                return bits // 8
        return None
    finally:
        proc.kill()
        proc.wait()


def btf_defines(offsets: list[str]) -> list[str]:
    """-D flags with the BTF offsets a manifest asks for (``struct.member``)."""
    flags = []
    for spec in offsets:
        struct, _, member = spec.partition(".")
        offset = btf_member_offset(struct, member)
        if offset is not None:
            flags.append(f"-DBTF_OFFSET_{struct.upper()}_{member.upper()}={offset}")
    return flags


def _headers_dir(release: str) -> str:
    build = Path("/lib/modules") / release / "build"
    if build.exists():
        return os.path.realpath(build)
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return "/sys/kernel/kheaders.tar.xz"
    return ""


def _has_ksym(*names: str, kallsyms: Path = Path("/proc/kallsyms")) -> bool:
    """Whether the kernel has any of these symbols (names are whole words there)."""
    wanted = {n.encode() for n in names}
    with kallsyms.open("rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in wanted:
                return True
    return False


def detect() -> KernelInfo:
    release = platform.release()
    return KernelInfo(
        release=release,
        btf=BTF_VMLINUX.exists(),
        # what BCC's BPF.support_raw_tracepoint() looks for, without loading
        # BCC (and LLVM with it) into the sidecar's address space
        raw_tracepoints=_has_ksym("bpf_find_raw_tracepoint", "bpf_get_raw_tracepoint"),
        perf_events=Path("/proc/sys/kernel/perf_event_paranoid").exists(),
        kprobes=(tracefs() / "kprobe_events").exists(),
        headers=_headers_dir(release),
    )
