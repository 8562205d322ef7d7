"""``hex``: bytes or an integer to hexadecimal text.

Bytes become their lowercase hex digits in memory order (``b"\\x0a\\xff"`` →
``0aff``), e.g. a hash or a raw address; integers become ``0x`` + lowercase
hex (``255`` → ``0xff``; negative ones ``-0x5``). Anything else becomes the
empty string (the failure value).
"""

from __future__ import annotations

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def hex_text(v: object) -> str:
    if isinstance(v, bytes | bytearray):
        return bytes(v).hex()
    if isinstance(v, int) and not isinstance(v, bool):
        return hex(v)
    return ""


def decode_hex(column: Column) -> list[str]:
    return [hex_text(v) for v in column]


HEX = Decoder("hex", pb.FIELD_TYPE_STRING, decode_hex, failure='""')
