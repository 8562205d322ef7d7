"""Key decoders: turn raw map key columns into attribute values.

Each decoder takes a whole column (a list of raw values, ints or bytes) and
returns a column of the same length, so chains run once per column, and each
decoder caches what it resolves where resolving is costly. A value a decoder
cannot resolve becomes its documented failure value; it never raises.

A manifest names a decoder either by name (``decoders: [string]``) or, for a
decoder that takes options, as a one-key mapping of its name to its options
(``decoders: [{regexp: {pattern: "^nginx", action: keep}}]``). Options are
validated when the manifest loads; a bad option is an error that names it.

A decoder may also filter: it returns ``DROP`` for an entry, and the whole
entry (every key and value column of the map snapshot) is left out. Later
decoders of the chain never see dropped entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

Column = Sequence[Any]


class _Drop:
    """The marker a filtering decoder returns for an entry to leave out."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()


@dataclass(frozen=True)
class Decoder:
    name: str
    # The wire type of what the decoder returns; None for a filter that
    # passes values through unchanged (the type stays the input's).
    output: pb.FieldType | None
    decode: Callable[[Column], list[Any]]
    failure: str  # what an undecodable value becomes, documented per decoder
    # How Describe shows this decoder: its name, plus its options when it has any.
    label: str = ""

    @property
    def spec(self) -> str:
        return self.label or self.name


class OptionError(ValueError):
    """A decoder option is invalid; ``option`` names it (e.g. ``map``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class DecoderSpecError(ValueError):
    """A manifest's decoder entry is invalid; the message starts with what is wrong."""


# A factory builds a decoder from its validated options; it raises OptionError.
Factory = Callable[[Mapping[str, Any]], Decoder]

_REGISTRY: dict[str, Decoder] = {}
_FACTORIES: dict[str, Factory] = {}


def register(decoder: Decoder) -> Decoder:
    _REGISTRY[decoder.name] = decoder
    return decoder


def register_factory(name: str, factory: Factory) -> Factory:
    """Register a decoder that takes options (a manifest writes ``{name: {...}}``)."""
    _FACTORIES[name] = factory
    return factory


def get(name: str) -> Decoder:
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_FACTORIES))


def resolve(entry: Any) -> Decoder:
    """A manifest decoder entry (a name, or ``{name: {options}}``) to a decoder."""
    if isinstance(entry, str):
        if entry in _REGISTRY:
            return _REGISTRY[entry]
        if entry in _FACTORIES:
            raise DecoderSpecError(
                f"decoder {entry!r} needs options; write it as {{{entry}: {{...}}}}"
            )
        raise DecoderSpecError(f"unknown decoder {entry!r}; known: {', '.join(names())}")
    if isinstance(entry, Mapping) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        name = str(name)
        if name not in _FACTORIES:
            if name in _REGISTRY:
                raise DecoderSpecError(f"decoder {name!r} takes no options; write it as {name}")
            raise DecoderSpecError(f"unknown decoder {name!r}; known: {', '.join(names())}")
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise DecoderSpecError(f"{name}: options must be a mapping, not {options!r}")
        try:
            decoder = _FACTORIES[name](options)
        except OptionError as e:
            raise DecoderSpecError(f"{name}.{e}") from None
        label = f"{name}{json.dumps(options, sort_keys=True, separators=(',', ':'), default=str)}"
        return Decoder(decoder.name, decoder.output, decoder.decode, decoder.failure, label)
    raise DecoderSpecError(
        f"{entry!r} is neither a decoder name nor a one-key mapping {{name: {{options}}}}"
    )


def check_options(options: Mapping[str, Any], known: Sequence[str]) -> None:
    """Reject option names a factory does not know (typos must not pass silently)."""
    for key in options:
        if key not in known:
            raise OptionError(str(key), f"unknown option; valid options: {', '.join(known)}")


def output_type(chain: Sequence[Decoder], raw: pb.FieldType) -> pb.FieldType:
    """The wire type after ``chain`` runs on values of wire type ``raw``."""
    t = raw
    for d in chain:
        if d.output is not None:
            t = d.output
    return t


def apply(chain: Sequence[str | Decoder], column: Column) -> list[Any]:
    """Run ``chain`` on a column; entries a filter dropped stay ``DROP``."""
    out = list(column)
    for entry in chain:
        decoder = entry if isinstance(entry, Decoder) else _REGISTRY[entry]
        live = [i for i, v in enumerate(out) if v is not DROP]
        if len(live) == len(out):
            out = decoder.decode(out)
            continue
        decoded = decoder.decode([out[i] for i in live])
        for i, v in zip(live, decoded, strict=True):
            out[i] = v
    return out


def _register_all() -> None:
    """Import every module of this package: importing one registers its decoders."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_all()
