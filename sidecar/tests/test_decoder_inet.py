from __future__ import annotations

import socket

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def mapped(v4: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + socket.inet_aton(v4)


def test_ipv4_bytes_in_network_order() -> None:
    assert decoders.apply(["inet"], [bytes([127, 0, 0, 77]), b"\xc0\xa8\x01\x02"]) == [
        "127.0.0.77",
        "192.168.1.2",
    ]


def test_ipv4_mapped_ipv6_is_shown_as_ipv4() -> None:
    assert decoders.apply(["inet"], [mapped("127.0.0.77"), mapped("0.0.0.0")]) == [
        "127.0.0.77",
        "0.0.0.0",
    ]


def test_ipv6_in_rfc5952_form() -> None:
    col = [socket.inet_pton(socket.AF_INET6, a) for a in ("::1", "2001:db8:0:0:0:0:0:1", "::")]
    assert decoders.apply(["inet"], col) == ["::1", "2001:db8::1", "::"]


def test_ipv4_compatible_and_other_ffff_prefixes_stay_ipv6() -> None:
    # only ::ffff:0:0/96 is IPv4-mapped; ::ffff:0:a.b.c.d (SIIT) is not
    siit = b"\0" * 8 + b"\xff\xff\0\0" + bytes([10, 0, 0, 1])
    assert decoders.apply(["inet"], [siit]) == ["::ffff:0:a00:1"]


def test_other_lengths_become_the_failure_value() -> None:
    assert decoders.apply(["inet"], [b"", b"\x01\x02\x03"]) == ["unknown:", "unknown:010203"]
    assert decoders.get("inet").failure == "unknown:<hex>"


def test_accepts_bytearrays_and_keeps_column_length() -> None:
    col = [bytearray(mapped("10.1.2.3"))] * 3
    assert decoders.apply(["inet"], col) == ["10.1.2.3"] * 3
    assert decoders.get("inet").output == pb.FIELD_TYPE_STRING


def test_an_ipv4_address_kept_in_a_u32_decodes_without_allocating_its_value() -> None:
    import socket
    import struct
    import sys

    from ebpf_sidecar.decoders.inet import decode_inet

    # 10.0.3.7 as a u32 field reads it on this host: network-order bytes in memory
    as_u32 = struct.unpack("=I", socket.inet_aton("10.0.3.7"))[0]
    # bytes(n) of the value would have allocated gigabytes
    assert decode_inet([as_u32, 2**40]) == [
        "10.0.3.7",
        "unknown:" + (2**40).to_bytes(8, sys.byteorder).hex(),
    ]
