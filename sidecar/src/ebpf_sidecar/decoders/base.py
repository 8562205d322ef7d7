"""What every decoder is made of: the Decoder type, the DROP marker, option errors.

Decoder modules import from here, and the package's ``__init__`` lists them
all; keeping these types out of ``__init__`` lets it import every module
without a cycle.
"""

from __future__ import annotations

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


def check_options(options: Mapping[str, Any], known: Sequence[str]) -> None:
    """Reject option names a factory does not know (typos must not pass silently)."""
    for key in options:
        if key not in known:
            raise OptionError(str(key), f"unknown option; valid options: {', '.join(known)}")
