"""The Unix socket: its folder, its mode, and what it never removes or follows."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ebpf_sidecar import describe_fixture, unix_socket
from ebpf_sidecar.programs import ProgramManager
from ebpf_sidecar.server import SidecarService, serve
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

NOGROUP = 65534
NOBODY = 65534


@pytest.fixture
def service(programs: ProgramManager) -> SidecarService:
    return SidecarService(programs.catalog, programs, describe_fixture.FIXTURE_KERNEL)


@pytest.fixture
def servers() -> Iterator[list[grpc.Server]]:
    """Servers a test starts, stopped at teardown also when it fails."""
    started: list[grpc.Server] = []
    yield started
    for s in started:
        s.stop(grace=None).wait()


def _answers(path: Path) -> bool:
    with grpc.insecure_channel(f"unix://{path}") as channel:
        stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
        return bool(stub.Describe(pb.DescribeRequest(), timeout=10).programs)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_folder_is_created_root_owned_0755_and_the_socket_is_0600(
    service: SidecarService, servers: list[grpc.Server], tmp_path: Path
) -> None:
    sock = tmp_path / "run" / "ebpf-sidecar" / "sidecar.sock"
    servers.append(serve(service, f"unix://{sock}"))
    for folder in (sock.parent, sock.parent.parent):
        st = os.lstat(folder)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755), folder
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and (st.st_uid, _mode(sock)) == (0, 0o600)
    assert os.listdir(sock.parent) == ["sidecar.sock"], "the private bind folder is left"
    assert _answers(sock)


def test_with_a_socket_group_the_folder_is_0750_and_the_socket_0660_of_that_group(
    service: SidecarService, servers: list[grpc.Server], tmp_path: Path
) -> None:
    sock = tmp_path / "run" / "sidecar.sock"
    servers.append(serve(service, f"unix://{sock}", str(NOGROUP)))
    st = os.lstat(sock.parent)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, NOGROUP, 0o750)
    st = os.lstat(sock)
    assert (st.st_uid, st.st_gid, _mode(sock)) == (0, NOGROUP, 0o660)
    assert _answers(sock)


def test_a_folder_others_can_write_to_and_use_is_refused(
    service: SidecarService, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "someone-elses.txt").write_text("x")
    with pytest.raises(unix_socket.SocketError, match=r"writable by its group and others"):
        serve(service, f"unix://{shared / 'sidecar.sock'}")
    assert _mode(shared) == 0o777, "a folder others use must not be changed"
    assert os.listdir(shared) == ["someone-elses.txt"]


def test_a_folder_of_another_user_is_refused(service: SidecarService, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOGROUP)
    with pytest.raises(unix_socket.SocketError, match=r"is owned by uid 65534, not root"):
        serve(service, f"unix://{theirs / 'sidecar.sock'}")


def test_a_folder_above_others_can_write_to_is_refused(
    service: SidecarService, tmp_path: Path
) -> None:
    above = tmp_path / "above"
    (above / "run").mkdir(parents=True)
    above.chmod(0o777)  # others could rename run/ and put their own in its place
    with pytest.raises(unix_socket.SocketError, match=rf"{above} is writable by"):
        serve(service, f"unix://{above / 'run' / 'sidecar.sock'}")


def test_an_empty_shared_folder_like_a_kubernetes_emptydir_is_taken_over(
    service: SidecarService, servers: list[grpc.Server], tmp_path: Path
) -> None:
    # kubelet makes an emptyDir 0777 (2777 and of the fsGroup with fsGroup)
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    os.chown(empty_dir, 0, 10001)
    empty_dir.chmod(0o2777)
    sock = empty_dir / "sidecar.sock"
    servers.append(serve(service, f"unix://{sock}", str(NOGROUP)))
    st = os.lstat(empty_dir)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, NOGROUP, 0o750)
    assert (os.lstat(sock).st_gid, _mode(sock)) == (NOGROUP, 0o660)
    assert _answers(sock)


def test_a_regular_file_at_the_socket_path_is_refused_and_kept(
    service: SidecarService, tmp_path: Path
) -> None:
    sock = tmp_path / "sidecar.sock"
    sock.write_text("not a socket")
    with pytest.raises(unix_socket.SocketError, match=r"exists and is not a socket"):
        serve(service, f"unix://{sock}")
    assert sock.read_text() == "not a socket"


def test_a_symlink_at_the_socket_path_is_refused_and_not_followed(
    service: SidecarService, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    sock = tmp_path / "sidecar.sock"
    sock.symlink_to(victim)
    with pytest.raises(unix_socket.SocketError, match=r"exists and is a symbolic link"):
        serve(service, f"unix://{sock}", str(NOGROUP))
    assert sock.is_symlink() and victim.read_text() == "secret"
    st = os.lstat(victim)
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0o600)


def test_a_socket_another_sidecar_listens_on_is_refused(
    service: SidecarService, servers: list[grpc.Server], tmp_path: Path
) -> None:
    sock = tmp_path / "sidecar.sock"
    servers.append(serve(service, f"unix://{sock}"))
    with pytest.raises(unix_socket.SocketError, match=rf"another sidecar is listening on {sock}"):
        serve(service, f"unix://{sock}")
    assert _answers(sock), "the first sidecar lost its socket"


def test_a_stale_socket_is_replaced(
    service: SidecarService, servers: list[grpc.Server], tmp_path: Path
) -> None:
    sock = tmp_path / "sidecar.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))  # closed without unlinking: what a crashed sidecar leaves
    servers.append(serve(service, f"unix://{sock}"))
    assert _answers(sock)


class _SwapAfterBind:
    """A gRPC server whose start() lets an attacker win the race the old code had:
    the socket at the final path is replaced by a symlink to a victim file
    between bind and chmod/chown."""

    def __init__(self, real: grpc.Server, final: Path, victim: Path) -> None:
        self.real, self.final, self.victim = real, final, victim

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def start(self) -> None:
        self.real.start()
        if self.final.exists() or self.final.is_symlink():
            self.final.unlink()
        self.final.symlink_to(self.victim)


def test_permissions_are_never_set_through_a_symlink_swapped_in_after_bind(
    service: SidecarService,
    servers: list[grpc.Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's own")
    victim.chmod(0o600)
    sock = tmp_path / "sidecar.sock"
    real_server = grpc.server

    def swapping_server(*args: Any, **kwargs: Any) -> Any:
        made = _SwapAfterBind(real_server(*args, **kwargs), sock, victim)
        servers.append(made.real)
        return made

    monkeypatch.setattr(grpc, "server", swapping_server)
    refused = None
    try:
        serve(service, f"unix://{sock}", str(NOGROUP))
    except unix_socket.SocketError as e:
        refused = str(e)
    st = os.lstat(victim)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    # Refusing is right: the path was taken while the sidecar started.
    assert refused is not None and "created at the path while" in refused
