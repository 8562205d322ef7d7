"""``net_direction``: 0 → ``transmit``, 1 → ``receive`` (``network.io.direction``).

The values OpenTelemetry's semantic conventions define for
``network.io.direction``. Any other number becomes ``unknown:<n>`` (the
failure value).
"""

from __future__ import annotations

from ebpf_sidecar.decoders import Column, Decoder, register
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

_NAMES = ("transmit", "receive")


def direction_name(number: int) -> str:
    return _NAMES[number] if 0 <= number < len(_NAMES) else f"unknown:{number}"


def decode_direction(column: Column) -> list[str]:
    return [direction_name(int(v)) for v in column]


NET_DIRECTION = register(
    Decoder("net_direction", pb.FIELD_TYPE_STRING, decode_direction, failure="unknown:<n>")
)
