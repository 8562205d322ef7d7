"""``disk_direction``: a block request's direction, ``0`` → ``read``, ``1`` → ``write``.

Anything else becomes ``other`` (the failure value). The ``block`` program
computes the number from the tracepoint's rwbs string.
"""

from __future__ import annotations

from ebpf_sidecar.decoders.static_map import named_table

DISK_DIRECTION = named_table("disk_direction", {0: "read", 1: "write"}, default="other")
