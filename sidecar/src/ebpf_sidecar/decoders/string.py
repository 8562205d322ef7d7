"""``string``: a NUL-terminated C string (e.g. a task's 16-byte comm) to text.

Bytes after the first NUL are ignored; invalid UTF-8 is replaced with U+FFFD
(the failure value), so a garbled name never drops a series. A number (a
manifest that puts ``string`` on an integer field) is shown in decimal:
``bytes(n)`` would allocate n bytes.
"""

from __future__ import annotations

from functools import lru_cache

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


@lru_cache(maxsize=65536)
def c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def decode_string(column: Column) -> list[str]:
    return [str(v) if isinstance(v, int) else c_string(bytes(v)) for v in column]


STRING = Decoder("string", pb.FIELD_TYPE_STRING, decode_string, failure="U+FFFD for invalid bytes")
