"""``syscall``: a syscall number to its name for this machine's architecture.

BCC's own table (bcc/syscall.py) is the source; a number it does not know becomes
``unknown:<n>`` so the series stays distinct and visible.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


@lru_cache(maxsize=1)
def _table() -> dict[int, bytes]:
    """bcc/syscall.py's table, run as a file of its own: importing it as
    ``bcc.syscall`` would import the bcc package, which loads libbcc and with
    it LLVM into the sidecar (tens of MiB) for a table of names."""
    spec = importlib.util.find_spec("bcc")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        return {}
    module_spec = importlib.util.spec_from_file_location(
        "ebpf_sidecar.decoders._bcc_syscall", Path(folders[0]) / "syscall.py"
    )
    if module_spec is None or module_spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    table: dict[int, bytes] = module.syscalls
    return table


@lru_cache(maxsize=1024)
def syscall_name(number: int) -> str:
    name = _table().get(number)
    return name.decode() if name is not None else f"unknown:{number}"


def decode_syscall(column: Column) -> list[str]:
    return [syscall_name(int(v)) for v in column]


SYSCALL = Decoder("syscall", pb.FIELD_TYPE_STRING, decode_syscall, failure="unknown:<n>")
