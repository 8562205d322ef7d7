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

Each module of this package holds the decoder it is named after; the lists
below are every decoder there is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ebpf_sidecar.decoders import (
    cgroup,
    container_id,
    disk_direction,
    errno,
    hex,
    inet,
    ksym,
    majorminor,
    net_direction,
    pid,
    pid_cgroup,
    pod_uid,
    regexp,
    signal,
    static_map,
    string,
    syscall,
    uint,
)
from ebpf_sidecar.decoders.base import (
    DROP,
    Column,
    Decoder,
    DecoderSpecError,
    Factory,
    OptionError,
    check_options,
)
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

__all__ = [
    "DROP",
    "Column",
    "Decoder",
    "DecoderSpecError",
    "OptionError",
    "apply",
    "check_options",
    "get",
    "names",
    "output_type",
    "resolve",
]

# Decoders a manifest names without options.
_DECODERS: Final[dict[str, Decoder]] = {
    d.name: d
    for d in (
        uint.UINT,
        string.STRING,
        hex.HEX,
        errno.ERRNO,
        signal.SIGNAL,
        syscall.SYSCALL,
        majorminor.MAJORMINOR,
        inet.INET,
        ksym.KSYM,
        disk_direction.DISK_DIRECTION,
        net_direction.NET_DIRECTION,
        pid.PID,
        pid_cgroup.PID_CGROUP,
        cgroup.CGROUP,
        container_id.CONTAINER_ID,
        pod_uid.POD_UID,
    )
}

# Decoders built from options: ``{name: {options}}``.
_FACTORIES: Final[dict[str, Factory]] = {
    "static_map": static_map.static_map,
    "regexp": regexp.regexp,
}


def get(name: str) -> Decoder:
    return _DECODERS[name]


def names() -> list[str]:
    return sorted(set(_DECODERS) | set(_FACTORIES))


def resolve(entry: Any) -> Decoder:
    """A manifest decoder entry (a name, or ``{name: {options}}``) to a decoder."""
    if isinstance(entry, str):
        if entry in _DECODERS:
            return _DECODERS[entry]
        if entry in _FACTORIES:
            raise DecoderSpecError(
                f"decoder {entry!r} needs options; write it as {{{entry}: {{...}}}}"
            )
        raise DecoderSpecError(f"unknown decoder {entry!r}; known: {', '.join(names())}")
    if isinstance(entry, Mapping) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        name = str(name)
        if name not in _FACTORIES:
            if name in _DECODERS:
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
        decoder = entry if isinstance(entry, Decoder) else _DECODERS[entry]
        live = [i for i, v in enumerate(out) if v is not DROP]
        if len(live) == len(out):
            out = _decode(decoder, out)
            continue
        decoded = _decode(decoder, [out[i] for i in live])
        for i, v in zip(live, decoded, strict=True):
            out[i] = v
    return out


def _decode(decoder: Decoder, column: Column) -> list[Any]:
    """``decoder`` on a column, never raising: what it cannot decode becomes
    its failure value, entry by entry, and the rest of the column decodes.

    A value of a kind a decoder is not made for (an own program's manifest
    that puts ``errno`` on a ``char[16]`` field) would otherwise fail the
    whole map read. Only a column that raised pays for the retry.
    """
    try:
        return decoder.decode(column)
    except Exception:
        out: list[Any] = []
        for value in column:
            try:
                out.extend(decoder.decode([value]))
            except Exception:
                out.append(decoder.failure)
        return out
