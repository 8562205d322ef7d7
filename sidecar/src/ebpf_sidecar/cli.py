"""Command line: ``python -m ebpf_sidecar [--listen unix:///run/ebpf-sidecar/sidecar.sock]``.

TCP: ``--listen 127.0.0.1:PORT`` (plaintext, this host only), or any
``HOST:PORT`` with ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca``
(mutual TLS); see :mod:`ebpf_sidecar.listen`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from ebpf_sidecar import __version__, cost, kernel, listen, pins, privileges, trust, unix_socket
from ebpf_sidecar.catalog import CatalogError
from ebpf_sidecar.decoders import ksym
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import DEFAULT_MAX_INSTANCES, ProgramManager, log_stream
from ebpf_sidecar.server import DEFAULT_MAX_STREAMS, SidecarService, serve, unix_path

DEFAULT_LISTEN = "unix:///run/ebpf-sidecar/sidecar.sock"
DEFAULT_COMPILE_CACHE = Path("/var/cache/ebpf-sidecar")
# In a checkout the catalog sits at the repository root; images pass --catalog.
_REPO_CATALOG = Path(__file__).resolve().parents[3] / "bpf"

log = logging.getLogger("ebpf_sidecar")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number; use 1 or more")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ebpf-sidecar",
        description="Loads BCC programs from the catalog and streams their maps to the "
        "OpenTelemetry ebpf receiver over gRPC. Needs root or CAP_BPF + CAP_PERFMON.",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help="unix:///path (default %(default)s); 127.0.0.1:PORT or [::1]:PORT (plaintext, "
        "this host only); or HOST:PORT (0.0.0.0:PORT for every address) with the three "
        "--tls-* flags",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="PEM",
        help="the server's certificate (chain) for TCP with mutual TLS",
    )
    p.add_argument(
        "--tls-key",
        type=Path,
        default=None,
        metavar="PEM",
        help="the key of --tls-cert, unencrypted, readable by the sidecar's user only (0600)",
    )
    p.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="the CA(s) whose certificates clients must present: only they are served",
    )
    p.add_argument(
        "--socket-group",
        default=None,
        help="group (name or gid) that may use the Unix socket (mode 0660); "
        "default: owner only (0600)",
    )
    p.add_argument(
        "--catalog",
        type=Path,
        default=_REPO_CATALOG,
        help="the built-in program catalog (default %(default)s)",
    )
    p.add_argument(
        "--programs-dir",
        type=Path,
        action="append",
        default=[],
        help="an extra directory of your own programs (repeatable)",
    )
    p.add_argument(
        "--keep-capabilities",
        default="",
        metavar="CAP[,CAP...]",
        help="capabilities to keep besides CAP_BPF and CAP_PERFMON once started, e.g. "
        "CAP_SYS_PTRACE where /proc is mounted with hidepid (default: none)",
    )
    p.add_argument(
        "--max-streams",
        type=_positive,
        default=DEFAULT_MAX_STREAMS,
        help="streams served at once; more are refused with RESOURCE_EXHAUSTED "
        "(default %(default)s)",
    )
    p.add_argument(
        "--max-instances-per-program",
        type=_positive,
        default=DEFAULT_MAX_INSTANCES,
        help="loaded instances of one program (distinct parameter sets, plus one per "
        "stream that clears maps on read); more are refused (default %(default)s)",
    )
    p.add_argument(
        "--pin-dir",
        default=str(pins.DEFAULT_ROOT),
        help="bpffs folder where loaded programs are pinned so that they keep counting "
        "through a crash of the sidecar and its successor adopts them (default "
        "%(default)s); '' turns pinning off",
    )
    p.add_argument(
        "--pin-lease",
        type=float,
        default=pins.DEFAULT_LEASE_S,
        metavar="SECONDS",
        help="pins a dead sidecar left are adopted for this long after its last heartbeat, "
        "then removed (default %(default)s)",
    )
    p.add_argument(
        "--run-time-stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold BPF run-time statistics enabled (BPF_ENABLE_STATS) while the sidecar "
        "runs, so that programs' run time and run counts reach the receiver's "
        "self-metrics; they cost every BPF program on the node a few ns a run "
        "(default: on)",
    )
    p.add_argument(
        "--compile-cache",
        default=str(DEFAULT_COMPILE_CACHE),
        metavar="DIR",
        help="folder (root's, writable by nobody else) where compiled programs are kept for "
        "this kernel, so that a restart loads them in milliseconds without compiling "
        "(default %(default)s; in Kubernetes an emptyDir or hostPath volume); '' turns it off",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p.parse_args(argv)


def _check_catalog_folders(catalog: Path, programs_dirs: list[Path]) -> None:
    """Refuse catalog folders others could write to: their C runs in the kernel."""
    for flag, folder in [("--catalog", catalog), *(("--programs-dir", d) for d in programs_dirs)]:
        if not folder.exists():
            continue  # load_catalog says so, with the flag's context
        trust.check_tree(
            folder,
            f"{flag} {folder}: the sidecar compiles what is there into the kernel as root, "
            "so only root may be able to change it, and",
        )


def configure_logging(level: str) -> None:
    """Log, and print tracebacks, to a duplicate of fd 2 that compiles never capture."""
    stream = log_stream()
    sys.stderr = stream  # threads' uncaught exceptions, warnings
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=stream
    )


def _prepare_pins(root: Path) -> Path | None:
    """bpffs mounted and the pin folder made, while mounting is still allowed."""
    if not pins.ensure_bpffs(root):
        return None
    try:
        root.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        log.warning("cannot create %s (%s): programs will not survive a crash", root, e)
        return None
    return root


def _prepare_compile_cache(folder: Path) -> Path | None:
    """The compile cache's folder, made root's and private; None if it cannot be trusted."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        trust.check_tree(
            folder, f"--compile-cache {folder}: what is there is loaded into the kernel, so"
        )
    except (OSError, trust.UntrustedPath) as e:
        log.warning("not using the compile cache (%s): programs compile at every start", e)
        return None
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    keep = [n for n in args.keep_capabilities.split(",") if n.strip()]
    tls_files = listen.TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca)
    try:
        for name in keep:
            privileges.capability_number(name)  # unknown names stop here, before anything
        # Before anything else too: an exposed listener is refused outright,
        # and the TLS files are read now, while no capability is dropped yet.
        tls = listen.load(tls_files) if listen.check(args.listen, tls_files.given()) else None
        if args.socket_group is not None and unix_path(args.listen) is None:
            raise listen.ListenError(
                f"--socket-group {args.socket_group} with --listen {args.listen}: the group "
                "sets who may use a Unix socket and means nothing on TCP; drop it"
            )
        _check_catalog_folders(args.catalog, args.programs_dir)
        catalog = load_catalog([args.catalog, *args.programs_dir])
    except (
        CatalogError,
        privileges.CapabilityError,
        trust.UntrustedPath,
        listen.ListenError,
    ) as e:
        log.error("%s", e)
        return 2
    try:
        kernel.tracefs()  # mounted now, while the sidecar still has CAP_SYS_ADMIN
    except kernel.TracefsUnavailable as e:
        log.error("%s", e)
        return 1
    info = kernel.detect()
    log.info("ebpf-sidecar %s; %s", __version__, info.summary())
    if not info.headers:
        log.warning(
            "no kernel headers for %s: install linux-headers (see README) or enable "
            "CONFIG_IKHEADERS; programs will fail to compile",
            info.release,
        )
    log.info("catalog: %s", ", ".join(sorted(catalog.programs)))

    # What needs more than CAP_BPF + CAP_PERFMON happens before the drop:
    # tracefs (above), the memlock limit, kallsyms, the socket's folder.
    privileges.lift_memlock_limit()
    ksym.KSYMS.keep_open()
    # BPF_ENABLE_STATS needs CAP_SYS_ADMIN; held (never closed) until we exit
    stats_fd = cost.enable_run_time_stats() if args.run_time_stats else None
    pin_root = _prepare_pins(Path(args.pin_dir)) if args.pin_dir else None
    cache = _prepare_compile_cache(Path(args.compile_cache)) if args.compile_cache else None
    path = unix_path(args.listen)
    try:
        prepared = None if path is None else unix_socket.prepare(path, args.socket_group)
    except unix_socket.SocketError as e:
        log.error("%s", e)
        return 2
    try:
        privileges.drop(keep)
    except privileges.CapabilityError as e:
        log.error("%s", e)
        if prepared is not None:
            prepared.discard()
        return 2
    try:
        programs = ProgramManager(
            catalog,
            args.max_instances_per_program,
            pin_root=pin_root,
            lease_s=args.pin_lease,
            compile_cache=cache,
        )
        programs.start()  # removes expired pins before anything loads
        service = SidecarService(
            catalog,
            programs,
            info,
            args.max_streams,
            usage=cost.SidecarUsage(run_time_stats=stats_fd is not None),
        )
        server = serve(service, args.listen, prepared=prepared, tls=tls)
    except unix_socket.SocketError as e:
        log.error("%s", e)
        return 2
    except listen.BindError as e:
        log.error("%s", e)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.is_set():
        time.sleep(0.2)
    server.stop(grace=2).wait()
    programs.close()  # nothing stays attached after we exit
    if prepared is not None:
        prepared.remove()
    log.info("stopped; all programs detached")
    return 0
