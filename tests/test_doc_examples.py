"""Every `ebpf` receiver the docs show starts against the real sidecar.

The receiver's Go tests bind these examples to a Describe fixture generated
from bpf/; here each one goes through the real collector, the real
sidecar's Describe and its judge (Plan), so a parameter or map the catalog
does not have stops the test as it would stop a user's collector.

Examples run against a sidecar of the test's own, so their endpoints are
rewritten: a plain one to that sidecar's unix socket, one with TLS (a CA
set, or `insecure: false`) to a sidecar serving mutual TLS on 127.0.0.1,
with the example's certificate paths (which exist only on a user's
machine) replaced by certificates made here. The example's other TLS
settings stay as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    REPO,
    Pki,
    free_port,
    pipeline_config,
    start_collector,
    start_sidecar,
    start_tcp_sidecar,
    wait_started,
)

DOCS = [
    REPO / "README.md",
    REPO / "receiver-go" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_examples() -> list[tuple[str, str, dict[str, Any]]]:
    """(where, receiver id, receiver config) of every ebpf receiver in a YAML block.

    A receiver the block puts in a profiles pipeline, or configures for one
    (a ``profiles_...`` key), is marked with ``PROFILES``: the test adds a
    profiles pipeline for it."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in FENCE.finditer(text):
            try:
                parsed = yaml.safe_load(block.group(1))
            except yaml.YAMLError:
                continue  # a fragment, not a config (the Go test says which are expected)
            receivers = parsed.get("receivers") if isinstance(parsed, dict) else None
            if not isinstance(receivers, dict):
                continue
            line = text[: block.start()].count("\n") + 1
            pipelines = (parsed.get("service") or {}).get("pipelines") or {}
            for rid, rcfg in receivers.items():
                if rid == "ebpf" or rid.startswith("ebpf/"):
                    where = f"{doc.relative_to(REPO)}:{line}"
                    receiver = dict(rcfg or {})
                    in_profiles = any(
                        name.split("/")[0] == "profiles" and rid in (p or {}).get("receivers", [])
                        for name, p in pipelines.items()
                    )
                    if in_profiles or any(k.startswith("profiles_") for k in receiver):
                        receiver[PROFILES] = True
                    found.append((where, rid, receiver))
    return found


# Marks a receiver example that needs a profiles pipeline (not a receiver key).
PROFILES = "__profiles_pipeline"
EXAMPLES = doc_examples()


def test_the_docs_show_receiver_examples() -> None:
    files = {where.split(":")[0] for where, _, _ in EXAMPLES}
    assert {"README.md", "receiver-go/README.md"} <= files, files


@pytest.fixture(scope="module")
def docs_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One sidecar for every example, with the own-program example's folder
    (docs/own-programs.md starts it with --programs-dir)."""
    tmp = tmp_path_factory.mktemp("docs-sidecar")
    sock = tmp / "sidecar.sock"
    own = REPO / "examples" / "programs"
    sidecar = start_sidecar(sock, tmp / "sidecar.log", "--programs-dir", str(own))
    yield sock
    sidecar.stop()


@pytest.fixture(scope="module")
def docs_tls_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    """A sidecar serving mutual TLS on loopback, for the examples with TLS."""
    tmp = tmp_path_factory.mktemp("docs-tls-sidecar")
    pki = Pki(tmp / "pki")
    address = f"127.0.0.1:{free_port()}"
    sidecar = start_tcp_sidecar(address, tmp / "sidecar.log", *pki.sidecar_flags())
    yield address, pki
    sidecar.stop()


def uses_tls(receiver: dict[str, Any]) -> bool:
    """Whether configgrpc dials TLS: insecure off, or a CA set (insecure defaults to true)."""
    tls = receiver.get("tls") or {}
    return tls.get("insecure") is False or bool(tls.get("ca_file") or tls.get("ca_pem"))


def test_the_docs_show_a_mutual_tls_example() -> None:
    assert any(uses_tls(r) for _, _, r in EXAMPLES), "no example shows the receiver's tls"


@pytest.mark.parametrize(
    ("where", "rid", "receiver"), EXAMPLES, ids=[f"{w} {r}" for w, r, _ in EXAMPLES]
)
def test_doc_example_starts_against_the_sidecar(
    where: str,
    rid: str,
    receiver: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    if uses_tls(receiver):
        address, pki = request.getfixturevalue("docs_tls_sidecar")
        tls = {**receiver["tls"], **pki.receiver_tls()}
        receiver = {**receiver, "endpoint": address, "tls": tls}
    else:
        sock = request.getfixturevalue("docs_sidecar")
        receiver = {**receiver, "endpoint": f"unix://{sock}"}
    profiles = receiver.pop(PROFILES, False)
    cfg = pipeline_config(receiver, free_port())
    if profiles:
        # the collector's feature gate comes with it (conftest.start_collector)
        cfg["exporters"]["debug"] = {"verbosity": "basic"}
        cfg["service"]["pipelines"]["profiles"] = {"receivers": ["ebpf"], "exporters": ["debug"]}
    col = start_collector(cfg, tmp_path)
    try:
        wait_started(col, f"{where} ({rid})")
        assert "Connected to the eBPF sidecar" in col.output()
    finally:
        col.stop()
