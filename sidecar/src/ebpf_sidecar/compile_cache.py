"""Compiled instances kept on disk, so that a restart loads them without a compiler.

Compiling one program with BCC takes 0.3-0.9 s of CPU (clang parsing the
kernel headers, then LLVM); loading what it produced takes milliseconds. A
loader (:mod:`ebpf_sidecar.loader`) that compiled an instance records here
what it handed the kernel: each hook's instructions as BCC loaded them, the
maps they use (type, sizes, flags, name, as the kernel reports them for the
map fds the instructions hold), the license, and the layout it pinned. A
later start of the sidecar on the same kernel (the entry holds
``/proc/version``, which names the build) recreates the maps, puts their new
fds into the instructions, loads the programs (the verifier checks them as
it checked the compiled ones), attaches them as BPF links and pins it all as
the loader would have, with no BCC, clang or LLVM in any process.

An entry is named by the instance key (source, headers, parameters, flags,
BCC version: :func:`ebpf_sidecar.programs.instance_key`); anything that does
not load as recorded is removed and the program compiled again. The folder
holds code that is loaded into the kernel as root: it must be root's and
writable by nobody else, like the catalog (checked at start).
"""

from __future__ import annotations

import base64
import ctypes as ct
import json
import logging
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from ebpf_sidecar import cost, kernel, pins

log = logging.getLogger(__name__)

FORMAT = 1
_LD_IMM64 = 0x18
_PSEUDO_MAP_FD = 1
_PROG_TYPES = {"tracepoint": 5, "raw_tracepoint": 17}  # enum bpf_prog_type
_OBJ_NAME_LEN = 16


class CacheMiss(Exception):
    """No usable entry: compile."""


class _MapInfo(ct.Structure):  # the head of struct bpf_map_info
    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("name", ct.c_char * _OBJ_NAME_LEN),
        ("_rest", ct.c_uint8 * 64),
    ]


class _MapCreateOpts(ct.Structure):  # struct bpf_map_create_opts (libbpf 1.x)
    _fields_ = [
        ("sz", ct.c_size_t),
        ("btf_fd", ct.c_uint32),
        ("btf_key_type_id", ct.c_uint32),
        ("btf_value_type_id", ct.c_uint32),
        ("btf_vmlinux_value_type_id", ct.c_uint32),
        ("inner_map_fd", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("map_extra", ct.c_uint64),
        ("numa_node", ct.c_uint32),
        ("map_ifindex", ct.c_uint32),
    ]


def _libbpf() -> ct.CDLL:
    from ebpf_sidecar import libbpf

    so: ct.CDLL = libbpf.lib.so
    return so


def _kernel_build() -> str:
    return Path("/proc/version").read_text().strip()


def _map_fds(insns: bytes) -> set[int]:
    """The map fds the instructions load (BPF_LD_IMM64 with BPF_PSEUDO_MAP_FD)."""
    fds = set()
    for i in range(0, len(insns) - 8, 8):
        code, regs, _, imm = struct.unpack_from("<BBhi", insns, i)
        if code == _LD_IMM64 and regs >> 4 == _PSEUDO_MAP_FD:
            fds.add(imm)
    return fds


def _map_info(so: ct.CDLL, fd: int) -> dict[str, Any]:
    info = _MapInfo()
    size = ct.c_uint32(ct.sizeof(info))
    if so.bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)) != 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD on map fd {fd}: {os.strerror(err)}")
    return {
        "type": info.type,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "flags": info.map_flags,
        "name": info.name.decode(),
    }


def entry_path(folder: Path, instance: str) -> Path:
    return folder / f"{instance}.json"


def record(folder: Path, instance: str, bpf: Any, named: dict[str, int], layout: Any) -> None:
    """Store what a loader loaded for ``instance`` (in the loader, with BCC loaded).

    ``named``: the fd of each map and ring buffer the layout pins, by its pin name.
    """
    from bcc.libbcc import lib

    so = _libbpf()
    hooks = []
    fds = set(named.values())
    for kind, target, _ in bpf.hooks:
        if kind == "tracepoint":
            fn = b"tracepoint__" + target.replace(":", "__").encode()
        else:
            fn = b"raw_tracepoint__" + target.encode()
        insns = ct.string_at(
            lib.bpf_function_start(bpf.module, fn), lib.bpf_function_size(bpf.module, fn)
        )
        fds |= _map_fds(insns)
        hooks.append(
            {
                "kind": kind,
                "target": target,
                "name": fn.decode(),
                "insns": base64.b64encode(insns).decode(),
            }
        )
    entry = {
        "format": FORMAT,
        "kernel": _kernel_build(),
        "license": lib.bpf_module_license(bpf.module).decode(),
        "hooks": hooks,
        "maps": {str(fd): _map_info(so, fd) for fd in sorted(fds)},
        "named": {name: str(fd) for name, fd in named.items()},
        "layout": layout,
    }
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(entry, f)
    os.replace(f.name, entry_path(folder, instance))


def load(folder: Path, instance: str, pin_dir: pins.PinDir) -> float:
    """Load, attach and pin ``instance`` from its entry; the seconds it took.

    CacheMiss when there is no entry for this kernel, or it does not load
    (then it is removed, and nothing stays loaded or pinned).
    """
    path = entry_path(folder, instance)
    started = time.monotonic()
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheMiss from None
    except (OSError, ValueError) as e:
        _discard(path, f"unreadable: {e}")
        raise CacheMiss from None
    if entry.get("format") != FORMAT or entry.get("kernel") != _kernel_build():
        _discard(path, "recorded for another kernel or format")
        raise CacheMiss
    so = _libbpf()
    opened: list[int] = []
    try:
        new: dict[str, int] = {}
        for old, m in entry["maps"].items():
            opts = _MapCreateOpts(sz=ct.sizeof(_MapCreateOpts), map_flags=m["flags"])
            fd = so.bpf_map_create(
                m["type"],
                m["name"].encode(),
                m["key_size"],
                m["value_size"],
                m["max_entries"],
                ct.byref(opts),
            )
            if fd < 0:
                raise OSError(-fd, f"creating map {m['name']}: {os.strerror(-fd)}")
            opened.append(fd)
            new[old] = fd
        links = []
        progs: dict[str, int] = {}  # by hook, for their run-time statistics
        license = entry["license"].encode()
        for hook in entry["hooks"]:
            insns = bytearray(base64.b64decode(hook["insns"]))
            for i in range(0, len(insns) - 8, 8):
                code, regs, _, imm = struct.unpack_from("<BBhi", insns, i)
                if code == _LD_IMM64 and regs >> 4 == _PSEUDO_MAP_FD:
                    struct.pack_into("<i", insns, i + 4, new[str(imm)])
            buf = ct.create_string_buffer(bytes(insns), len(insns))
            prog = so.bpf_prog_load(
                _PROG_TYPES[hook["kind"]],
                hook["name"].encode()[: _OBJ_NAME_LEN - 1],
                license,
                buf,
                len(insns) // 8,
                None,
            )
            if prog < 0:
                raise OSError(-prog, f"loading {hook['name']}: {os.strerror(-prog)}")
            opened.append(prog)
            progs[cost.hook_of(hook["name"])] = prog
            if hook["kind"] == "tracepoint":
                category, event = hook["target"].split(":")
                links.append(pins.link_tracepoint(prog, category, event, kernel.tracefs()))
            else:
                link = so.bpf_raw_tracepoint_open(hook["target"].encode(), prog)
                if link < 0:
                    raise OSError(-link, f"attaching {hook['target']}: {os.strerror(-link)}")
                links.append(link)
            opened.append(links[-1])
        layout = entry["layout"]
        pin_dir.create(time.time_ns(), layout)
        try:
            for name, old in entry["named"].items():
                pin_dir.pin(new[old], name)
            for i, fd in enumerate(links):
                pin_dir.pin(fd, f"link_{i}")
            for i, hook_name in enumerate(layout.get("progs", [])):
                pin_dir.pin(progs[hook_name], f"prog_{i}")
        except BaseException:
            pin_dir.remove()
            raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        _discard(path, str(e))
        raise CacheMiss from None
    finally:
        for fd in opened:  # what is pinned stays; the rest goes
            os.close(fd)
    return time.monotonic() - started


def _discard(path: Path, why: str) -> None:
    log.warning("compile cache entry %s is not used (%s): compiling", path.name, why)
    path.unlink(missing_ok=True)
