from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebpf_sidecar.catalog import Catalog
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager

# Fails the session when a test leaves a namespace, loop device, cgroup,
# mount or BPF program behind.
pytest_plugins = ["machine_state"]

REPO = Path(__file__).resolve().parents[2]
CATALOG_DIR = REPO / "bpf"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog([CATALOG_DIR])


@pytest.fixture
def programs(catalog: Catalog) -> Iterator[ProgramManager]:
    """A program manager whose programs are all detached at teardown, also
    when the test fails half-way."""
    manager = ProgramManager(catalog)
    yield manager
    manager.close()


@pytest.fixture
def needs_root() -> None:
    # Tests that load BPF programs fail (never skip) without privileges: a
    # skipped BPF test would pass CI without testing anything.
    assert os.geteuid() == 0, "this test loads BPF programs: run it as root"
