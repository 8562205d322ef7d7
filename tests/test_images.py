"""The sidecar image's start (scripts/sidecar-entrypoint.sh -> setup.sh headers),
exercised here since no Docker engine is: it links kernel headers for the
running kernel -- the node's own (mounted at HOST_ROOT) when the node has them,
the image's generic ones otherwise -- and installs nothing.

MODULES_DIR stands in for the container's /lib/modules (an emptyDir in the
chart), a temporary folder for the node's root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import REPO

RELEASE = os.uname().release


def link_headers(host: Path, modules: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOST_ROOT": str(host), "MODULES_DIR": str(modules)}
    return subprocess.run(
        [str(REPO / "scripts" / "setup.sh"), "headers"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def test_the_nodes_own_headers_are_linked_when_it_has_them(tmp_path: Path) -> None:
    host, modules = tmp_path / "host", tmp_path / "modules"
    # The node's layout: /lib/modules/<release>/build -> /usr/src/linux-headers-<release>
    src = host / "usr" / "src" / f"linux-headers-{RELEASE}"
    (src / "include").mkdir(parents=True)
    (host / "lib" / "modules" / RELEASE).mkdir(parents=True)
    (host / "lib" / "modules" / RELEASE / "build").symlink_to(f"/usr/src/linux-headers-{RELEASE}")
    r = link_headers(host, modules)
    assert (modules / RELEASE / "build").resolve() == src.resolve(), r.stderr
    assert "the node's headers" in r.stderr


def test_the_images_headers_are_linked_when_the_node_has_none(tmp_path: Path) -> None:
    host, modules = tmp_path / "host", tmp_path / "modules"
    (host / "lib" / "modules").mkdir(parents=True)
    r = link_headers(host, modules)
    build = (modules / RELEASE / "build").resolve()
    # Debian's generic headers, installed in the image (setup.sh system)
    assert build.parent == Path("/usr/src") and build.name.startswith("linux-headers-"), r.stderr
    assert (build / "include").is_dir()
    assert (modules / RELEASE / "source").resolve().name.endswith("-common")


def test_the_entrypoint_only_links_headers_then_starts_the_sidecar() -> None:
    script = (REPO / "scripts" / "sidecar-entrypoint.sh").read_text()
    commands = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-2:] == [
        "HOST_ROOT=${HOST_ROOT:-/host} scripts/setup.sh headers",
        'exec .venv/bin/python -m ebpf_sidecar --catalog bpf "$@"',
    ]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["scripts/sidecar-entrypoint.sh"]' in dockerfile
