from __future__ import annotations

import pkgutil

import pytest

from ebpf_sidecar import decoders
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def test_chain_runs_in_order() -> None:
    assert decoders.apply(["uint", "errno"], [13]) == ["EACCES"]


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("string", pb.FIELD_TYPE_STRING),
        ("syscall", pb.FIELD_TYPE_STRING),
        ("errno", pb.FIELD_TYPE_STRING),
        ("uint", pb.FIELD_TYPE_UINT),
    ],
)
def test_output_types(name: str, output: int) -> None:
    assert decoders.get(name).output == output


def test_every_module_holds_the_decoder_it_is_named_after() -> None:
    # The package lists its decoders explicitly; a module left off the list
    # (or a decoder named unlike its file) fails here.
    modules = {m.name for m in pkgutil.iter_modules(decoders.__path__)}
    assert modules - {"base", "_pid_files"} == set(decoders.names())


def test_string_on_an_integer_field_is_its_decimal_text() -> None:
    from ebpf_sidecar.decoders.string import decode_string

    assert decode_string([2**40, b"nginx\0\0"]) == ["1099511627776", "nginx"]
