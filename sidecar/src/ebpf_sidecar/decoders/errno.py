"""``errno``: a positive errno number to its symbolic name (``EAGAIN``).

Python's errno table is the machine's libc table; a number it lacks becomes
``E<n>`` (the failure value).
"""

from __future__ import annotations

import errno

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def errno_name(number: int) -> str:
    return errno.errorcode.get(number, f"E{number}")


def decode_errno(column: Column) -> list[str]:
    return [errno_name(int(v)) for v in column]


ERRNO = Decoder("errno", pb.FIELD_TYPE_STRING, decode_errno, failure="E<n>")
