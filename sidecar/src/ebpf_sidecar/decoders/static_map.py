"""Fixed tables from small integers to names, one decoder per table.

A BPF program that classifies events into a few kinds stores a small integer
(cheap to compute and to key on) and one of these decoders names it. A number
outside the table becomes the table's documented failure value.

``disk_direction``: ``0`` → ``read``, ``1`` → ``write``, anything else →
``other`` (the failure value). The ``block`` program computes the number from
the tracepoint's rwbs string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ebpf_sidecar.decoders import Column, Decoder, register
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def table_decoder(table: Mapping[int, str], failure: str) -> Callable[[Column], list[str]]:
    frozen = dict(table)

    def decode(column: Column) -> list[str]:
        out = []
        for v in column:
            try:
                out.append(frozen.get(int(v), failure))
            except (TypeError, ValueError):
                out.append(failure)
        return out

    return decode


def register_table(name: str, table: Mapping[int, str], failure: str) -> Decoder:
    return register(
        Decoder(name, pb.FIELD_TYPE_STRING, table_decoder(table, failure), failure=failure)
    )


DISK_DIRECTION = register_table("disk_direction", {0: "read", 1: "write"}, failure="other")
