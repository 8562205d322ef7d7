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
import ctypes
import errno
import functools
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ebpf_sidecar import compile_cache, cost, includes, kernel, pins
from ebpf_sidecar.catalog import Catalog, MapSpec, Program, RequestError
from ebpf_sidecar.events import EventSource, compiled_members
from ebpf_sidecar.maps import LayoutError, MapReader, PinnedTable, flat_type
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

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
    # its BPF programs' fds by hook, for their run-time statistics (those of
    # an instance BCC compiled here belong to BCC, pinned ones to this instance)
    progs: dict[str, int] = field(default_factory=dict)

    def costs(self) -> list[pb.ProgramCost]:
        """What each of its BPF programs cost in the kernel since it was loaded."""
        return [
            cost.program_cost(self.program.name, hook, self.attach_time_ns, fd)
            for hook, fd in sorted(self.progs.items())
        ]

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
        for fd in [
            *(self.links or []),
            *self.map_fds,
            *(self.progs.values() if self.bpf is None else []),  # else BCC's
        ]:
            os.close(fd)
        self.links, self.map_fds, self.progs = [], [], {}
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


@functools.cache
def _bcc_version() -> str:
    """BCC's version, read without importing it (which would load LLVM here)."""
    spec = importlib.util.find_spec("bcc")
    folder = spec.submodule_search_locations if spec is not None else None
    if not folder:
        return ""
    text = (Path(next(iter(folder))) / "version.py").read_text()
    found = re.search(r"""__version__\s*=\s*['"]([^'"]*)['"]""", text)
    return found.group(1) if found else ""


def instance_key(program: Program, values: Mapping[str, int], cflags: Sequence[str]) -> str:
    """A name for one compiled instance: a changed program never gets an old one's name.

    It covers the parameter values, the compiler flags (which carry this
    kernel's tracepoint fields and BTF offsets), the source and every header
    it may include, and the BCC version.
    """
    h = hashlib.sha256()
    h.update(json.dumps([program.name, sorted(values.items()), list(cflags)]).encode())
    h.update(_bcc_version().encode())
    for d in [program.source.parent, *(Path(f[2:]) for f in cflags if f.startswith("-I"))]:
        for f in sorted(d.glob("*.[ch]")) if d.is_dir() else []:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"{program.name}-{h.hexdigest()[:24]}"


def _trim_heap() -> None:
    """Give the memory LLVM freed after a compile back to the system.

    Compiling leaves tens of MiB of freed heap that glibc keeps for reuse;
    a sidecar compiles only when a stream starts, so the memory would sit
    idle in its RSS (the loader's, or the sidecar's when it compiles in-process).
    """
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


def _compile(program: Program, cflags: list[str]) -> tuple[Any, float]:
    start = time.monotonic()
    with _COMPILE_LOCK, _captured_stderr() as output:
        try:
            bpf = _linked_bpf()(src_file=str(program.source).encode(), cflags=cflags)
        except Exception as e:
            error: Exception | None = e
        else:
            error = None
    _trim_heap()
    if error is not None:
        tail = "\n".join(line for line in output if line.strip())
        tail = "\n".join(tail.splitlines()[-_ERROR_LINES:])
        raise LoadError(f"program {program.name!r} failed to load: {error}\n{tail}".rstrip())
    return bpf, time.monotonic() - start


def pin(loaded: LoadedProgram, pin_dir: pins.PinDir) -> dict[str, Any]:
    """Pin a freshly compiled instance's links, maps and layout at ``pin_dir``.

    The layout holds BCC's descriptions of each map's key and value types and
    the same types flattened (:func:`ebpf_sidecar.maps.flat_type`), which an
    adopting process rebuilds without loading BCC. On failure (OSError)
    nothing stays pinned. Returns the layout it pinned.
    """
    from bcc import table as bcc_table
    from bcc.libbcc import lib

    bpf = loaded.bpf
    names = [
        *loaded.readers,
        *(r.dropped_name for r in loaded.readers.values() if r.dropped_name),
        *(m for r in loaded.readers.values() for ms in r.spec.side_maps.values() for m in ms),
        *(e.dropped_counter for e in loaded.program.events.values() if e.dropped_counter),
    ]
    layout: dict[str, Any] = {
        "program": loaded.program.name,
        "maps": {},
        # ring buffer -> the event struct's members, as BCC described them
        "events": {s.spec.ring_buffer: s.members for s in loaded.events.values()},
        # pinned as prog_<n>, for their run-time statistics: a successor
        # without CAP_SYS_ADMIN cannot open them by id from the links
        "progs": sorted(loaded.progs),
    }
    for m in names:
        t = bpf[m.encode()]
        per_cpu = hasattr(t, "sLeaf")
        layout["maps"][m] = {
            "key": lib.bpf_table_key_desc(bpf.module, m.encode()).decode(),
            "leaf": lib.bpf_table_leaf_desc(bpf.module, m.encode()).decode(),
            "key_type": flat_type(t.Key),
            "leaf_type": flat_type(t.sLeaf if per_cpu else t.Leaf),
            "per_cpu": per_cpu,
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
        for i, hook in enumerate(layout["progs"]):
            pin_dir.pin(loaded.progs[hook], f"prog_{i}")
    except OSError:
        pin_dir.remove()
        raise
    loaded.pins = pin_dir
    return layout


def load_fresh(
    program: Program,
    parameters: tuple[tuple[str, str], ...],
    exclusive: int,
    full: list[str],
    values: Mapping[str, int],
) -> tuple[LoadedProgram, float]:
    """Compile, load and attach ``program`` in this process; and how long it took."""
    bpf, seconds = _compile(program, full)
    try:
        links = _attach(bpf)
        attach_perf_events(bpf, program, values)
    except Exception as e:  # OSError, or the plain Exception of a BCC attach
        bpf.cleanup()
        raise LoadError(f"program {program.name!r} was compiled but not attached: {e}") from None
    loaded = LoadedProgram(
        program=program,
        parameters=parameters,
        bpf=bpf,
        attach_time_ns=time.time_ns(),
        exclusive=exclusive,
        links=links,
        progs={cost.hook_of(n.decode()): f.fd for n, f in bpf.funcs.items()},
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
    return loaded, seconds


@dataclass
class LoaderResult:
    pid: int  # of the process that compiled
    seconds: float  # from starting the loader to this instance pinned
    error: str | None = None
    # the hooks are not BPF links (kprobes, say): to be compiled in the sidecar
    in_process: bool = False


# program, parameters, complete cflags, pin folder, instance key
LoaderJob = tuple[Program, dict[str, str], list[str], pins.PinDir, str]


def run_loaders(jobs: Sequence[LoaderJob], cache: Path | None = None) -> list[LoaderResult]:
    """Compile, attach and pin instances in a loader process (:mod:`ebpf_sidecar.loader`).

    Each job is (program, parameters, complete cflags, pin folder, instance key). The
    loader imports BCC once and forks a worker per instance, one per CPU (up to 4) at
    a time: the compiler's memory and time live and die there, and this
    process never maps LLVM. What the loader pinned is adopted afterwards.
    ``cache``: where the loader records what it loaded (:mod:`ebpf_sidecar.compile_cache`).
    """
    request = [
        {
            "manifest": str(program.source.parent / "manifest.yaml"),
            "parameters": parameters,
            "cflags": full,
            "pin_dir": str(pin_dir.path),
            "cache": str(cache) if cache is not None else None,
            "instance": instance,
        }
        for program, parameters, full, pin_dir, instance in jobs
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebpf_sidecar.loader"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    out, err = proc.communicate(json.dumps(request).encode())
    try:
        replies = json.loads(out)
        assert len(replies) == len(jobs)
    except (ValueError, AssertionError):
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-_ERROR_LINES:])
        seconds = time.monotonic() - started
        return [
            LoaderResult(
                proc.pid,
                seconds,
                f"program {job[0].name!r}: its loader process failed (exit status "
                f"{proc.returncode})\n{tail}".rstrip(),
            )
            for job in jobs
        ]
    return [
        LoaderResult(r["pid"], r["seconds"], r.get("error"), bool(r.get("in_process")))
        for r in replies
    ]


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
        loader: bool | None = None,
        compile_cache: Path | None = None,
    ) -> None:
        self.catalog = catalog
        # Pinned instances compile in loader processes; by default when root,
        # whose capabilities an exec keeps (the bounding set's, after the drop).
        self.loader = (os.geteuid() == 0) if loader is None else loader
        self._loader_lock = threading.Lock()  # _loader_results
        self._loading = threading.Lock()  # loaders and loads (see prepare)
        self._loader_results: dict[str, LoaderResult] = {}
        # where loaders record what they compiled, for the next start
        # (:mod:`ebpf_sidecar.compile_cache`); used with loaders only
        self.compile_cache = compile_cache if self.loader else None
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
        with self._loading:
            return self._load_now(program, key, cflags, values)

    def _load_now(
        self,
        program: Program,
        key: tuple[str, tuple[tuple[str, str], ...], int],
        cflags: list[str],
        values: Mapping[str, int],
    ) -> LoadedProgram:
        name = program.name
        full = _full_cflags(program, cflags, self.catalog.include_dirs)
        # Delta streams (exclusive) start from zero anyway: never pinned
        # (a loader pins them, but only until they are adopted).
        pin_dir = None
        if self.pin_root is not None and key[2] and self._in_loader(program):
            instance = instance_key(program, values, full)
            own = pins.PinDir(self.pin_root / f"{instance}-{os.getpid()}-{key[2]}")
            loaded = self._load_in_loader(program, key, values, full, own, instance)
            if loaded is not None:
                own.remove()  # the links and maps stay, held by our fds
                loaded.pins = None
                return loaded
        if self.pin_root is not None and not key[2]:
            pin_dir = pins.PinDir(self.pin_root / instance_key(program, values, full))
            with self._loader_lock:
                prepared = pin_dir.path.name in self._loader_results
            if prepared:  # by our loader, in prepare(): ours, not adopted
                loaded = self._load_in_loader(
                    program, key, values, full, pin_dir, pin_dir.path.name
                )
                if loaded is not None:
                    return loaded
            try:
                adopted = self._adopt(program, key, values, pin_dir)
            except _NotPinnable:
                pin_dir = None
            else:
                if adopted is not None:
                    return adopted
                if self._in_loader(program):
                    loaded = self._load_in_loader(
                        program, key, values, full, pin_dir, pin_dir.path.name
                    )
                    if loaded is not None:
                        return loaded
        loaded, seconds = load_fresh(program, key[1], key[2], full, values)
        if pin_dir is not None and loaded.links is not None:
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

    def _in_loader(self, program: Program) -> bool:
        """Whether a loader process compiles ``program`` (pinned instances only).

        Perf event hooks (the profile program) are attached with BCC's perf
        event fds, which die with the process that opened them: those
        programs compile here.
        """
        if not self.loader:
            return False
        return not any(h.partition(":")[0] == "perf_event" for h in program.hooks)

    def _load_in_loader(
        self,
        program: Program,
        key: tuple[str, tuple[tuple[str, str], ...], int],
        values: Mapping[str, int],
        full: list[str],
        pin_dir: pins.PinDir,
        instance: str,
    ) -> LoadedProgram | None:
        """Load from the compile cache or in a loader process, then adopt what
        was pinned; None: compile here."""
        with self._loader_lock:
            result = self._loader_results.pop(pin_dir.path.name, None)
        if result is not None and result.error is None and not pin_dir.path.is_dir():
            result = None  # prepared long ago, and its pins were swept since
        if result is None:
            result = self._from_cache(instance, pin_dir)
        if result is None:
            [result] = run_loaders(
                [(program, dict(key[1]), full, pin_dir, instance)], self.compile_cache
            )
        if result.in_process:
            return None
        if result.error is not None:
            raise LoadError(result.error)
        adopted = self._adopt(program, key, values, pin_dir, fresh=True)
        if adopted is None:
            log.warning(
                "program %s: the loader's pins cannot be adopted; compiling here", program.name
            )
            return None
        log.info(
            "loaded program %s %s in %.2fs %s (hooks: %s)%s",
            program.name,
            dict(key[1]) or "",
            result.seconds,
            "from the compile cache"
            if result.pid == os.getpid()
            else f"by loader process {result.pid}",
            ", ".join(program.hooks),
            "" if key[2] else f"; pinned at {pin_dir.path}",
        )
        return adopted

    def prepare(self, wanted: Sequence[tuple[str, Mapping[str, str], bool]]) -> None:
        """Compile, concurrently, what :meth:`acquire` of each (name, parameters,
        exclusive) would compile one after another.

        Each program that would be compiled in a loader process is compiled
        now, all in one loader, one per CPU at a time; the :meth:`acquire` calls
        that follow adopt their pins (or raise their errors). Nothing else is
        done ahead: a request that fails validation fails in its acquire.
        """
        if self.pin_root is None or not self.loader:
            return
        candidates: list[LoaderJob] = []
        for name, parameters, exclusive in wanted:
            if exclusive:
                continue
            try:
                program = self.catalog.program(name)
                cflags = program.cflags(parameters)
                values = program.parameter_values(parameters)
                key = (name, tuple(sorted(parameters.items())), 0)
                with self._lock:
                    if key in self._loaded:
                        continue
                if not self._in_loader(program):
                    continue
                full = _full_cflags(program, cflags, self.catalog.include_dirs)
            except (RequestError, LoadError):
                continue  # acquire says so
            instance = instance_key(program, values, full)
            pin_dir = pins.PinDir(self.pin_root / instance)
            candidates.append((program, dict(parameters), full, pin_dir, instance))
        # One stream's loaders at a time, and never next to a _load: two
        # loaders must not compile the same instance into one pin folder.
        # (Not under self._lock, which _load holds while it waits for this.)
        with self._loading:
            jobs: dict[str, LoaderJob] = {}
            for job in candidates:
                pin_dir, instance = job[3], job[4]
                if pin_dir.path.exists() or instance in jobs:
                    continue  # loaded or prepared meanwhile, or not ours to compile
                cached = self._from_cache(instance, pin_dir)
                if cached is not None:
                    with self._loader_lock:
                        self._loader_results[instance] = cached
                    continue
                jobs[instance] = job
            if len(jobs) < 2:
                return  # nothing to do at once: acquire runs the one loader itself
            results = run_loaders(list(jobs.values()), self.compile_cache)
            with self._loader_lock:
                self._loader_results.update(zip(jobs, results, strict=True))

    def _from_cache(self, instance: str, pin_dir: pins.PinDir) -> LoaderResult | None:
        """``instance`` loaded from the compile cache and pinned at ``pin_dir``; None: a miss."""
        if self.compile_cache is None:
            return None
        try:
            seconds = compile_cache.load(self.compile_cache, instance, pin_dir)
        except compile_cache.CacheMiss:
            return None
        return LoaderResult(os.getpid(), seconds)

    def _pin(self, loaded: LoadedProgram, pin_dir: pins.PinDir) -> None:
        """Pin a fresh instance; a failure leaves it loaded, only unpinned."""
        try:
            pin(loaded, pin_dir)
        except OSError as e:
            log.warning(
                "program %s is loaded but not pinned (%s): it will not survive a crash "
                "of the sidecar",
                loaded.program.name,
                e,
            )
            return

    def _adopt(
        self,
        program: Program,
        key: tuple[str, tuple[tuple[str, str], ...], int],
        values: Mapping[str, int],
        pin_dir: pins.PinDir,
        fresh: bool = False,
    ) -> LoadedProgram | None:
        """The instance a dead sidecar pinned at ``pin_dir``, if it may be adopted.

        ``fresh``: our own loader process pinned it just now (not "adopted").
        """
        if not pin_dir.path.is_dir():
            return None
        fds: list[int] = []
        try:
            meta = pin_dir.read_meta()
            if meta.owner_alive() and not fresh:  # fresh: made for us (cache: by us)
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
            # (pins of a sidecar from before run-time statistics have none)
            progs = {}
            for i, hook in enumerate(layout.get("progs", [])):
                progs[hook] = pin_dir.get(f"prog_{i}")
                fds.append(progs[hook])
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
        log.log(
            logging.DEBUG if fresh else logging.INFO,
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
            exclusive=key[2],
            readers=readers,
            events=sources,
            links=links,
            pins=pin_dir,
            map_fds=[fd for fd in fds if fd not in links and fd not in progs.values()],
            adopted=not fresh,
            progs=progs,
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
                spec.entries(values),
                table(dropped) if dropped else None,
                dropped_name=dropped,
                **_side_tables(program, spec, table),
            )
    except LayoutError as e:
        raise LoadError(f"program {program.name!r} does not match its manifest: {e}") from None
    return readers


def _side_tables(
    program: Program, spec: MapSpec, table: Callable[[str], Any]
) -> dict[str, list[Any]]:
    """The further maps a map's options name (written_keys, write_behind), by
    option (MapReader's keyword arguments), in the order MapSpec.side_maps lists them."""
    tables: dict[str, list[Any]] = {}
    for option, names in spec.side_maps.items():
        try:
            tables[option] = [table(m) for m in names]
        except KeyError as e:
            raise LoadError(
                f"program {program.name!r}: map {spec.name!r} has {option} "
                f"{getattr(spec, option)!r}, but the program defines no map {e}; define "
                f"{', '.join(names)} (bpf/cpu/cpu.c shows how) or drop {option}"
            ) from None
    return tables


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
