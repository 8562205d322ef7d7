from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format

from conftest import CATALOG_DIR, REPO
from ebpf_sidecar import describe_fixture
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.server import describe
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

OWN_PROGRAMS = REPO / "examples" / "programs"


def test_the_fixture_is_what_describe_serves_on_a_fixed_kernel(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "describe.json"
    assert (
        describe_fixture.main(
            [str(out), "--catalog", str(CATALOG_DIR), "--programs-dir", str(OWN_PROGRAMS)]
        )
        == 0
    )
    got = json_format.Parse(out.read_text(), pb.DescribeResponse())
    want = describe(load_catalog([CATALOG_DIR, OWN_PROGRAMS]), describe_fixture.FIXTURE_KERNEL)
    assert got == want
    assert got.kernel.release == "0.0.0-fixture"  # never the build machine's
    assert "exec_count" in [p.name for p in got.programs]
