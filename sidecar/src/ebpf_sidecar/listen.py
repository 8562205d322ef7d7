"""Where the sidecar may listen, and with what protection.

Whoever reaches the sidecar can load catalog programs as root and read what
they collect (process names, pids, peer addresses), and gRPC itself
authenticates nobody. So every way in is guarded:

- a Unix socket (``unix:///path``): by its file mode and folder, see
  :mod:`ebpf_sidecar.unix_socket`; TLS flags there are refused, since they
  would protect nothing the mode does not and suggest otherwise;
- TCP on a loopback address (``127.0.0.0/8``, ``[::1]``), plaintext: only
  processes of this host (network namespace) reach it;
- TCP on any other address, ``0.0.0.0`` included: mutual TLS only
  (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``), so that only clients
  holding a certificate of the client CA get in.

Anything else is refused at start with a message that says what to set.
Host names are not looked up for the loopback rule (``localhost`` can be
mapped anywhere): plaintext TCP takes a loopback IP literal.

The key must be readable by its owner alone, and the owner must be the
sidecar's user, as ssh demands of its keys: whoever reads it can pose as
the sidecar. All three files are read at start, before capabilities are
dropped (a drop without ``CAP_DAC_READ_SEARCH`` could otherwise make a
mounted secret unreadable), and checked with Python's ``ssl`` so that a
key that does not match its certificate stops the start, not the first
handshake.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

# Listen schemes gRPC would accept but that bypass the Unix socket's checks:
# a relative ``unix:path`` lands wherever the sidecar was started, and an
# abstract socket has no file mode at all (anyone in the network namespace
# can connect).
_UNGUARDED_SCHEMES = ("unix:", "unix-abstract:", "vsock:")

TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-client-ca")


class ListenError(ValueError):
    """The listen address and TLS flags do not go together; the message says why and what to set."""


class BindError(RuntimeError):
    """gRPC could not listen at an address that passed :func:`check` (e.g. a taken port)."""


@dataclass(frozen=True)
class TlsFiles:
    """The paths of the three TLS flags, as given (None when not given)."""

    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None

    def given(self) -> list[str]:
        return [f for f, p in zip(TLS_FLAGS, self._paths(), strict=True) if p is not None]

    def _paths(self) -> tuple[Path | None, Path | None, Path | None]:
        return (self.cert, self.key, self.client_ca)


@dataclass(frozen=True)
class ServerTls:
    """What ``grpc.ssl_server_credentials`` needs, read while it still could be."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes


def _host_port(listen: str) -> tuple[str, str]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ListenError(
            f"--listen {listen}: not an address the sidecar serves; use unix:///path/to.sock, "
            "127.0.0.1:PORT (plaintext, this host only) or HOST:PORT with --tls-cert, "
            "--tls-key and --tls-client-ca"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ListenError(f"--listen {listen}: port {port!r} is not a port; use 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback IP literal (names are not looked up)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(listen: str, given: list[str]) -> bool:
    """Refuse what would expose the sidecar; return whether TLS is to be used.

    ``given``: the TLS flags given (:meth:`TlsFiles.given`).
    """
    if listen.startswith("unix://"):
        if not listen.startswith("unix:///"):
            raise ListenError(
                f"--listen {listen}: the socket's path must be absolute (its folders are "
                "checked from the root); use unix:///absolute/path, e.g. "
                "unix:///run/ebpf-sidecar/sidecar.sock"
            )
        if given:
            raise ListenError(
                f"{', '.join(given)} with --listen {listen}: a Unix socket is guarded by its "
                "file mode (and --socket-group), not TLS; drop the TLS flags, or listen on "
                "HOST:PORT to serve mutual TLS"
            )
        return False
    if listen.startswith(_UNGUARDED_SCHEMES):
        raise ListenError(
            f"--listen {listen}: only unix:///absolute/path sockets are served (their mode "
            "and folder are checked; relative, abstract and vsock addresses have no such "
            "guard); use unix:///run/ebpf-sidecar/sidecar.sock or HOST:PORT"
        )
    host, port = _host_port(listen)
    if len(given) == len(TLS_FLAGS):
        return True
    if given:
        missing = [f for f in TLS_FLAGS if f not in given]
        raise ListenError(
            f"--listen {listen} with {', '.join(given)} but without {', '.join(missing)}: "
            "TCP is served with mutual TLS only, which takes all three: the server's "
            "certificate (--tls-cert), its key (--tls-key) and the CA that signs the "
            "clients' certificates (--tls-client-ca)"
        )
    if is_loopback(host):
        return False
    why = (
        "every address of the host"
        if host in ("0.0.0.0", "::", "")
        else "an address other hosts (or pods) can reach"
    )
    raise ListenError(
        f"--listen {listen} is {why}, and whoever connects can load programs as root and "
        "read process names: set --tls-cert, --tls-key and --tls-client-ca to require "
        f"client certificates, or listen on 127.0.0.1:{port} (plaintext, this host only) "
        "or on a Unix socket"
    )


def _read(flag: str, path: Path, *, private: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError as e:
        raise ListenError(f"{flag} {path}: cannot be read ({e.strerror}); check the path") from e
    with os.fdopen(fd, "rb") as f:
        # fstat of the open file: the mode checked is the one of what is read,
        # even if the path is a (Kubernetes secret's) symbolic link.
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ListenError(f"{flag} {path}: not a regular file; point it at a PEM file")
        if private:
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid != os.geteuid():
                raise ListenError(
                    f"{flag} {path} is owned by uid {st.st_uid}, who can read the key and pose "
                    f"as the sidecar; run chown {os.geteuid()} {path}"
                )
            if mode & 0o077:
                raise ListenError(
                    f"{flag} {path} is readable by its group or others (mode {mode:04o}), who "
                    f"could pose as the sidecar with it; run chmod 600 {path} (in Kubernetes, "
                    "mount the secret with defaultMode: 0400 and no fsGroup)"
                )
        data = f.read()
    if not data.strip():
        raise ListenError(f"{flag} {path}: the file is empty; point it at a PEM file")
    return data


def load(files: TlsFiles) -> ServerTls:
    """Read and check the three files of mutual TLS (all given: see :func:`check`)."""
    assert files.cert is not None and files.key is not None and files.client_ca is not None
    cert = _read("--tls-cert", files.cert, private=False)
    key = _read("--tls-key", files.key, private=True)
    ca = _read("--tls-client-ca", files.client_ca, private=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as e:
        raise ListenError(
            f"--tls-client-ca {files.client_ca}: holds no PEM CA certificate ({e}); point it "
            "at the CA that signs the clients' certificates"
        ) from e
    try:
        # Paths only here; what was just read is what gRPC gets, and the mode
        # checked was that of the key read. An encrypted key fails (gRPC
        # cannot use one either) rather than prompting for a passphrase.
        ctx.load_cert_chain(files.cert, files.key, password=b"")
    except (ssl.SSLError, OSError) as e:
        raise ListenError(
            f"--tls-cert {files.cert} and --tls-key {files.key}: not a PEM certificate and "
            f"its unencrypted private key, or the key is not the certificate's ({e}); give "
            "the server certificate and the key it was issued for"
        ) from e
    return ServerTls(cert_chain=cert, key=key, client_ca=ca)
