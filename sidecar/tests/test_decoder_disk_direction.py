from __future__ import annotations

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def test_disk_direction_names_reads_writes_and_other() -> None:
    assert decoders.apply(["disk_direction"], [0, 1, 2, 255, 1]) == [
        "read",
        "write",
        "other",
        "other",
        "write",
    ]
    assert decoders.get("disk_direction").output == pb.FIELD_TYPE_STRING
    assert decoders.get("disk_direction").failure == "other"
