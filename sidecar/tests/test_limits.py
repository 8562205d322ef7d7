"""Limits a client can hit: stream slots and program instances, with clear errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ebpf_sidecar import describe_fixture
from ebpf_sidecar.catalog import Catalog
from ebpf_sidecar.programs import InstanceLimit, ProgramManager
from ebpf_sidecar.server import SidecarService, serve
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

pytestmark = pytest.mark.usefixtures("needs_root")


def _oom_request(**parameters: str) -> pb.StreamRequest:
    # oom's hook fires only on an OOM kill: idle streams cost nothing.
    request = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="oom", parameters=parameters)],
        maps=[pb.MapRequest(program="oom", map="oom_kills")],
    )
    request.interval.FromSeconds(60)
    return request


@pytest.fixture
def sidecar(programs: ProgramManager, tmp_path: Path) -> Iterator[tuple[Any, ProgramManager]]:
    """A served sidecar (8 stream slots) and a client stub."""
    service = SidecarService(programs.catalog, programs, describe_fixture.FIXTURE_KERNEL, 8)
    listen = f"unix://{tmp_path / 'sidecar.sock'}"
    server = serve(service, listen)
    channel = grpc.insecure_channel(listen)
    try:
        yield pb_grpc.SidecarStub(channel), programs  # type: ignore[no-untyped-call]
    finally:
        channel.close()
        server.stop(grace=None).wait()


def test_streams_beyond_the_cap_are_refused_and_unary_calls_still_answer(
    sidecar: tuple[Any, ProgramManager],
) -> None:
    stub, programs = sidecar
    opened: list[Any] = []
    refused: list[grpc.RpcError] = []
    try:
        # 17 streams: twice the 8 slots, plus the one that hung on the old
        # 16-thread pool
        for _ in range(17):
            call = stub.Stream(_oom_request(), timeout=30)
            try:
                next(call)  # the first snapshot comes at once
            except grpc.RpcError as e:
                refused.append(e)
            else:
                opened.append(call)
        assert len(opened) == 8
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "8 streams are open, the most this sidecar serves (--max-streams 8)" in (
            refused[0].details() or ""
        )
        assert len(programs.loaded()) == 1, "the open streams share one instance"
        # every slot taken: Describe and Plan still answer
        assert stub.Describe(pb.DescribeRequest(), timeout=5).programs
        assert not stub.Plan(_oom_request(), timeout=5).errors
        # a closed stream frees its slot, once the server's thread has seen
        # the cancellation (asynchronously, so the new stream may need a retry)
        opened.pop().cancel()
        deadline = time.monotonic() + 10
        while True:
            call = stub.Stream(_oom_request(), timeout=30)
            try:
                first = next(call)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "the cancelled stream's slot was never freed"
                time.sleep(0.05)
                continue
            opened.append(call)
            break
        assert first.maps[0].map == "oom_kills"
    finally:
        for call in opened:
            call.cancel()


def test_a_program_instance_beyond_the_cap_is_refused(
    sidecar: tuple[Any, ProgramManager],
) -> None:
    stub, programs = sidecar
    programs.max_instances = 2
    opened = []
    try:
        for size in ("16", "32"):
            call = stub.Stream(_oom_request(max_entries=size), timeout=60)
            next(call)
            opened.append(call)
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.Stream(_oom_request(max_entries="64"), timeout=60))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (refused.value.details() or "").startswith(
            "program 'oom' has 2 loaded instances, the most the sidecar allows "
            "(--max-instances-per-program 2)"
        )
        assert "max_entries=16; max_entries=32" in (refused.value.details() or "")
        # a parameter set already loaded is shared, not a new instance
        call = stub.Stream(_oom_request(max_entries="16"), timeout=60)
        next(call)
        opened.append(call)
        assert len(programs.loaded()) == 2
    finally:
        for call in opened:
            call.cancel()


def test_the_instance_cap_counts_loaded_instances_only(catalog: Catalog) -> None:
    mgr = ProgramManager(catalog, max_instances=1)
    try:
        first = mgr.acquire("oom", {"max_entries": "16"})
        with pytest.raises(InstanceLimit):
            mgr.acquire("oom", {}, exclusive=True)  # a clearing stream's own instance
        mgr.release(first)
        mgr.release(mgr.acquire("oom", {}))  # room again once it is detached
    finally:
        mgr.close()
