"""The gRPC service: Describe and Stream."""

from __future__ import annotations

import grp
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from ebpf_sidecar import PROTOCOL_VERSION, __version__
from ebpf_sidecar.catalog import Catalog, RequestError
from ebpf_sidecar.kernel import KernelInfo
from ebpf_sidecar.programs import LoadedProgram, LoadError, ProgramManager
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class WantedMap:
    """One MapRequest of a stream, validated."""

    program: str
    map: str
    clear: bool  # clear_after_read: delta reads, on an instance of the program of its own
    per_cpu: bool


DEFAULT_INTERVAL_S = 10.0


def describe(catalog: Catalog, k: KernelInfo) -> pb.DescribeResponse:
    """What Describe answers: the kernel's features and the catalog, programs by name.

    A function of its own so that the receiver's catalog fixture
    (``ebpf_sidecar.describe_fixture``) is built by the same code.
    """
    return pb.DescribeResponse(
        sidecar_version=__version__,
        protocol_version=PROTOCOL_VERSION,
        kernel=pb.KernelInfo(
            release=k.release,
            btf=k.btf,
            raw_tracepoints=k.raw_tracepoints,
            perf_events=k.perf_events,
            kprobes=k.kprobes,
            headers=k.headers,
        ),
        programs=[p.to_proto() for _, p in sorted(catalog.programs.items())],
    )


class SidecarService(pb_grpc.SidecarServicer):
    def __init__(self, catalog: Catalog, programs: ProgramManager, kernel: KernelInfo) -> None:
        self.catalog = catalog
        self.programs = programs
        self.kernel = kernel

    def Describe(
        self, request: pb.DescribeRequest, context: grpc.ServicerContext
    ) -> pb.DescribeResponse:
        return describe(self.catalog, self.kernel)

    def Stream(
        self, request: pb.StreamRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Snapshot]:
        interval = DEFAULT_INTERVAL_S
        if request.HasField("interval"):
            interval = request.interval.ToTimedelta().total_seconds()
        if interval < MIN_INTERVAL_S:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval: {interval}s is below the minimum {MIN_INTERVAL_S}s",
            )
        try:
            wanted = self._validate(request)
        except RequestError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

        acquired: list[LoadedProgram] = []
        closed = threading.Event()
        context.add_callback(closed.set)
        try:
            by_name: dict[str, LoadedProgram] = {}
            clearing = {w.program for w in wanted if w.clear}
            for p in request.programs:
                loaded = self.programs.acquire(
                    p.name, dict(p.parameters), exclusive=p.name in clearing
                )
                acquired.append(loaded)
                by_name[p.name] = loaded
            for i, w in enumerate(wanted):
                if w.per_cpu and not by_name[w.program].readers[w.map].per_cpu:
                    raise RequestError(
                        f"maps[{i}].per_cpu: map {w.map!r} of {w.program!r} is not a per-CPU "
                        "map; there is one value per key, not one per CPU"
                    )
            log.info(
                "stream %s: programs %s, %d maps every %.1fs",
                context.peer(),
                ", ".join(by_name),
                len(wanted),
                interval,
            )
            sequence = 0
            next_tick = time.monotonic()
            while not closed.is_set():
                sequence += 1
                yield self._snapshot(sequence, wanted, by_name)
                next_tick += interval
                closed.wait(max(0.0, next_tick - time.monotonic()))
        except RequestError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except LoadError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        finally:
            for loaded in acquired:
                self.programs.release(loaded)

    def _validate(self, request: pb.StreamRequest) -> list[WantedMap]:
        requested: dict[str, dict[str, str]] = {}
        for i, p in enumerate(request.programs):
            try:
                program = self.catalog.program(p.name)
            except RequestError as e:
                raise RequestError(f"programs[{i}].name: {e}") from None
            program.cflags(dict(p.parameters))
            requested[p.name] = dict(p.parameters)
        wanted: list[WantedMap] = []
        for i, m in enumerate(request.maps):
            if m.program not in requested:
                raise RequestError(
                    f"maps[{i}].program: {m.program!r} is not among the requested programs "
                    f"({', '.join(sorted(requested)) or 'none'})"
                )
            try:
                spec = self.catalog.map(m.program, m.map)
            except RequestError as e:
                raise RequestError(f"maps[{i}].map: {e}") from None
            program = self.catalog.program(m.program)
            if not program.map_enabled(spec, requested[m.program]):
                raise RequestError(
                    f"maps[{i}].map: {m.map!r} is compiled out; set parameter "
                    f"{spec.enabled_by}: true on program {m.program!r}"
                )
            if any(w.program == m.program and w.map == m.map for w in wanted):
                raise RequestError(
                    f"maps[{i}]: map {m.map!r} of {m.program!r} is requested twice; "
                    "request each map once"
                )
            if m.per_cpu and "cpu" in spec.key_names:
                raise RequestError(
                    f"maps[{i}].per_cpu: map {m.map!r} already has a key field 'cpu'"
                )
            wanted.append(WantedMap(m.program, m.map, m.clear_after_read, m.per_cpu))
        return wanted

    def _snapshot(
        self, sequence: int, wanted: list[WantedMap], loaded: dict[str, LoadedProgram]
    ) -> pb.Snapshot:
        started = time.monotonic()
        snap = pb.Snapshot(sequence=sequence, time_unix_nano=time.time_ns())
        for w in wanted:
            program, name = w.program, w.map
            prog = loaded[program]
            ms = snap.maps.add(program=program, map=name, attach_time_unix_nano=prog.attach_time_ns)
            try:
                prog.readers[name].read(ms, clear=w.clear, per_cpu=w.per_cpu)
            except Exception as e:  # one broken map must not stop the others
                log.exception("reading map %s/%s failed", program, name)
                del ms.key_columns[:]
                del ms.value_columns[:]
                ms.entries = 0
                ms.error = f"reading {program}/{name} failed: {e}"
        snap.read_duration.FromNanoseconds(int((time.monotonic() - started) * 1e9))
        return snap


def _unix_path(listen: str) -> Path | None:
    return Path(listen[len("unix://") :]) if listen.startswith("unix://") else None


def serve(
    service: SidecarService, listen: str, socket_group: str | None, workers: int = 16
) -> grpc.Server:
    """Start the server; a Unix socket gets mode 0600, or 0660 with a group."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    # grpcio-tools emits no annotations for the registration helper.
    pb_grpc.add_SidecarServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    path = _unix_path(listen)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()  # a stale socket from a previous run
        # Bind with a restrictive umask so the socket is never world-writable,
        # not even between bind and chmod.
        old = os.umask(0o177 if socket_group is None else 0o117)
        try:
            server.add_insecure_port(listen)
            server.start()
        finally:
            os.umask(old)
        if socket_group is not None:
            gid = int(socket_group) if socket_group.isdigit() else grp.getgrnam(socket_group).gr_gid
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)
        else:
            os.chmod(path, 0o600)
    else:
        server.add_insecure_port(listen)
        server.start()
    log.info("listening on %s", listen)
    return server
