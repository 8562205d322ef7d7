from __future__ import annotations

import os
from pathlib import Path

import pytest

from ebpf_sidecar.catalog import Catalog
from ebpf_sidecar.manifest import load_catalog

REPO = Path(__file__).resolve().parents[2]
CATALOG_DIR = REPO / "bpf"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog([CATALOG_DIR])


@pytest.fixture
def needs_root() -> None:
    # Tests that load BPF programs fail (never skip) without privileges: a
    # skipped BPF test would pass CI without testing anything.
    assert os.geteuid() == 0, "this test loads BPF programs: run it as root"
