"""``net_direction``: ``0`` → ``transmit``, ``1`` → ``receive``.

The values of ``network.io.direction`` in OpenTelemetry's semantic
conventions. Anything else becomes ``unknown:<n>`` (the failure value).
"""

from __future__ import annotations

from ebpf_sidecar.decoders.static_map import named_table

NET_DIRECTION = named_table("net_direction", {0: "transmit", 1: "receive"})
