from __future__ import annotations

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def test_net_direction_names_and_failure_value() -> None:
    assert decoders.apply(["net_direction"], [0, 1, 7]) == ["transmit", "receive", "unknown:7"]
    assert decoders.get("net_direction").output == pb.FIELD_TYPE_STRING
    assert decoders.get("net_direction").failure == "unknown:<n>"
