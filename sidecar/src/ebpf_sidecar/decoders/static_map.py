"""Fixed tables from small integers to names.

A BPF program that classifies events into a few kinds stores a small integer
(cheap to compute and to key on) and a table names it.

``static_map`` takes its table from the manifest::

    decoders: [{static_map: {map: {0: read, 1: write}, default: other}}]

Options: ``map`` (required): integer → name. ``default``: what a number
outside the table becomes (the failure value; default ``unknown:<n>``, the
number kept visible). ``drop_unknown`` (default false): when true, an entry
whose number is outside the table is dropped from the snapshot instead.

The option was called ``allow_unknown`` (true keeps, false drops), which
cloudflare/ebpf_exporter's static_map also has with another meaning: there
it keeps the number itself as the name (true) or writes ``unknown:<n>``
(false, the default), and never drops. A manifest using it gets an error
that says which option to use here.

``named_table`` makes a decoder of its own name from a fixed table, as the
catalog's ``disk_direction`` and ``net_direction`` are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ebpf_sidecar.decoders.base import (
    DROP,
    Column,
    Decoder,
    OptionError,
    check_options,
)
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def _number(key: Any) -> int:
    if isinstance(key, bool):
        raise ValueError
    if isinstance(key, int):
        return key
    return int(str(key), 0)


def static_map(options: Mapping[str, Any]) -> Decoder:
    if "allow_unknown" in options:
        raise OptionError(
            "allow_unknown",
            "not an option of this static_map (in ebpf_exporter it keeps unknown numbers as "
            "their own names); a number outside the map becomes `default` (unknown:<n> when "
            "unset), or set drop_unknown: true to drop its entries",
        )
    check_options(options, ("map", "drop_unknown", "default"))
    if "map" not in options:
        raise OptionError("map", "missing; give a mapping of integers to names, e.g. {0: read}")
    raw = options["map"]
    if not isinstance(raw, Mapping) or not raw:
        raise OptionError("map", f"must be a non-empty mapping of integers to names, not {raw!r}")
    table: dict[int, str] = {}
    for k, v in raw.items():
        try:
            number = _number(k)
        except ValueError:
            raise OptionError(f"map.{k}", f"key {k!r} is not an integer") from None
        if not isinstance(v, str | int | float) or isinstance(v, bool) or str(v) == "":
            raise OptionError(f"map.{k}", f"value {v!r} is not a non-empty name")
        table[number] = str(v)
    drop = options.get("drop_unknown", False)
    if not isinstance(drop, bool):
        raise OptionError("drop_unknown", f"{drop!r} is not true or false")
    default = options.get("default")
    if default is not None and not isinstance(default, str):
        raise OptionError("default", f"{default!r} is not a string")

    def unknown(v: Any) -> Any:
        if drop:
            return DROP
        return default if default is not None else f"unknown:{v}"

    def decode(column: Column) -> list[Any]:
        out: list[Any] = []
        for v in column:
            try:
                name = table.get(int(v))
            except (TypeError, ValueError):
                name = None
            out.append(name if name is not None else unknown(v))
        return out

    failure = "entry dropped" if drop else (default if default is not None else "unknown:<n>")
    return Decoder("static_map", pb.FIELD_TYPE_STRING, decode, failure=failure)


def named_table(name: str, table: Mapping[int, str], default: str | None = None) -> Decoder:
    """A decoder called ``name`` for a fixed table: ``static_map`` with these options."""
    options: dict[str, Any] = {"map": dict(table)}
    if default is not None:
        options["default"] = default
    d = static_map(options)
    return Decoder(name, d.output, d.decode, failure=d.failure)
