from __future__ import annotations

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def test_bytes_in_memory_order_and_ints_with_prefix() -> None:
    assert decoders.apply(["hex"], [b"\x0a\xff", 255, 0, -5, b""]) == [
        "0aff",
        "0xff",
        "0x0",
        "-0x5",
        "",
    ]


def test_failure_value_is_empty() -> None:
    assert decoders.apply(["hex"], [None, "x", 1.5]) == ["", "", ""]
    assert decoders.get("hex").failure == '""'
    assert decoders.get("hex").output == pb.FIELD_TYPE_STRING
