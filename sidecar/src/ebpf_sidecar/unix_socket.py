"""The sidecar's Unix socket: placed where nobody else can interfere with it.

Whoever can connect to the socket can load catalog programs and read what
they collect, so its mode (0600, or 0660 for ``--socket-group``) must be
what it is from the first moment, and nothing at the path may be trusted or
removed unless it is a stale socket of the sidecar's own.

- The socket's folder and every folder above it must be owned by root (or
  the sidecar's user) and writable by nobody else (sticky folders above it,
  like /tmp, are fine): see :mod:`ebpf_sidecar.trust`. A missing folder is
  created 0755 (0750 and of the socket group with ``--socket-group``).
- An existing socket folder writable by others is refused, with one
  exception: one that holds nothing but the socket's own name. That is how
  Kubernetes hands over an ``emptyDir`` (0777, or 2777 with ``fsGroup``);
  nobody else keeps anything in it, so the sidecar takes it over and
  tightens it to 0755 (0750 with the socket group), then checks that nothing
  was added meanwhile.
- What is at the path is left alone and refused unless it is a socket of
  the sidecar's user that refuses connections (a stale one). A socket that
  answers is another sidecar's: refused, never taken over.
- The socket is bound in a private folder created beside it (0700, setgid
  to the socket group so the socket gets that group): bound under a umask,
  its mode and group are right at creation and nobody can reach it to swap
  it for a symbolic link before it is checked. Only then is it linked to
  its final name (``link`` fails rather than replaces if that name was
  taken meanwhile). No chmod or chown ever runs on a path others could
  change.

Preparing (folders, group ownership) needs root; binding and publishing do
not, so the command line prepares the socket before it drops capabilities
and binds after (gRPC starts threads, and capabilities are per thread).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket
import stat
import tempfile
from pathlib import Path

from ebpf_sidecar import trust

log = logging.getLogger(__name__)

# sun_path holds 108 bytes, the last a NUL
_MAX_PATH = 107


class SocketError(RuntimeError):
    """The socket cannot be placed safely; the message names the path and the fix."""


def group_id(group: str) -> int:
    """A ``--socket-group`` value (name or number) as a gid."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketError(
            f"--socket-group {group!r}: no such group; give a group name or number"
        ) from None


class PreparedSocket:
    """Where the socket goes and the private folder it is bound in first."""

    def __init__(self, path: Path, gid: int | None) -> None:
        self.path = path
        self.gid = gid
        self.mode = 0o600 if gid is None else 0o660
        self._private: Path | None = None
        self._inode: int | None = None

    @property
    def bind_address(self) -> str:
        """The gRPC address to bind: the socket's place in the private folder."""
        assert self._private is not None, "prepare() first"
        return f"unix://{self._private / 's'}"

    def prepare(self) -> PreparedSocket:
        folder = self._folder()
        self._refuse_what_is_there()
        private = Path(tempfile.mkdtemp(prefix=".s", dir=folder))
        self._private = private
        if len(str(private / "s")) > _MAX_PATH:
            self.discard()
            raise SocketError(
                f"{self.path}: the socket's folder path is too long for a Unix socket "
                f"(at most {_MAX_PATH - 12} characters); use a shorter --listen path"
            )
        if self.gid is not None:
            # Sockets bound in a setgid folder get its group: no chown later.
            os.chown(private, -1, self.gid)
            os.chmod(private, 0o700 | stat.S_ISGID)
        return self

    def _folder(self) -> Path:
        parent = self.path.parent
        folder = Path(os.path.realpath(parent))
        what = f"--listen {self.path}"
        try:
            trust.check_ancestors(folder, what)
        except FileNotFoundError:
            pass  # created below, folder by folder
        except trust.UntrustedPath as e:
            raise SocketError(str(e)) from None
        if not folder.exists():
            self._create(folder, what)
            return folder
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            found = trust.problem(os.fstat(fd), folder, sticky_ok=True)
            if found is None:
                return folder
            if os.fstat(fd).st_uid not in (0, os.geteuid()) or not self._holds_only_ours(folder):
                raise SocketError(
                    f"{what}: {found}; a socket folder others can write to must hold "
                    "nothing else (it is then taken over), or use a folder of its own"
                )
            # An emptyDir-style folder: take it over (see the module doc).
            self._tighten(fd)
            if not self._holds_only_ours(folder):
                raise SocketError(
                    f"{what}: something was added to {folder} while the sidecar took it "
                    "over; find out who writes there, or use a folder of its own"
                )
            log.info(
                "took over the socket folder %s: mode %04o%s",
                folder,
                self._folder_mode(),
                "" if self.gid is None else f", group {self.gid}",
            )
            return folder
        finally:
            os.close(fd)

    def _folder_mode(self) -> int:
        return 0o755 if self.gid is None else 0o750

    def _tighten(self, fd: int) -> None:
        if self.gid is not None:
            os.fchown(fd, -1, self.gid)
        os.fchmod(fd, self._folder_mode())

    def _create(self, folder: Path, what: str) -> None:
        missing = [folder, *(p for p in folder.parents if not p.exists())]
        for p in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(p, 0o700)  # opened up below, once it is ours
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                if p == folder:
                    self._tighten(fd)
                else:
                    os.fchmod(fd, 0o755)
                found = trust.problem(os.fstat(fd), p, sticky_ok=True)
            finally:
                os.close(fd)
            if found:  # someone else made it first
                raise SocketError(f"{what}: {found}")
        log.info("created the socket folder %s (mode %04o)", folder, self._folder_mode())

    def _holds_only_ours(self, folder: Path) -> bool:
        return set(os.listdir(folder)) <= {self.path.name}

    def _refuse_what_is_there(self) -> None:
        """Remove a stale socket of our own at the path; refuse anything else."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        where = f"--listen {self.path}"
        if not stat.S_ISSOCK(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a socket"
            raise SocketError(
                f"{where}: the path exists and is {kind}; the sidecar removes only a "
                "stale socket of its own: remove it yourself or choose another path"
            )
        if st.st_uid != os.geteuid():
            raise SocketError(
                f"{where}: a socket of uid {st.st_uid} is there, not the sidecar's own; "
                "remove it yourself or choose another path"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            try:
                probe.connect(str(self.path))
            except ConnectionRefusedError:
                pass  # nobody listens: stale
            except OSError as e:
                raise SocketError(f"{where}: cannot tell whether the socket is in use: {e}") from e
            else:
                raise SocketError(
                    f"another sidecar is listening on {self.path}; stop it first or give "
                    "this one another --listen path"
                )
        log.info("removing the stale socket %s", self.path)
        os.unlink(self.path)

    def publish(self) -> None:
        """Check the bound socket, then give it its final name."""
        assert self._private is not None, "prepare() first"
        bound = self._private / "s"
        st = os.lstat(bound)
        if not stat.S_ISSOCK(st.st_mode) or stat.S_IMODE(st.st_mode) != self.mode:
            raise SocketError(
                f"{self.path}: the bound socket has mode {stat.S_IMODE(st.st_mode):04o}, "
                f"not {self.mode:04o}"
            )
        if self.gid is not None and st.st_gid != self.gid:
            raise SocketError(
                f"{self.path}: the bound socket has group {st.st_gid}, not {self.gid}; "
                "the folder's file system ignores setgid folders"
            )
        try:
            os.link(bound, self.path)
        except FileExistsError:
            raise SocketError(
                f"--listen {self.path}: something was created at the path while the sidecar "
                "started; find out what, or choose another path"
            ) from None
        self._inode = st.st_ino
        self.discard()

    def discard(self) -> None:
        """Remove the private folder (and the socket's name in it)."""
        if self._private is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._private / "s")
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self._private)
        self._private = None

    def remove(self) -> None:
        """At exit: remove the socket, if what is at the path is still ours."""
        self.discard()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if self._inode is not None and st.st_ino == self._inode and stat.S_ISSOCK(st.st_mode):
            os.unlink(self.path)


def prepare(path: Path, group: str | None) -> PreparedSocket:
    """Check and make the socket's folder and a private place to bind in."""
    try:
        return PreparedSocket(path, None if group is None else group_id(group)).prepare()
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SocketError(f"--listen {path}: {e}") from None
        raise
