from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from ebpf_sidecar.catalog import Catalog
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager

# Fails the session when a test leaves a namespace, loop device, cgroup,
# mount or BPF program behind.
pytest_plugins = ["machine_state"]

# Property-based fuzzing: a bounded run in make test, more in make fuzz
# (HYPOTHESIS_PROFILE=long). No deadline: BPF loads and the first read of a
# map take their time.
settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

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
