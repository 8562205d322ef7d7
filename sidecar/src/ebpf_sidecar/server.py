"""The gRPC service: Describe, Plan and Stream."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc

from ebpf_sidecar import PROTOCOL_VERSION, __version__, cost, events, unix_socket
from ebpf_sidecar import listen as listening
from ebpf_sidecar.catalog import Catalog, RequestError
from ebpf_sidecar.kernel import KernelInfo
from ebpf_sidecar.maps import DEFAULT_FULL_EVERY, Changes, MapReader
from ebpf_sidecar.plan import MIN_INTERVAL_S, WantedEvent, WantedMap, plan
from ebpf_sidecar.profile_stream import ProfileStream
from ebpf_sidecar.programs import InstanceLimit, LoadedProgram, LoadError, ProgramManager
from ebpf_sidecar.symbols import Symbolizer
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_MAX_STREAMS = 8
# How long a stream lets events gather after the first arrives before it
# sends them: a burst goes out in one message, and no event waits longer.
EVENT_LINGER_S = 0.2
# Worker threads beyond the stream slots: each open stream holds a thread for
# its whole life, so without these a full set of streams would leave none for
# Describe, Plan, or the call that is told there is no slot left.
UNARY_WORKERS = 4


def describe(catalog: Catalog, k: KernelInfo) -> pb.DescribeResponse:
    """What Describe answers: the kernel's features and the catalog, programs by name.

    A function of its own so that the receiver's catalog fixture
    (``ebpf_sidecar.describe_fixture``) is built by the same code.
    """
    response = pb.DescribeResponse(
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
    response.min_interval.FromNanoseconds(round(MIN_INTERVAL_S * 1e9))
    return response


class SidecarService(pb_grpc.SidecarServicer):
    def __init__(
        self,
        catalog: Catalog,
        programs: ProgramManager,
        kernel: KernelInfo,
        max_streams: int = DEFAULT_MAX_STREAMS,
        usage: cost.SidecarUsage | None = None,
    ) -> None:
        self.catalog = catalog
        # the sidecar's own cost, sent with every interval snapshot
        self.usage = usage or cost.SidecarUsage(run_time_stats=False)
        self.programs = programs
        self.kernel = kernel
        self.max_streams = max_streams
        self._stream_slots = threading.BoundedSemaphore(max_streams)
        # one symbol cache for every stream's profiles
        self.symbolizer = Symbolizer()

    def Describe(
        self, request: pb.DescribeRequest, context: grpc.ServicerContext
    ) -> pb.DescribeResponse:
        return describe(self.catalog, self.kernel)

    def Stream(
        self, request: pb.StreamRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Snapshot]:
        judged = plan(self.catalog, request)
        try:
            judged.raise_errors()
        except RequestError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        wanted, interval = judged.maps, judged.interval
        if not self._stream_slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.max_streams} streams are open, the most this sidecar serves "
                f"(--max-streams {self.max_streams}); close one, or start the sidecar "
                "with a higher --max-streams",
            )

        acquired: list[LoadedProgram] = []
        # Who reads: the exited-process reaper keeps an exited process's
        # entry until every stream reading the map has exported it.
        token = object()
        subscribed: list[MapReader] = []
        sink = events.EventSink()
        sources: list[events.EventSource] = []
        profiles: ProfileStream | None = None
        closed = threading.Event()
        context.add_callback(closed.set)
        context.add_callback(sink.close)
        try:
            by_name: dict[str, LoadedProgram] = {}
            clearing = {w.program for w in wanted if w.clear}
            # profiles clear the sample counts every read: an instance of their own
            if judged.profiles is not None:
                clearing.add(judged.profiles.program)
            # compiled at once, in loader processes; then acquired in order
            self.programs.prepare(
                [(p.program.name, p.requested, p.program.name in clearing) for p in judged.programs]
            )
            for p in judged.programs:
                name = p.program.name
                loaded = self.programs.acquire(name, p.requested, exclusive=name in clearing)
                acquired.append(loaded)
                by_name[name] = loaded
            for i, w in enumerate(wanted):
                if w.per_cpu and not by_name[w.program].readers[w.map].per_cpu:
                    # only the compiled map knows; Plan cannot tell
                    raise RequestError(
                        f"maps[{i}].per_cpu: map {w.program}/{w.map} is not a per-CPU "
                        "map; there is one value per key, not one per CPU"
                    )
            for w in wanted:
                by_name[w.program].readers[w.map].subscribe(token)
                subscribed.append(by_name[w.program].readers[w.map])
            for we in judged.events:
                sink.want(we.event.name, we.rate_limit)
                source = by_name[we.program].events[we.event.name]
                source.subscribe(sink)
                sources.append(source)
            profiles = (
                ProfileStream(judged.profiles, by_name[judged.profiles.program], self.symbolizer)
                if judged.profiles is not None
                else None
            )
            log.info(
                "stream %s: programs %s, %d maps every %.1fs, events %s",
                context.peer(),
                ", ".join(by_name),
                len(wanted),
                interval,
                ", ".join(we.event.name for we in judged.events) or "none",
            )
            if profiles is not None:
                profiles.start_prefetching(closed)
            sequence = 0
            next_tick = time.monotonic()
            # changes-only streams: what this stream sent of each cumulative map
            changes = {
                (w.program, w.map): Changes(request.full_snapshot_every or DEFAULT_FULL_EVERY)
                for w in wanted
                if request.changes_only and not w.clear
            }
            while not closed.is_set():
                sequence += 1
                snap = self._snapshot(
                    sequence, wanted, by_name, token, request.packed_columns, changes
                )
                self._add_costs(snap, by_name)
                self._add_events(snap, judged.events, by_name, sink)
                if profiles is not None:
                    profiles.add_to(snap)
                yield snap
                next_tick = next_read(next_tick, interval, time.monotonic())
                # events go out as they come, in snapshots of their own
                while not closed.is_set() and time.monotonic() < next_tick:
                    if not judged.events:
                        closed.wait(max(0.0, next_tick - time.monotonic()))
                        continue
                    if not sink.wait(next_tick - time.monotonic()):
                        continue
                    closed.wait(min(EVENT_LINGER_S, max(0.0, next_tick - time.monotonic())))
                    if closed.is_set() or time.monotonic() >= next_tick:
                        break  # the interval's snapshot takes them
                    # sequence 0: an event batch, not one of the interval's snapshots
                    logs_only = pb.Snapshot(sequence=0, time_unix_nano=time.time_ns())
                    self._add_events(logs_only, judged.events, by_name, sink, counters=False)
                    yield logs_only
        except RequestError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except InstanceLimit as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except LoadError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        finally:
            if profiles is not None:
                profiles.stop()
            for source in sources:
                source.unsubscribe(sink)
            for reader in subscribed:
                reader.unsubscribe(token)
            for loaded in acquired:
                self.programs.release(loaded)
            self._stream_slots.release()

    @staticmethod
    def _add_events(
        snap: pb.Snapshot,
        wanted: list[WantedEvent],
        loaded: dict[str, LoadedProgram],
        sink: events.EventSink,
        counters: bool = True,
    ) -> None:
        """The stream's pending events as snap.logs; with ``counters``, what
        it lost of each event type as snap.event_drops."""
        pending = sink.take()
        if pending:
            snap.logs = events.logs_data(pending, events.CLOCK).SerializeToString()
        if not counters:
            return
        for w in wanted:
            name = w.event.name
            snap.event_drops.add(
                program=w.program,
                event=name,
                attach_time_unix_nano=loaded[w.program].attach_time_ns,
                ring_buffer_full=loaded[w.program].events[name].ring_buffer_full(),
                rate_limited=sink.dropped[(name, events.RATE_LIMITED)],
                stream_behind=sink.dropped[(name, events.STREAM_BEHIND)],
            )

    def _add_costs(self, snap: pb.Snapshot, loaded: dict[str, LoadedProgram]) -> None:
        """What the stream's programs and the sidecar cost, as snap.program_costs
        and snap.sidecar_cost."""
        for name, prog in loaded.items():
            try:
                snap.program_costs.extend(prog.costs())
            except OSError as e:  # the metrics go on without it
                log.warning("reading the run-time statistics of %s failed: %s", name, e)
        try:
            snap.sidecar_cost.CopyFrom(self.usage.cost())
        except OSError as e:
            log.warning("reading the sidecar's own CPU time and RSS failed: %s", e)

    def Plan(self, request: pb.StreamRequest, context: grpc.ServicerContext) -> pb.PlanResponse:
        return plan(self.catalog, request).to_proto()

    def _snapshot(
        self,
        sequence: int,
        wanted: list[WantedMap],
        loaded: dict[str, LoadedProgram],
        stream: object = None,
        packed: bool = False,
        changes: dict[tuple[str, str], Changes] | None = None,
    ) -> pb.Snapshot:
        started = time.monotonic()
        snap = pb.Snapshot(sequence=sequence, time_unix_nano=time.time_ns())
        for w in wanted:
            program, name = w.program, w.map
            prog = loaded[program]
            ms = snap.maps.add(program=program, map=name, attach_time_unix_nano=prog.attach_time_ns)
            try:
                prog.readers[name].read(
                    ms,
                    clear=w.clear,
                    per_cpu=w.per_cpu,
                    stream=stream,
                    packed=packed,
                    changes=(changes or {}).get((program, name)),
                )
            except Exception as e:  # one broken map must not stop the others
                log.exception("reading map %s/%s failed", program, name)
                ms.Clear()
                ms.program, ms.map = program, name
                ms.attach_time_unix_nano = prog.attach_time_ns
                if changes and (program, name) in changes:
                    # the client's state is unknown now: send the next read whole
                    changes[(program, name)] = Changes(changes[(program, name)].full_every)
                ms.error = f"reading {program}/{name} failed: {e}"
        snap.read_duration.FromNanoseconds(int((time.monotonic() - started) * 1e9))
        return snap


def next_read(scheduled: float, interval: float, now: float) -> float:
    """When to read after the read ``scheduled`` for then: one interval on,
    or, when a slow client held the stream past that, one interval from
    now. Missed ticks are skipped, never caught up in a burst of snapshots
    a moment apart."""
    following = scheduled + interval
    return following if following >= now else now + interval


def unix_path(listen: str) -> Path | None:
    return Path(listen[len("unix://") :]) if listen.startswith("unix://") else None


def serve(
    service: SidecarService,
    listen: str,
    socket_group: str | None = None,
    *,
    prepared: unix_socket.PreparedSocket | None = None,
    tls: listening.ServerTls | None = None,
) -> grpc.Server:
    """Start the server; a Unix socket gets mode 0600, or 0660 with a group.

    ``prepared``: the socket's place, made by :func:`unix_socket.prepare`
    beforehand (the command line does so while it still has the privileges
    to); made here otherwise. gRPC removes the socket it bound at stop, but
    that name is gone by then: the caller removes the published one
    (``prepared.remove()``). See :mod:`ebpf_sidecar.unix_socket`.

    ``tls``: TCP is served with mutual TLS (clients must present a
    certificate of ``tls.client_ca``), or in plaintext on a loopback
    address only; see :mod:`ebpf_sidecar.listen`, whose check runs here too
    so that no caller can open the sidecar to the network by mistake.
    """
    listening.check(listen, list(listening.TLS_FLAGS) if tls is not None else [])
    path = unix_path(listen)
    if path is not None and prepared is None:
        prepared = unix_socket.prepare(path, socket_group)
    workers = service.max_streams + UNARY_WORKERS
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    # grpcio-tools emits no annotations for the registration helper.
    pb_grpc.add_SidecarServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    if prepared is None:
        try:
            if tls is not None:
                creds = grpc.ssl_server_credentials(
                    [(tls.key, tls.cert_chain)],
                    root_certificates=tls.client_ca,
                    require_client_auth=True,
                )
                server.add_secure_port(listen, creds)
            else:
                server.add_insecure_port(listen)
        except RuntimeError as e:  # gRPC's "Failed to bind to address ..."
            raise listening.BindError(
                f"--listen {listen}: cannot listen there ({e}); is the port taken by "
                "another process, or the address not one of this host's?"
            ) from e
        server.start()
    else:
        try:
            # The mode comes from the umask at bind time (and the group from
            # the private folder's setgid bit): nothing is changed afterwards.
            old = os.umask(0o777 & ~prepared.mode)
            try:
                server.add_insecure_port(prepared.bind_address)
            finally:
                os.umask(old)
            server.start()
            prepared.publish()
        except BaseException:
            server.stop(grace=None)
            prepared.discard()
            raise
    log.info("listening on %s", listen)
    return server
