"""Key decoders: turn raw map key columns into attribute values.

Each decoder takes a whole column (a list of raw values, ints or bytes) and
returns a column of the same length, so chains run once per column, and each
decoder caches what it resolves where resolving is costly. A value a decoder
cannot resolve becomes its documented failure value; it never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

Column = Sequence[Any]


@dataclass(frozen=True)
class Decoder:
    name: str
    output: pb.FieldType
    decode: Callable[[Column], list[Any]]
    failure: str  # what an undecodable value becomes, documented per decoder


_REGISTRY: dict[str, Decoder] = {}


def register(decoder: Decoder) -> Decoder:
    _REGISTRY[decoder.name] = decoder
    return decoder


def get(name: str) -> Decoder:
    return _REGISTRY[name]


def exists(name: str) -> bool:
    return name in _REGISTRY


def names() -> list[str]:
    return sorted(_REGISTRY)


def apply(chain: Sequence[str], column: Column) -> list[Any]:
    out = list(column)
    for name in chain:
        out = _REGISTRY[name].decode(out)
    return out


def _register_all() -> None:
    """Import every module of this package: importing one registers its decoders."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_all()
