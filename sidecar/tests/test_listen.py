"""Where the sidecar listens: mutual TLS on TCP, plaintext only on loopback."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme

from ebpf_sidecar import describe_fixture, listen
from ebpf_sidecar.programs import ProgramManager
from ebpf_sidecar.server import SidecarService, serve
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

ALL = list(listen.TLS_FLAGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "address", ["127.0.0.1:7700", "127.1.2.3:7700", "[::1]:7700", "unix:///run/x/sidecar.sock"]
)
def test_loopback_and_unix_sockets_are_served_without_tls(address: str) -> None:
    assert listen.check(address, []) is False


@pytest.mark.parametrize("address", ["0.0.0.0:7700", "127.0.0.1:7700", "node-1.example:7700"])
def test_tcp_with_all_three_tls_flags_is_served_with_tls(address: str) -> None:
    assert listen.check(address, ALL) is True


@pytest.mark.parametrize(
    ("address", "given", "says"),
    [
        ("0.0.0.0:7700", [], "every address of the host"),
        ("[::]:7700", [], "every address of the host"),
        ("10.0.0.5:7700", [], "set --tls-cert, --tls-key and --tls-client-ca"),
        ("localhost:7700", [], "or listen on 127.0.0.1:7700"),
        ("10.0.0.5:7700", ["--tls-cert"], "without --tls-key, --tls-client-ca"),
        ("127.0.0.1:7700", ["--tls-cert", "--tls-key"], "without --tls-client-ca"),
        ("unix:///run/x/sidecar.sock", ["--tls-cert"], "guarded by its file mode"),
        ("unix:relative.sock", [], "only unix:///absolute/path"),
        ("unix://relative.sock", [], "must be absolute"),
        ("unix-abstract:sidecar", [], "only unix:///absolute/path"),
        ("127.0.0.1", [], "not an address the sidecar serves"),
        ("127.0.0.1:http", [], "is not a port"),
        ("127.0.0.1:0", [], "is not a port"),
    ],
)
def test_exposed_or_half_configured_listeners_are_refused(
    address: str, given: list[str], says: str
) -> None:
    with pytest.raises(listen.ListenError, match=re.escape(says)):
        listen.check(address, given)


class Pki:
    """A CA with a server certificate for 127.0.0.1 and a client certificate."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1")
        client = self.ca.issue_cert("otel-collector")
        self.files = listen.TlsFiles(
            folder / "server.pem", folder / "server.key", folder / "ca.pem"
        )
        server.cert_chain_pems[0].write_to_path(str(self.files.cert))
        server.private_key_pem.write_to_path(str(self.files.key))
        os.chmod(str(self.files.key), 0o600)
        self.ca.cert_pem.write_to_path(str(self.files.client_ca))
        self.client_cert = client.cert_chain_pems[0].bytes()
        self.client_key = client.private_key_pem.bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_a_key_readable_by_others_is_refused_with_the_chmod(pki: Pki) -> None:
    assert pki.files.key is not None
    os.chmod(pki.files.key, 0o640)
    with pytest.raises(listen.ListenError, match=r"mode 0640.*chmod 600"):
        listen.load(pki.files)


def test_a_key_of_another_owner_is_refused(pki: Pki) -> None:
    assert pki.files.key is not None
    os.chown(pki.files.key, 65534, -1)
    with pytest.raises(listen.ListenError, match="owned by uid 65534"):
        listen.load(pki.files)


def test_a_key_that_is_not_the_certificates_is_refused(pki: Pki, tmp_path: Path) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    assert pki.files.key is not None
    other.private_key_pem.write_to_path(str(pki.files.key))
    with pytest.raises(listen.ListenError, match="the key it was issued for"):
        listen.load(pki.files)


def test_missing_and_non_pem_files_are_refused_by_flag(pki: Pki, tmp_path: Path) -> None:
    missing = listen.TlsFiles(tmp_path / "nope.pem", pki.files.key, pki.files.client_ca)
    with pytest.raises(listen.ListenError, match=r"--tls-cert .*nope\.pem: cannot be read"):
        listen.load(missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(listen.ListenError, match=r"--tls-client-ca .*no PEM CA certificate"):
        listen.load(listen.TlsFiles(pki.files.cert, pki.files.key, junk))


def test_serve_refuses_plaintext_beyond_loopback(programs: ProgramManager) -> None:
    service = SidecarService(programs.catalog, programs, describe_fixture.FIXTURE_KERNEL)
    with pytest.raises(listen.ListenError, match="every address of the host"):
        serve(service, f"0.0.0.0:{_free_port()}")


@pytest.fixture
def tls_server(pki: Pki, programs: ProgramManager) -> Iterator[str]:
    service = SidecarService(programs.catalog, programs, describe_fixture.FIXTURE_KERNEL)
    address = f"127.0.0.1:{_free_port()}"
    server = serve(service, address, tls=listen.load(pki.files))
    yield address
    server.stop(grace=None).wait()


def _describe(address: str, creds: grpc.ChannelCredentials) -> pb.DescribeResponse:
    with grpc.secure_channel(address, creds) as channel:
        stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
        response: pb.DescribeResponse = stub.Describe(pb.DescribeRequest(), timeout=10)
        return response


def test_a_client_with_a_certificate_of_the_client_ca_is_served(tls_server: str, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem.bytes(),
        private_key=pki.client_key,
        certificate_chain=pki.client_cert,
    )
    assert _describe(tls_server, creds).programs


def test_clients_without_a_certificate_of_the_client_ca_are_refused(
    tls_server: str, pki: Pki
) -> None:
    root = pki.ca.cert_pem.bytes()
    stranger = trustme.CA().issue_cert("otel-collector")
    for creds in [
        grpc.ssl_channel_credentials(root_certificates=root),  # no certificate
        grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=stranger.private_key_pem.bytes(),
            certificate_chain=stranger.cert_chain_pems[0].bytes(),
        ),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            _describe(tls_server, creds)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls_server) as channel, pytest.raises(grpc.RpcError) as e:
        pb_grpc.SidecarStub(channel).Describe(pb.DescribeRequest(), timeout=10)  # type: ignore[no-untyped-call]
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
