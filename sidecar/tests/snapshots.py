"""Reading the sidecar's map snapshots in tests."""

from __future__ import annotations

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def column_sum(snap: pb.MapSnapshot, value: str, **keys: str | int) -> int:
    """Value column ``value`` summed over the entries whose key columns
    equal ``keys`` (field=value; classic columns, not packed)."""
    columns = {c.field: c for c in [*snap.key_columns, *snap.value_columns]}

    def cells(field: str) -> list[str | int]:
        c = columns[field]
        return list(c.strings) or list(c.uints) or list(c.ints)

    values = cells(value)
    wanted = [(cells(field), v) for field, v in keys.items()]
    assert all(len(column) == len(values) for column, _ in wanted), "columns of unequal length"
    return sum(
        int(n) for row, n in enumerate(values) if all(column[row] == v for column, v in wanted)
    )
