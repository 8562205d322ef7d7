from __future__ import annotations

import pytest

from ebpf_sidecar.catalog import Catalog, RequestError
from ebpf_sidecar.kernel import KernelInfo
from ebpf_sidecar.programs import ProgramManager
from ebpf_sidecar.server import SidecarService, WantedMap
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def _service(catalog: Catalog) -> SidecarService:
    return SidecarService(catalog, ProgramManager(catalog), KernelInfo.__new__(KernelInfo))


def test_map_request_options_are_kept(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="cpu")],
        maps=[
            pb.MapRequest(program="cpu", map="process_cpu", clear_after_read=True),
            pb.MapRequest(program="cpu", map="cpu_usage", per_cpu=True),
        ],
    )
    assert _service(catalog)._validate(req) == [
        WantedMap("cpu", "process_cpu", clear=True, per_cpu=False),
        WantedMap("cpu", "cpu_usage", clear=False, per_cpu=True),
    ]


def test_a_map_requested_twice_is_refused(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="cpu")],
        maps=[
            pb.MapRequest(program="cpu", map="cpu_usage"),
            pb.MapRequest(program="cpu", map="cpu_usage", clear_after_read=True),
        ],
    )
    with pytest.raises(RequestError, match=r"maps\[1\]: map 'cpu_usage' of 'cpu' is requested"):
        _service(catalog)._validate(req)
