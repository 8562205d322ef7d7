"""Property-based fuzzing of what the sidecar takes from outside.

Map keys the kernel hands over (decoders), manifests of own programs, and
stream requests from any client of the socket. `make test` runs a bounded
number of examples; `make fuzz` (HYPOTHESIS_PROFILE=long) many more. An
input that once failed is pinned with @example so that it is replayed by
every run.
"""

from __future__ import annotations

import copy
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import CATALOG_DIR
from ebpf_sidecar import decoders, describe_fixture
from ebpf_sidecar.catalog import CatalogError
from ebpf_sidecar.manifest import load_catalog, load_manifest
from ebpf_sidecar.programs import ProgramManager
from ebpf_sidecar.server import SidecarService, serve
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

U64 = st.integers(min_value=0, max_value=2**64 - 1)
RAW_VALUES = st.one_of(U64, st.binary(max_size=40))


def _takes_no_options(name: str) -> bool:
    try:
        decoders.resolve(name)
    except decoders.DecoderSpecError:
        return False  # static_map, regexp: built from options
    return True


@pytest.mark.parametrize("name", [n for n in decoders.names() if _takes_no_options(n)])
@given(column=st.lists(RAW_VALUES, max_size=20))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_decoders_never_raise_and_return_encodable_values(
    name: str, column: list[int | bytes]
) -> None:
    """Whatever a map key holds, a decoder returns one value per entry (or
    DROP), every string can go into a protobuf message, and memory stays
    small (``bytes(n)`` of a key value once allocated gigabytes)."""
    decoders.apply([name], [0, b""])  # caches filled once (ksym's symbol table) do not count
    tracemalloc.start()
    try:
        out = decoders.apply([name], column)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{name} allocated {peak} bytes for {len(column)} values"
    assert len(out) == len(column)
    for value in out:
        if isinstance(value, str):
            value.encode("utf-8")  # a lone surrogate would fail protobuf encoding
            pb.Column(strings=[value])


# --- manifests ----------------------------------------------------------------

OOM = CATALOG_DIR / "oom"
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Any:
    """The oom manifest with a few parts deleted or replaced by anything."""
    doc = copy.deepcopy(yaml.safe_load((OOM / "manifest.yaml").read_text()))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSONISH)
    return doc


@given(doc=mutated_manifests())
@example(doc={"name": "oom", "maps": [{"name": "m"}]})
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_property_a_broken_manifest_is_a_catalog_error_naming_where(
    doc: Any, tmp_path: Path
) -> None:
    program = tmp_path / "oom"
    program.mkdir(exist_ok=True)
    shutil.copy(OOM / "oom.c", program / "oom.c")
    manifest = program / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    try:
        load_manifest(manifest)
    except CatalogError as e:
        assert str(manifest) in str(e)


# --- stream requests against a live sidecar -----------------------------------

CATALOG = load_catalog([CATALOG_DIR])
NAMES = sorted(CATALOG.programs)
PARAMETERS = sorted({par for p in CATALOG.programs.values() for par in p.parameters})
MAPS = sorted({(p.name, m) for p in CATALOG.programs.values() for m in p.maps})
TEXT = st.text(max_size=12)


@st.composite
def stream_requests(draw: st.DrawFn) -> pb.StreamRequest:
    """Requests as any client could send them: mostly catalog words, some noise."""
    names = st.one_of(st.sampled_from(NAMES), TEXT)
    values = st.one_of(
        st.sampled_from(["true", "false", "0", "-1", "16", "4096", "1e9", "0x10", " "]), TEXT
    )
    req = pb.StreamRequest()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        params = draw(
            st.dictionaries(st.one_of(st.sampled_from(PARAMETERS), TEXT), values, max_size=3)
        )
        req.programs.add(name=draw(names), parameters=params)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        program, name = draw(st.one_of(st.sampled_from(MAPS), st.tuples(TEXT, TEXT)))
        req.maps.add(
            program=program,
            map=name,
            clear_after_read=draw(st.booleans()),
            per_cpu=draw(st.booleans()),
        )
    if draw(st.booleans()):
        req.interval.FromNanoseconds(draw(st.integers(min_value=-(10**12), max_value=10**12)))
    return req


@pytest.fixture(scope="module")
def live_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real sidecar service (real catalog, real BPF loads) on a Unix socket."""
    programs = ProgramManager(CATALOG)
    listen = f"unix://{tmp_path_factory.mktemp('fuzz') / 'sidecar.sock'}"
    server = serve(SidecarService(CATALOG, programs, describe_fixture.FIXTURE_KERNEL), listen, None)
    channel = grpc.insecure_channel(listen)
    try:
        yield pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
    finally:
        channel.close()
        server.stop(grace=None).wait()
        programs.close()


@pytest.mark.usefixtures("needs_root")
@given(req=stream_requests())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_property_plan_answers_every_request_with_field_paths(
    req: pb.StreamRequest, live_sidecar: Any
) -> None:
    plan = live_sidecar.Plan(req, timeout=10)
    for error in plan.errors:
        assert error.field.split("[")[0].split(".")[0] in ("programs", "maps", "interval"), error
        assert error.message


@pytest.mark.usefixtures("needs_root")
@given(req=stream_requests())
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    deadline=None,
    max_examples=8,
)
def test_property_stream_refuses_exactly_what_plan_refuses(
    req: pb.StreamRequest, live_sidecar: Any
) -> None:
    """Plan is Stream's judge: a request Plan finds problems in is refused
    with INVALID_ARGUMENT; one it accepts streams, or fails only for what
    compiling tells (FAILED_PRECONDITION) or a resource (RESOURCE_EXHAUSTED)."""
    plan = live_sidecar.Plan(req, timeout=10)
    if req.HasField("interval") and not plan.errors:
        req.interval.FromMilliseconds(200)  # keep an accepted stream quick
    stream = live_sidecar.Stream(req, timeout=60)
    try:
        first = next(stream)
        assert not plan.errors, f"Stream accepted a request Plan refused: {plan.errors}"
        assert first.sequence == 1
    except grpc.RpcError as e:
        code = e.code()
        details = e.details() or ""
        if plan.errors:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            # only compiling tells whether a map is per-CPU
            assert ".per_cpu: " in details and "is not a per-CPU map" in details, details
        else:
            allowed = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert code in allowed, (code, details)
    finally:
        stream.cancel()
