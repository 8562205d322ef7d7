"""``uint``: the value as it is (a no-op that documents intent in a chain)."""

from __future__ import annotations

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def decode_uint(column: Column) -> list[int]:
    return [int(v) for v in column]


UINT = Decoder("uint", pb.FIELD_TYPE_UINT, decode_uint, failure="(never fails)")
