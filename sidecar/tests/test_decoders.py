from __future__ import annotations

import pytest

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def test_string_stops_at_nul_and_replaces_bad_utf8() -> None:
    col = [b"bash\0\0\0garbage", b"x" * 16, b"\xff\xfeok\0", b"\0"]
    assert decoders.apply(["string"], col) == ["bash", "x" * 16, "\ufffd\ufffdok", ""]


def test_syscall_names_for_this_architecture() -> None:
    # x86_64 numbers: 0 read, 1 write, 110 getppid
    assert decoders.apply(["syscall"], [0, 1, 110]) == ["read", "write", "getppid"]


def test_unknown_syscall_keeps_its_number() -> None:
    assert decoders.apply(["syscall"], [99999]) == ["unknown:99999"]


def test_errno_names_and_failure_value() -> None:
    assert decoders.apply(["errno"], [2, 11, 4242]) == ["ENOENT", "EAGAIN", "E4242"]


def test_uint_is_identity() -> None:
    assert decoders.apply(["uint"], [0, 2**64 - 1]) == [0, 2**64 - 1]


def test_chain_runs_in_order() -> None:
    assert decoders.apply(["uint", "errno"], [13]) == ["EACCES"]


@pytest.mark.parametrize(
    ("name", "output"),
    [("string", pb.FIELD_TYPE_STRING), ("syscall", pb.FIELD_TYPE_STRING),
     ("errno", pb.FIELD_TYPE_STRING), ("uint", pb.FIELD_TYPE_UINT)],
)
def test_output_types(name: str, output: int) -> None:
    assert decoders.get(name).output == output
