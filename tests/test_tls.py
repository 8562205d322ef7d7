"""The sidecar on TCP: mutual TLS, or plaintext on loopback only.

The real sidecar serves 127.0.0.1:<free port> with certificates made here
(trustme), and the real collector reaches it with its `tls` settings
(ca_file, cert_file, key_file) and exports metrics. Clients without a
certificate of the sidecar's client CA are refused at the handshake and
load nothing. Flag combinations that would expose the sidecar, or that do
not make a whole TLS setup, stop it at start with exit status 2 and a
message that says what to set.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme

from bpf_helpers import prog_ids_held_by
from conftest import (
    PYTHON,
    Pki,
    Process,
    free_port,
    pipeline_config,
    scrape,
    start_collector,
    start_tcp_sidecar,
    value,
    wait_for,
)
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_sidecar(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, str]]:
    """One sidecar serving mutual TLS on loopback, for the tests of this module."""
    tmp = tmp_path_factory.mktemp("tls-sidecar")
    address = f"127.0.0.1:{free_port()}"
    sidecar = start_tcp_sidecar(address, tmp / "sidecar.log", *pki.sidecar_flags())
    yield sidecar, address
    sidecar.stop()


def _syscalls_flow(receiver: dict[str, object], tmp_path: Path) -> None:
    """Start the collector with ``receiver`` and wait for ebpf.syscalls in Prometheus."""
    port = free_port()
    receiver = {"collection_interval": "1s", "programs": [{"name": "syscalls"}], **receiver}
    col = start_collector(pipeline_config(receiver, port), tmp_path)
    try:
        wait_for(
            f"ebpf_syscalls_total over {receiver['endpoint']}\n{tmp_path / 'collector.log'}",
            lambda: value(scrape(port), "ebpf_syscalls_total"),
            60,
        )
    finally:
        assert col.stop() == 0, col.output()


def test_metrics_flow_over_mutual_tls(
    tls_sidecar: tuple[Process, str], pki: Pki, tmp_path: Path
) -> None:
    _, address = tls_sidecar
    _syscalls_flow({"endpoint": address, "tls": pki.receiver_tls()}, tmp_path)


def _stream_syscalls(address: str, creds: grpc.ChannelCredentials | None) -> None:
    """Ask for the syscalls program as the receiver would; raises grpc.RpcError."""
    request = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="syscalls")],
        maps=[pb.MapRequest(program="syscalls", map="syscalls")],
    )
    request.interval.FromMilliseconds(500)
    channel = (
        grpc.insecure_channel(address) if creds is None else grpc.secure_channel(address, creds)
    )
    with channel:
        stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
        next(stub.Stream(request, timeout=15))


def test_clients_without_a_certificate_of_the_client_ca_are_refused_and_load_nothing(
    tls_sidecar: tuple[Process, str], pki: Pki
) -> None:
    sidecar, address = tls_sidecar
    root = pki.ca.cert_pem.bytes()
    stranger = trustme.CA().issue_cert("otel-collector")
    clients: dict[str, grpc.ChannelCredentials | None] = {
        "plaintext": None,
        "TLS without a client certificate": grpc.ssl_channel_credentials(root_certificates=root),
        "a client certificate of another CA": grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=stranger.private_key_pem.bytes(),
            certificate_chain=stranger.cert_chain_pems[0].bytes(),
        ),
    }
    for who, creds in clients.items():
        with pytest.raises(grpc.RpcError) as e:
            _stream_syscalls(address, creds)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (who, e.value)
    assert prog_ids_held_by(sidecar.proc.pid) == set(), "a refused client loaded a program"
    assert sidecar.alive(), sidecar.output()


def test_plaintext_on_loopback_still_works(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    sidecar = start_tcp_sidecar(address, tmp_path / "sidecar.log")
    try:
        _syscalls_flow({"endpoint": address}, tmp_path)
    finally:
        sidecar.stop()


def _refused(tmp_path: Path, *argv: str) -> str:
    """Start the sidecar with ``argv``; it must exit 2 at once. Returns its output."""
    log = tmp_path / "refused.log"
    p = Process("sidecar", [str(PYTHON), "-m", "ebpf_sidecar", *argv], log)
    try:
        p.proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    finally:
        rc = p.stop()
    out = p.output()
    assert rc == 2, f"exit status {rc}, not 2, for {argv}:\n{out}"
    return out


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("every address, no TLS", "set --tls-cert, --tls-key and --tls-client-ca"),
        ("another address, no TLS", "or listen on 127.0.0.1:"),
        ("a certificate without a key", "without --tls-key"),
        ("TLS on a unix socket", "a Unix socket is guarded by its file mode"),
        ("a key readable by others", "run chmod 600"),
        ("a key that is not the certificate's", "the key it was issued for"),
        ("a socket group on TCP", "means nothing on TCP"),
    ],
)
def test_exposed_or_half_configured_listeners_stop_the_sidecar(
    case: str, says: str, pki: Pki, tmp_path: Path
) -> None:
    port = free_port()
    flags = pki.sidecar_flags()
    key = tmp_path / "server.key"
    argv = {
        "every address, no TLS": ["--listen", f"0.0.0.0:{port}"],
        # an address of this host's that is not loopback would do as well: it
        # is refused before anything binds
        "another address, no TLS": ["--listen", f"192.0.2.1:{port}"],
        "a certificate without a key": ["--listen", f"127.0.0.1:{port}", *flags[:2]],
        "TLS on a unix socket": ["--listen", f"unix://{tmp_path / 'sidecar.sock'}", *flags],
        "a key readable by others": [
            "--listen",
            f"127.0.0.1:{port}",
            *("--tls-cert", str(pki.server_cert), "--tls-key", str(key)),
            *flags[4:],
        ],
        "a key that is not the certificate's": [
            "--listen",
            f"127.0.0.1:{port}",
            *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key)),
            *flags[4:],
        ],
        "a socket group on TCP": ["--listen", f"127.0.0.1:{port}", "--socket-group", "0"],
    }[case]
    key.write_bytes(pki.server_key.read_bytes())
    os.chmod(key, 0o644)
    out = _refused(tmp_path, *argv)
    assert says in out, out


def test_a_collector_without_a_client_certificate_is_refused_and_says_why(
    tls_sidecar: tuple[Process, str], pki: Pki, tmp_path: Path
) -> None:
    sidecar, address = tls_sidecar
    receiver = {
        "endpoint": address,
        "tls": {"ca_file": str(pki.ca_file)},  # verifies the sidecar, presents nothing
        "startup_timeout": "0s",
        "programs": [{"name": "syscalls"}],
    }
    col = start_collector(pipeline_config(receiver, free_port()), tmp_path)
    try:
        wait_for(
            f"the collector to report the refusal\n{tmp_path / 'collector.log'}",
            # gRPC says only "error reading server preface"; the receiver
            # adds which settings are missing
            lambda: "set tls.cert_file and tls.key_file" in col.output() or not col.alive(),
            30,
        )
        assert col.alive(), col.output()  # a recoverable status, not a dead collector
    finally:
        col.stop()
    assert prog_ids_held_by(sidecar.proc.pid) == set(), "a refused collector loaded a program"
