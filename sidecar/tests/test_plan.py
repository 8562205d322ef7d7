"""The judge of stream requests (Plan, and Stream before it loads anything)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator
from pathlib import Path

import grpc
import pytest

from ebpf_sidecar import describe_fixture
from ebpf_sidecar.catalog import Catalog, RequestError
from ebpf_sidecar.plan import MIN_INTERVAL_S, WantedMap, plan
from ebpf_sidecar.programs import ProgramManager
from ebpf_sidecar.server import SidecarService, serve
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc


def test_map_request_options_are_kept(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="cpu")],
        maps=[
            pb.MapRequest(program="cpu", map="process_cpu", clear_after_read=True),
            pb.MapRequest(program="cpu", map="cpu_usage", per_cpu=True),
        ],
    )
    judged = plan(catalog, req)
    assert judged.errors == []
    assert judged.maps == [
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
        plan(catalog, req).raise_errors()


def test_every_problem_is_reported_with_its_path(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[
            pb.ProgramRequest(name="syscalls", parameters={"max_entries": "7", "bogus": "1"}),
            pb.ProgramRequest(name="nope"),
            pb.ProgramRequest(name="syscalls"),
            pb.ProgramRequest(name="block", parameters={"max_series": "many"}),
        ],
        maps=[
            pb.MapRequest(program="cpu", map="cpu_usage"),
            pb.MapRequest(program="block", map="disk_io_nope"),
        ],
    )
    req.interval.FromMilliseconds(10)
    errors = dict(plan(catalog, req).errors)
    assert errors.pop("interval") == "0.01s is below the minimum 0.1s; use at least 0.1s"
    assert errors.pop("programs[0].parameters.max_entries") == "7 is out of range; use 128..65536"
    assert errors.pop("programs[0].parameters.bogus").startswith("unknown parameter 'bogus'")
    assert errors.pop("programs[1].name").startswith("unknown program 'nope'; valid programs:")
    assert errors.pop("programs[2].name") == (
        "program 'syscalls' is also requested as programs[0]; request each program once"
    )
    assert errors.pop("programs[3].parameters.max_series").startswith(
        "'many' is not an integer; use a whole number in"
    )
    assert errors.pop("maps[0].program").startswith("'cpu' is not among the requested programs")
    assert errors.pop("maps[1].map").startswith("program 'block' has no map 'disk_io_nope'")
    assert errors == {}


def test_a_map_its_parameters_compile_out_is_refused(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="syscalls", parameters={"count_errors": "false"})],
        maps=[pb.MapRequest(program="syscalls", map="syscall_errors")],
    )
    assert plan(catalog, req).errors == [
        (
            "maps[0].map",
            "map syscalls/syscall_errors exists only when parameter 'count_errors' of program "
            "'syscalls' is true, and it is false; set that parameter to true",
        )
    ]


def test_planned_programs_show_values_and_the_maps_they_compile_in(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[
            pb.ProgramRequest(
                name="syscalls", parameters={"count_errors": "FALSE", "max_entries": "0x1000"}
            )
        ]
    )
    [planned] = plan(catalog, req).to_proto().programs
    assert dict(planned.parameters) == {"count_errors": "false", "max_entries": "4096"}
    assert [(m.name, m.max_entries) for m in planned.maps] == [("syscalls", 4096)]


def test_the_plan_rpc_answers_without_loading_anything(
    programs: ProgramManager, tmp_path: Path
) -> None:
    service = SidecarService(programs.catalog, programs, describe_fixture.FIXTURE_KERNEL)
    listen = f"unix://{tmp_path / 'sidecar.sock'}"
    server = serve(service, listen, None)
    try:
        with grpc.insecure_channel(listen) as channel:
            stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
            req = pb.StreamRequest(programs=[pb.ProgramRequest(name="oom", parameters={"x": "1"})])
            [error] = stub.Plan(req, timeout=10).errors
            assert error.field == "programs[0].parameters.x"
            assert error.message.startswith("unknown parameter 'x'; valid parameters:")
            ok = stub.Plan(pb.StreamRequest(programs=[pb.ProgramRequest(name="oom")]), timeout=10)
            assert not ok.errors and [p.name for p in ok.programs] == ["oom"]
            assert programs.loaded() == []
            # the floor Plan applies is the one Describe announces
            described = stub.Describe(pb.DescribeRequest(), timeout=10).min_interval
            assert described.ToNanoseconds() == round(MIN_INTERVAL_S * 1e9)
    finally:
        server.stop(grace=None).wait()


@pytest.mark.parametrize("seconds", [10**10, 315_576_000_000])  # the last: Duration's maximum
def test_an_interval_above_a_day_is_refused_not_overflowed(catalog: Catalog, seconds: int) -> None:
    req = pb.StreamRequest()
    req.interval.seconds = seconds
    assert plan(catalog, req).errors == [
        ("interval", f"{seconds:g}s is above the maximum 86400s (a day); use at most 86400s")
    ]
    req.interval.FromSeconds(86400)
    assert plan(catalog, req).errors == []


def test_missed_reads_are_skipped_not_caught_up() -> None:
    from ebpf_sidecar.server import next_read

    assert next_read(10.0, 1.0, 10.2) == 11.0  # on schedule
    # a client held the stream for 5 intervals: the next read is one
    # interval from now, not five reads back to back
    assert next_read(10.0, 1.0, 15.5) == 16.5


class _Context:
    """The part of grpc.ServicerContext that Stream uses, for a direct call."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def peer(self) -> str:
        return "test"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"{code}: {details}")


def test_a_stream_held_back_by_a_slow_client_does_not_burst(programs: ProgramManager) -> None:
    import time

    service = SidecarService(programs.catalog, programs, describe_fixture.FIXTURE_KERNEL)
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="oom")],
        maps=[pb.MapRequest(program="oom", map="oom_kills")],
    )
    req.interval.FromMilliseconds(200)
    context = _Context()
    stream = service.Stream(req, context)  # type: ignore[arg-type]
    assert isinstance(stream, Generator)
    try:
        next(stream)
        time.sleep(1.0)  # a client that did not read for five intervals
        times = [next(stream).time_unix_nano for _ in range(4)]
    finally:
        for callback in context.callbacks:
            callback()
        stream.close()
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    # the first read after the pause comes at once; none after it is early
    assert all(gap >= 0.15 for gap in gaps), gaps
