"""Compiling, attaching and sharing BCC programs.

Streams that ask for the same program with the same parameters share one
loaded instance; it is detached when the last of them closes. A stream that
clears a map on read (delta temporality) gets an instance of its own, so its
deletes never take counts away from another stream. BCC attaches
TRACEPOINT_PROBE and RAW_TRACEPOINT_PROBE functions with perf-event and
raw-tracepoint fds that die with the process; here they are attached as BPF
links instead, which a manager with a pin root pins in bpffs with the maps
(see :mod:`ebpf_sidecar.pins`), so that a crashed sidecar's programs keep
counting and its successor adopts them: same programs, same maps, same
attach time.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ebpf_sidecar import includes, kernel, pins
from ebpf_sidecar.catalog import Catalog, Program
from ebpf_sidecar.events import EventSource, compiled_members
from ebpf_sidecar.maps import LayoutError, MapReader, PinnedTable

log = logging.getLogger(__name__)

# BCC prints compiler diagnostics and verifier logs on fd 2 from C++, so a
# compile points fd 2, process-wide, at a file to capture them; one compile
# at a time keeps captured output from interleaving. Log lines must never go
# to fd 2 (see log_stream), or other threads' lines would land in that file.
_COMPILE_LOCK = threading.Lock()
# The tail of compiler or verifier output returned to the receiver.
_ERROR_LINES = 25


class LoadError(RuntimeError):
    """The program does not compile or the verifier rejects it."""


class InstanceLimit(RuntimeError):
    """A program has as many loaded instances as the sidecar allows."""


# Instances of one program loaded at once: one per distinct parameter set,
# plus one per stream that clears maps on read. Each holds its own maps in
# kernel memory (docs/reliability.md has the sizes).
DEFAULT_MAX_INSTANCES = 4


@dataclass
class LoadedProgram:
    program: Program
    parameters: tuple[tuple[str, str], ...]
    bpf: Any
    attach_time_ns: int
    readers: dict[str, MapReader] = field(default_factory=dict)
    # its event types' ring buffers, by event name
    events: dict[str, EventSource] = field(default_factory=dict)
    users: int = 0
    # 0 for a shared instance, else a number unique to the one stream using it
    exclusive: int = 0
    # the BPF links attaching the programs (None: BCC attached them itself)
    links: list[int] | None = None
    # where the instance is pinned; None when it is not (it dies with us)
    pins: pins.PinDir | None = None
    # map fds of an adopted instance (a fresh one's belong to BCC)
    map_fds: list[int] = field(default_factory=list)
    adopted: bool = False

    def detach_hooks(self) -> None:
        """Detach the hooks, keeping programs and maps (the overhead benchmark's "off")."""
        if self.pins is not None or self.links is None:
            raise ValueError("only an unpinned instance attached with links can detach its hooks")
        for fd in self.links:
            os.close(fd)
        self.links = []

    def attach_hooks(self) -> None:
        """Attach the hooks :meth:`detach_hooks` detached."""
        if self.links:
            return
        self.links = _attach(self.bpf)

    def close(self) -> None:
        """Detach: unpin (if pinned), then close what this process holds."""
        for source in self.events.values():
            source.close()
        if self.pins is not None:
            self.pins.remove()
            self.pins = None
        for fd in [*(self.links or []), *self.map_fds]:
            os.close(fd)
        self.links, self.map_fds = [], []
        if self.bpf is not None:
            self.bpf.cleanup()


def log_stream() -> TextIO:
    """A stream to fd 2 as it is now, for log lines that a compile never captures.

    ``_captured_stderr`` points fd 2 elsewhere while a program compiles;
    a duplicate made before keeps pointing where fd 2 did, so lines other
    threads log meanwhile still arrive.
    """
    return os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what C code writes to fd 2 (the verifier log among it)."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


# Autoloaded function prefixes BCC attaches in ways that cannot be pinned
# (kprobes, trampolines): a program with any of them is attached by BCC.
# Perf event functions (perf_event__<event>) are attached by attach_perf_events,
# with BCC's perf event fds: they are not pinned either.
_UNLINKED_PREFIXES = (
    b"kprobe__",
    b"kretprobe__",
    b"kfunc__",
    b"kretfunc__",
    b"lsm__",
    b"perf_event__",
)


# The kernel's internal "not supported", which bpf() can return as it is.
_ENOTSUPP = 524


@functools.cache
def _linked_bpf() -> type:
    """BCC's BPF class, minus its attaching of tracepoints: they become links."""
    from bcc import BPF
    from bcc.libbcc import lib

    class LinkedBPF(BPF):  # type: ignore[misc]
        # (kind, tracepoint, program fd) for each hook; None if BCC attached them
        hooks: list[tuple[str, str, int]] | None

        def _trace_autoload(self) -> None:
            names = [
                lib.bpf_function_name(self.module, i)
                for i in range(lib.bpf_num_functions(self.module))
            ]
            if any(n.startswith(_UNLINKED_PREFIXES) for n in names):
                self.hooks = None
                super()._trace_autoload()
                return
            self.hooks = []
            for n in names:
                if n.startswith(b"tracepoint__"):
                    fn = self.load_func(n, BPF.TRACEPOINT)
                    tp = n[len(b"tracepoint__") :].replace(b"__", b":").decode()
                    self.hooks.append(("tracepoint", tp, fn.fd))
                elif n.startswith(b"raw_tracepoint__"):
                    fn = self.load_func(n, BPF.RAW_TRACEPOINT)
                    tp = n[len(b"raw_tracepoint__") :].decode()
                    self.hooks.append(("raw_tracepoint", tp, fn.fd))

    return LinkedBPF


def _attach(bpf: Any) -> list[int] | None:
    """Attach ``bpf``'s hooks as BPF links; their fds (None: BCC attached them).

    A kernel without BPF links for perf events (before 5.15) gets BCC's own
    attachments, which work as before but die with the process.
    """
    if bpf.hooks is None:
        return None
    links: list[int] = []
    try:
        for kind, target, prog_fd in bpf.hooks:
            if kind == "tracepoint":
                category, event = target.split(":")
                links.append(pins.link_tracepoint(prog_fd, category, event, kernel.tracefs()))
            else:
                links.append(pins.link_raw_tracepoint(prog_fd, target))
    except pins.PinError as e:
        for fd in links:
            os.close(fd)
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP):
            raise
        log.warning(
            "this kernel cannot attach tracepoints as BPF links (%s): BCC attaches them, "
            "and they will not survive a crash of the sidecar",
            e,
        )
        for kind, target, _ in bpf.hooks:
            if kind == "tracepoint":
                fn = b"tracepoint__" + target.replace(":", "__").encode()
                bpf.attach_tracepoint(tp=target.encode(), fn_name=fn)
            else:
                bpf.attach_raw_tracepoint(
                    tp=target.encode(), fn_name=b"raw_tracepoint__" + target.encode()
                )
        bpf.hooks = None
        return None
    except BaseException:
        for fd in links:
            os.close(fd)
        raise
    return links


def attach_perf_events(bpf: Any, program: Program, values: Mapping[str, int]) -> None:
    """Attach the program's ``perf_event:<event>`` hooks on every online CPU.

    The function ``perf_event__<event>`` (dashes as underscores) runs at the
    sample frequency of the program's profile frequency parameter; BCC opens
    one software perf event per CPU, closed with the BPF object.
    """
    from bcc import PerfSWConfig, PerfType

    events = {"cpu-clock": PerfSWConfig.CPU_CLOCK}
    for hook in program.hooks:
        kind, _, event = hook.partition(":")
        if kind != "perf_event":
            continue
        assert program.profile is not None  # the manifest checks it
        bpf.attach_perf_event(
            ev_type=PerfType.SOFTWARE,
            ev_config=events[event],
            fn_name=b"perf_event__" + event.replace("-", "_").encode(),
            sample_freq=values[program.profile.frequency_parameter],
            cpu=-1,
        )


def _full_cflags(program: Program, cflags: list[str], include_dirs: Sequence[Path]) -> list[str]:
    # The compiler echoes lines of files it fails on: it must read no file
    # outside the program's folder and the catalog's headers.
    try:
        includes.check(program.source, include_dirs)
    except includes.IncludeError as e:
        raise LoadError(f"program {program.name!r} was not compiled: {e}") from None
    # What this kernel has: tracepoint fields and BTF offsets, read only
    # when a program is actually compiled (shared instances skip this).
    try:
        tracepoint_flags = kernel.tracepoint_defines(list(program.hooks))
    except kernel.TracefsUnavailable as e:
        raise LoadError(f"program {program.name!r} needs tracepoint formats: {e}") from e
    return [
        *cflags,
        *(f"-I{d}" for d in include_dirs),
        *tracepoint_flags,
        *kernel.btf_defines(list(program.btf_offsets), list(program.btf_enums)),
    ]


def instance_key(program: Program, values: Mapping[str, int], cflags: Sequence[str]) -> str:
    """A name for one compiled instance: a changed program never gets an old one's name.

    It covers the parameter values, the compiler flags (which carry this
    kernel's tracepoint fields and BTF offsets), the source and every header
    it may include, and the BCC version.
    """
    import bcc

    h = hashlib.sha256()
    h.update(json.dumps([program.name, sorted(values.items()), list(cflags)]).encode())
    h.update(str(getattr(bcc, "__version__", "")).encode())
    for d in [program.source.parent, *(Path(f[2:]) for f in cflags if f.startswith("-I"))]:
        for f in sorted(d.glob("*.[ch]")) if d.is_dir() else []:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"{program.name}-{h.hexdigest()[:24]}"


def _compile(program: Program, cflags: list[str]) -> tuple[Any, float]:
    start = time.monotonic()
    with _COMPILE_LOCK, _captured_stderr() as output:
        try:
            bpf = _linked_bpf()(src_file=str(program.source).encode(), cflags=cflags)
        except Exception as e:
            error: Exception | None = e
        else:
            error = None
    if error is not None:
        tail = "\n".join(line for line in output if line.strip())
        tail = "\n".join(tail.splitlines()[-_ERROR_LINES:])
        raise LoadError(f"program {program.name!r} failed to load: {error}\n{tail}".rstrip())
    return bpf, time.monotonic() - start


class ProgramManager:
    """Loaded instances, shared between streams; pinned under ``pin_root`` if given.

    With a pin root, each shared instance is pinned under
    ``<pin_root>/<instance key>/`` and an instance a dead sidecar pinned
    there is adopted instead of loaded again, while its lease runs
    (``lease_s`` after its owner's last heartbeat). :meth:`start` removes
    expired pins and keeps refreshing the heartbeat of what this manager owns.
    """

    def __init__(
        self,
        catalog: Catalog,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        pin_root: Path | None = None,
        lease_s: float = pins.DEFAULT_LEASE_S,
    ) -> None:
        self.catalog = catalog
        self.max_instances = max_instances
        self.pin_root = pin_root
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, tuple[tuple[str, str], ...], int], LoadedProgram] = {}
        self._exclusive = itertools.count(1)
        self._stop = threading.Event()
        self._upkeep: threading.Thread | None = None

    def acquire(
        self, name: str, parameters: Mapping[str, str], exclusive: bool = False
    ) -> LoadedProgram:
        """A loaded instance of the program; ``exclusive``: one nobody else shares."""
        program = self.catalog.program(name)
        cflags = program.cflags(parameters)  # validates before anything loads
        values = program.parameter_values(parameters)
        key = (name, tuple(sorted(parameters.items())), next(self._exclusive) if exclusive else 0)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                self._check_room(name)
                loaded = self._load(program, key, cflags, values)
                self._loaded[key] = loaded
            loaded.users += 1
            return loaded

    def _load(
        self,
        program: Program,
        key: tuple[str, tuple[tuple[str, str], ...], int],
        cflags: list[str],
        values: Mapping[str, int],
    ) -> LoadedProgram:
        name = program.name
        full = _full_cflags(program, cflags, self.catalog.include_dirs)
        # Delta streams (exclusive) start from zero anyway: never pinned.
        pin_dir = None
        if self.pin_root is not None and not key[2]:
            pin_dir = pins.PinDir(self.pin_root / instance_key(program, values, full))
            try:
                adopted = self._adopt(program, key, values, pin_dir)
            except _NotPinnable:
                pin_dir = None
            else:
                if adopted is not None:
                    return adopted
        bpf, seconds = _compile(program, full)
        try:
            links = _attach(bpf)
            attach_perf_events(bpf, program, values)
        except Exception as e:  # OSError, or the plain Exception of a BCC attach
            bpf.cleanup()
            raise LoadError(f"program {name!r} was compiled but not attached: {e}") from None
        loaded = LoadedProgram(
            program=program,
            parameters=key[1],
            bpf=bpf,
            attach_time_ns=time.time_ns(),
            exclusive=key[2],
            links=links,
        )
        try:
            loaded.readers = _readers(program, values, lambda m: bpf[m.encode()])
            loaded.events = _event_sources(
                program,
                lambda rb: (bpf[rb.encode()].map_fd, compiled_members(bpf, rb)),
                lambda m: bpf[m.encode()],
            )
        except BaseException:
            loaded.close()
            raise
        if pin_dir is not None and links is not None:
            self._pin(loaded, pin_dir)
        log.info(
            "loaded program %s %s in %.2fs (hooks: %s)%s",
            name,
            dict(key[1]) or "",
            seconds,
            ", ".join(program.hooks),
            f"; pinned at {loaded.pins.path}" if loaded.pins else "",
        )
        return loaded

    def _pin(self, loaded: LoadedProgram, pin_dir: pins.PinDir) -> None:
        """Pin a fresh instance; a failure leaves it loaded, only unpinned."""
        from bcc import table as bcc_table
        from bcc.libbcc import lib

        bpf = loaded.bpf
        names = [
            *loaded.readers,
            *(r.dropped_name for r in loaded.readers.values() if r.dropped_name),
            *(e.dropped_counter for e in loaded.program.events.values() if e.dropped_counter),
        ]
        layout: dict[str, Any] = {
            "program": loaded.program.name,
            "maps": {},
            # ring buffer -> the event struct's members, as BCC described them
            "events": {s.spec.ring_buffer: s.members for s in loaded.events.values()},
        }
        for m in names:
            t = bpf[m.encode()]
            layout["maps"][m] = {
                "key": lib.bpf_table_key_desc(bpf.module, m.encode()).decode(),
                "leaf": lib.bpf_table_leaf_desc(bpf.module, m.encode()).decode(),
                "per_cpu": hasattr(t, "sLeaf"),
                "array": isinstance(t, bcc_table.ArrayBase),
                "max_entries": int(t.max_entries),
            }
        try:
            if pin_dir.path.exists():
                pin_dir.remove()  # expired or unusable: _adopt said so
            pin_dir.create(loaded.attach_time_ns, layout)
            for m in names:
                pin_dir.pin(bpf[m.encode()].map_fd, f"map_{m}")
            for source in loaded.events.values():
                pin_dir.pin(source.fd, f"ringbuf_{source.spec.ring_buffer}")
            for i, fd in enumerate(loaded.links or []):
                pin_dir.pin(fd, f"link_{i}")
        except OSError as e:
            pin_dir.remove()
            log.warning(
                "program %s is loaded but not pinned (%s): it will not survive a crash "
                "of the sidecar",
                loaded.program.name,
                e,
            )
            return
        loaded.pins = pin_dir

    def _adopt(
        self,
        program: Program,
        key: tuple[str, tuple[tuple[str, str], ...], int],
        values: Mapping[str, int],
        pin_dir: pins.PinDir,
    ) -> LoadedProgram | None:
        """The instance a dead sidecar pinned at ``pin_dir``, if it may be adopted."""
        if not pin_dir.path.is_dir():
            return None
        fds: list[int] = []
        try:
            meta = pin_dir.read_meta()
            if meta.owner_alive():
                log.warning(
                    "program %s is pinned at %s by a running process (pid %d), another "
                    "sidecar: loading a copy of our own that is not pinned",
                    program.name,
                    pin_dir.path,
                    meta.pid,
                )
                pin_dir.close()
                raise _NotPinnable
            age = (time.time_ns() - meta.heartbeat_ns) / 1e9
            if age > self.lease_s:
                log.info(
                    "pins of %s at %s expired (%.0fs without heartbeat, lease %.0fs): "
                    "loading it fresh",
                    program.name,
                    pin_dir.path,
                    age,
                    self.lease_s,
                )
                pin_dir.remove()
                return None
            layout = pin_dir.layout()
            tables: dict[str, PinnedTable] = {}
            for m, desc in layout["maps"].items():
                fd = pin_dir.get(f"map_{m}")
                fds.append(fd)
                tables[m] = PinnedTable.from_desc(fd, desc)
            readers = _readers(program, values, lambda m: tables[m])
            members = layout.get("events", {})
            ring_fds = {}
            for rb in members:
                ring_fds[rb] = pin_dir.get(f"ringbuf_{rb}")
                fds.append(ring_fds[rb])
            sources = _event_sources(
                program, lambda rb: (ring_fds[rb], members[rb]), lambda m: tables[m]
            )
            # Held like a fresh instance's links (the programs show as ours
            # in fdinfo and bpftool); the pins keep them attached either way.
            links = []
            for link in sorted(pin_dir.path.glob("link_*")):
                links.append(pin_dir.get(link.name))
                fds.append(links[-1])
            pin_dir.write_owner()
        except _NotPinnable:
            raise
        except (OSError, KeyError, ValueError, LoadError) as e:
            for fd in fds:
                os.close(fd)
            log.warning(
                "cannot adopt the pinned instance of %s at %s (%s): loading it fresh",
                program.name,
                pin_dir.path,
                e,
            )
            pin_dir.remove()
            return None
        log.info(
            "adopted program %s %s pinned at %s (attached %.1fs ago)",
            program.name,
            dict(key[1]) or "",
            pin_dir.path,
            (time.time_ns() - meta.attach_time_ns) / 1e9,
        )
        return LoadedProgram(
            program=program,
            parameters=key[1],
            bpf=None,
            attach_time_ns=meta.attach_time_ns,
            readers=readers,
            events=sources,
            links=links,
            pins=pin_dir,
            map_fds=[fd for fd in fds if fd not in links],
            adopted=True,
        )

    def _check_room(self, name: str) -> None:
        instances = [k for k in self._loaded if k[0] == name]
        if len(instances) < self.max_instances:
            return
        in_use = "; ".join(
            ", ".join(f"{k}={v}" for k, v in params) or "defaults"
            for _, params, exclusive in instances
            if not exclusive
        )
        raise InstanceLimit(
            f"program {name!r} has {len(instances)} loaded instances, the most the sidecar "
            f"allows (--max-instances-per-program {self.max_instances}): one per distinct "
            "parameter set and one per stream that clears maps on read. Use parameters a "
            f"loaded instance has ({in_use or 'none shared'}), or raise "
            "--max-instances-per-program"
        )

    def release(self, loaded: LoadedProgram) -> None:
        with self._lock:
            loaded.users -= 1
            if loaded.users > 0:
                return
            key = (loaded.program.name, loaded.parameters, loaded.exclusive)
            self._loaded.pop(key, None)
            loaded.close()
            log.info("detached program %s (no stream uses it)", loaded.program.name)

    def loaded(self) -> list[LoadedProgram]:
        with self._lock:
            return list(self._loaded.values())

    def start(self) -> None:
        """Remove expired pins now, then keep heartbeats fresh and sweep in the background."""
        if self.pin_root is None:
            return
        self._sweep()
        self._upkeep = threading.Thread(target=self._keep_up, name="pins", daemon=True)
        self._upkeep.start()

    def _sweep(self) -> None:
        assert self.pin_root is not None
        with self._lock:
            owned = {lp.pins.path.name for lp in self._loaded.values() if lp.pins}
            try:
                pins.sweep(self.pin_root, self.lease_s, owned)
            except OSError as e:
                log.warning("sweeping expired pins under %s failed: %s", self.pin_root, e)

    def _keep_up(self) -> None:
        while not self._stop.wait(pins.HEARTBEAT_S):
            with self._lock:
                for lp in self._loaded.values():
                    if lp.pins is not None:
                        try:
                            lp.pins.heartbeat()
                        except OSError as e:
                            log.warning("heartbeat of %s failed: %s", lp.pins.path, e)
            self._sweep()

    def close(self) -> None:
        """Detach everything and remove its pins: a clean stop leaves nothing behind."""
        self._stop.set()
        if self._upkeep is not None:
            self._upkeep.join()
        with self._lock:
            for loaded in self._loaded.values():
                loaded.close()
            self._loaded.clear()
        if self.pin_root is not None:
            with contextlib.suppress(OSError):  # not empty: another sidecar's pins
                self.pin_root.rmdir()


class _NotPinnable(Exception):
    """The instance is pinned by a living process: load an unpinned copy."""


def _readers(
    program: Program, values: Mapping[str, int], table: Callable[[str], Any]
) -> dict[str, MapReader]:
    """A reader per map the parameters compile in, checked against the manifest."""
    readers: dict[str, MapReader] = {}
    try:
        for spec in program.maps.values():
            if not program.map_enabled(spec, values):
                continue
            dropped = spec.dropped_counter
            readers[spec.name] = MapReader(
                table(spec.name),
                spec,
                f"{program.source.parent}/manifest.yaml maps ({spec.name})",
                spec.size.entries(values),
                table(dropped) if dropped else None,
                dropped_name=dropped,
            )
    except LayoutError as e:
        raise LoadError(f"program {program.name!r} does not match its manifest: {e}") from None
    return readers


def _event_sources(
    program: Program,
    ring_buffer: Callable[[str], tuple[int, list[str]]],
    table: Callable[[str], Any],
) -> dict[str, EventSource]:
    """An event source per event type: its ring buffer's fd and struct, checked."""
    sources: dict[str, EventSource] = {}
    try:
        for spec in program.events.values():
            fd, members = ring_buffer(spec.ring_buffer)
            sources[spec.name] = EventSource(
                spec,
                fd,
                members,
                table(spec.dropped_counter) if spec.dropped_counter else None,
                f"{program.source.parent}/manifest.yaml events ({spec.name})",
            )
    except (LayoutError, KeyError) as e:
        raise LoadError(f"program {program.name!r} does not match its manifest: {e}") from None
    return sources
