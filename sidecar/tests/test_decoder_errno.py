from __future__ import annotations

from ebpf_sidecar import decoders


def test_errno_names_and_failure_value() -> None:
    assert decoders.apply(["errno"], [2, 11, 4242]) == ["ENOENT", "EAGAIN", "E4242"]
