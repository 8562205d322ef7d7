"""``syscall``: a syscall number to its name for this machine's architecture.

BCC's own table (bcc.syscall) is the source; a number it does not know becomes
``unknown:<n>`` so the series stays distinct and visible.
"""

from __future__ import annotations

from functools import lru_cache

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


@lru_cache(maxsize=1024)
def syscall_name(number: int) -> str:
    from bcc.syscall import syscalls

    name = syscalls.get(number)
    return name.decode() if name is not None else f"unknown:{number}"


def decode_syscall(column: Column) -> list[str]:
    return [syscall_name(int(v)) for v in column]


SYSCALL = Decoder("syscall", pb.FIELD_TYPE_STRING, decode_syscall, failure="unknown:<n>")
