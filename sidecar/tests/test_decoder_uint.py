from __future__ import annotations

from ebpf_sidecar import decoders


def test_uint_is_identity() -> None:
    assert decoders.apply(["uint"], [0, 2**64 - 1]) == [0, 2**64 - 1]
