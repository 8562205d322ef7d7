"""What the running kernel offers, and the mounts BCC needs."""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
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
    instead of failing to compile where a field is missing. A raw tracepoint
    gets the fields of the classic event of the same name (found in any
    category): its arguments are that event's prototype, which gains an
    argument in the same kernel release as the field it fills.
    """
    flags = []
    for hook in hooks:
        kind, _, rest = hook.partition(":")
        if kind == "tracepoint":
            category, _, event = rest.partition(":")
        elif kind == "raw_tracepoint":
            event = rest
            found = sorted(tracefs().glob(f"events/*/{event}/format"))
            if len(found) != 1:
                continue  # no classic event of that name, or an ambiguous one
            category = found[0].parent.parent.name
        else:
            continue
        for field in tracepoint_fields(category, event):
            flags.append(f"-DTP_{event.upper()}_HAS_{field.upper()}=1")
    return flags


_BTF_TYPE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'")
_BTF_MEMBER = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)")
_BTF_ENUMERATOR = re.compile(r"^\t'([^']*)' val=(-?\d+)")

# members of a struct or union: (name, type id, bit offset); "(anon)" for an
# anonymous struct or union member, whose own members are reached through it
_Members = list[tuple[str, int, int]]


@functools.cache
def _btf_scan(
    structs: frozenset[str], enumerators: frozenset[str]
) -> tuple[dict[str, _Members], dict[int, _Members], dict[str, int]]:
    """One pass over the running kernel's BTF for what programs ask of it.

    The members of the named ``structs``, the anonymous structs and unions
    (which hold members like sock_common's skc_daddr), and the values of the
    ``enumerators`` (e.g. __REQ_FUA of enum req_flag_bits). The pass stops as
    soon as everything asked for is found.
    """
    named: dict[str, _Members] = {}
    anonymous: dict[int, _Members] = {}
    values: dict[str, int] = {}
    if not BTF_VMLINUX.exists():
        return named, anonymous, values
    proc = subprocess.Popen(
        ["bpftool", "btf", "dump", "file", str(BTF_VMLINUX)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None

    def done() -> bool:
        if len(named) < len(structs) or len(values) < len(enumerators):
            return False
        needed = [t for ms in named.values() for n, t, _ in ms if n == "(anon)"]
        while needed:
            type_id = needed.pop()
            if type_id not in anonymous:
                return False
            needed += [t for n, t, _ in anonymous[type_id] if n == "(anon)"]
        return True

    members: _Members | None = None
    enum = False
    try:
        for line in proc.stdout:
            if not line.startswith("\t"):
                members, enum = None, False
                header = _BTF_TYPE.match(line)
                if not header:
                    continue
                kind, name = header[2], header[3]
                if kind in ("STRUCT", "UNION") and name == "(anon)":
                    members = anonymous.setdefault(int(header[1]), [])
                elif kind == "STRUCT" and name in structs and name not in named:
                    members = named.setdefault(name, [])
                elif kind in ("ENUM", "ENUM64") and enumerators:
                    enum = True
                elif done():
                    break
                continue
            if members is not None and (m := _BTF_MEMBER.match(line)):
                members.append((m[1], int(m[2]), int(m[3])))
            elif enum and (e := _BTF_ENUMERATOR.match(line)) and e[1] in enumerators:
                values[e[1]] = int(e[2])
        return named, anonymous, values
    finally:
        proc.kill()
        proc.wait()


def _find_member(
    members: _Members, member: str, anonymous: dict[int, _Members], depth: int = 0
) -> int | None:
    """Bit offset of ``member`` among ``members`` or inside their anonymous ones."""
    for name, _, bits in members:
        if name == member:
            return bits
    for name, type_id, bits in members:
        if name == "(anon)" and type_id in anonymous and depth < 8:
            inner = _find_member(anonymous[type_id], member, anonymous, depth + 1)
            if inner is not None:
                return bits + inner
    return None


def btf_member_offset(struct: str, member: str) -> int | None:
    """Byte offset of ``struct.member`` in the running kernel's BTF, or None.

    Programs never trust the offsets of the headers BCC compiles against
    (they may be another kernel's); the offsets they need come from here.
    A member of an anonymous struct or union inside ``struct`` counts as
    its own (sock_common.skc_daddr).
    """
    return _btf_offsets((f"{struct}.{member}",)).get(f"{struct}.{member}")


def _btf_offsets(specs: tuple[str, ...]) -> dict[str, int]:
    named, anonymous, _ = _btf_scan(frozenset(s.partition(".")[0] for s in specs), frozenset())
    offsets = {}
    for spec in specs:
        struct, _, member = spec.partition(".")
        bits = _find_member(named.get(struct, []), member, anonymous)
        if bits is not None:
            offsets[spec] = bits // 8
    return offsets


def btf_enum_value(enumerator: str) -> int | None:
    """The value of an enumerator (e.g. ``__REQ_FUA``) in the running kernel's BTF, or None."""
    return _btf_scan(frozenset(), frozenset({enumerator}))[2].get(enumerator)


def btf_defines(offsets: list[str], enumerators: list[str] | None = None) -> list[str]:
    """-D flags with the BTF offsets (``struct.member``) and enumerator values a manifest asks for.

    ``-DBTF_OFFSET_<STRUCT>_<MEMBER>=<bytes>`` and ``-DBTF_ENUM_<NAME>=<value>``;
    what this kernel lacks is left undefined, for the program to test with #ifdef.
    """
    flags = []
    found = _btf_offsets(tuple(offsets))
    for spec in offsets:
        if spec in found:
            struct, _, member = spec.partition(".")
            flags.append(f"-DBTF_OFFSET_{struct.upper()}_{member.upper()}={found[spec]}")
    if enumerators:
        values = _btf_scan(frozenset(), frozenset(enumerators))[2]
        for name in enumerators:
            if name in values:
                flags.append(f"-DBTF_ENUM_{name.upper()}={values[name]}")
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
