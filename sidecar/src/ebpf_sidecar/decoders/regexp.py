"""``regexp``: keep or drop map entries by matching a (decoded) key value.

::

    decoders: [string, {regexp: {pattern: "^nginx", action: keep}}]

Options: ``pattern`` (required, Python ``re`` syntax, matched with
``re.search`` against the value's text; integers match on their decimal
form, bytes on their text up to the first NUL). ``action``: ``keep``
(default) keeps only matching entries; ``drop`` drops matching entries. A
dropped entry is left out of every column of the map snapshot, so no metric
sees it. Values pass through unchanged; there is no failure value (a value
that cannot be read as text is dropped by ``keep`` and kept by ``drop``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ebpf_sidecar.decoders.base import (
    DROP,
    Column,
    Decoder,
    OptionError,
    check_options,
)


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray):
        return bytes(v).split(b"\0", 1)[0].decode("utf-8", errors="replace")
    if isinstance(v, int):
        return str(v)
    return None


def regexp(options: Mapping[str, Any]) -> Decoder:
    check_options(options, ("pattern", "action"))
    if "pattern" not in options:
        raise OptionError("pattern", "missing; give a regular expression, e.g. '^nginx'")
    pattern = options["pattern"]
    if not isinstance(pattern, str):
        raise OptionError("pattern", f"{pattern!r} is not a string")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise OptionError(
            "pattern", f"{pattern!r} is not a valid regular expression: {e}"
        ) from None
    action = options.get("action", "keep")
    if action not in ("keep", "drop"):
        raise OptionError("action", f"{action!r} is not keep or drop")
    keep = action == "keep"

    def decode(column: Column) -> list[Any]:
        out: list[Any] = []
        for v in column:
            text = _text(v)
            matched = text is not None and compiled.search(text) is not None
            out.append(v if matched == keep else DROP)
        return out

    return Decoder("regexp", None, decode, failure="(filter: none)")
