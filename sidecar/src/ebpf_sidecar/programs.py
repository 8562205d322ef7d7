"""Compiling, attaching and sharing BCC programs.

Streams that ask for the same program with the same parameters share one
loaded instance; it is detached when the last of them closes. A stream that
clears a map on read (delta temporality) gets an instance of its own, so its
deletes never take counts away from another stream. BCC attaches
TRACEPOINT_PROBE and RAW_TRACEPOINT_PROBE functions itself when it loads the
program, so loading is attaching.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ebpf_sidecar import includes, kernel
from ebpf_sidecar.catalog import Catalog, Program
from ebpf_sidecar.maps import LayoutError, MapReader

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
    users: int = 0
    # 0 for a shared instance, else a number unique to the one stream using it
    exclusive: int = 0


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


def _compile(
    program: Program, cflags: list[str], include_dirs: Sequence[Path]
) -> tuple[Any, float]:
    from bcc import BPF

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
    cflags = [
        *cflags,
        *(f"-I{d}" for d in include_dirs),
        *tracepoint_flags,
        *kernel.btf_defines(list(program.btf_offsets)),
    ]
    start = time.monotonic()
    with _COMPILE_LOCK, _captured_stderr() as output:
        try:
            bpf = BPF(src_file=str(program.source).encode(), cflags=cflags)
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
    def __init__(self, catalog: Catalog, max_instances: int = DEFAULT_MAX_INSTANCES) -> None:
        self.catalog = catalog
        self.max_instances = max_instances
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, tuple[tuple[str, str], ...], int], LoadedProgram] = {}
        self._exclusive = itertools.count(1)

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
                bpf, seconds = _compile(program, cflags, self.catalog.include_dirs)
                loaded = LoadedProgram(
                    program=program,
                    parameters=key[1],
                    bpf=bpf,
                    attach_time_ns=time.time_ns(),
                    exclusive=key[2],
                )
                try:
                    for spec in program.maps.values():
                        if not program.map_enabled(spec, values):
                            continue
                        dropped = spec.dropped_counter
                        loaded.readers[spec.name] = MapReader(
                            bpf[spec.name.encode()],
                            spec,
                            f"{program.source.parent}/manifest.yaml maps ({spec.name})",
                            spec.size.entries(values),
                            bpf[dropped.encode()] if dropped else None,
                        )
                except LayoutError as e:
                    bpf.cleanup()
                    raise LoadError(f"program {name!r} does not match its manifest: {e}") from None
                except Exception:
                    bpf.cleanup()
                    raise
                self._loaded[key] = loaded
                log.info(
                    "loaded program %s %s in %.2fs (hooks: %s)",
                    name,
                    dict(key[1]) or "",
                    seconds,
                    ", ".join(program.hooks),
                )
            loaded.users += 1
            return loaded

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
            loaded.bpf.cleanup()
            log.info("detached program %s (no stream uses it)", loaded.program.name)

    def loaded(self) -> list[LoadedProgram]:
        with self._lock:
            return list(self._loaded.values())

    def close(self) -> None:
        with self._lock:
            for loaded in self._loaded.values():
                loaded.bpf.cleanup()
            self._loaded.clear()
