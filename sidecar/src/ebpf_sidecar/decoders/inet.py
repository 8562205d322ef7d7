"""``inet``: raw IPv4 (4 bytes) or IPv6 (16 bytes) addresses to text.

Addresses are in network byte order, as the kernel stores them. An
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, how BPF programs store IPv4
peers in a 16-byte key) is shown as plain IPv4, ``a.b.c.d``; other IPv6
addresses in RFC 5952 form (``::1``). A ``u32`` field holding an IPv4
address (``sk->__sk_common.skc_daddr``, a common way to keep one) decodes
too: its bytes in memory are the address in network order. A value of any
other length becomes ``unknown:<hex>`` (the failure value), so it stays
distinct and visible.
"""

from __future__ import annotations

import ipaddress
import sys
from functools import lru_cache

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


@lru_cache(maxsize=65536)
def inet_text(raw: bytes) -> str:
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        v6 = ipaddress.IPv6Address(raw)
        return str(v6.ipv4_mapped) if v6.ipv4_mapped is not None else str(v6)
    return f"unknown:{raw.hex()}"


def _raw(value: bytes | int) -> bytes:
    if isinstance(value, int):
        # the integer's bytes as they were in the map (host order), never
        # bytes(n), which would allocate n bytes
        size = 4 if 0 <= value < 2**32 else 8
        wrapped: int = value % (1 << (8 * size))
        return wrapped.to_bytes(size, sys.byteorder)
    return bytes(value)


def decode_inet(column: Column) -> list[str]:
    return [inet_text(_raw(v)) for v in column]


INET = Decoder("inet", pb.FIELD_TYPE_STRING, decode_inet, failure="unknown:<hex>")
