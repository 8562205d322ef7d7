from __future__ import annotations

from ebpf_sidecar import decoders


def test_string_stops_at_nul_and_replaces_bad_utf8() -> None:
    col = [b"bash\0\0\0garbage", b"x" * 16, b"\xff\xfeok\0", b"\0"]
    assert decoders.apply(["string"], col) == ["bash", "x" * 16, "\ufffd\ufffdok", ""]
