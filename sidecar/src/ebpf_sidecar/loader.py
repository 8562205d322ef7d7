"""``python -m ebpf_sidecar.loader``: compile, attach and pin program instances, then exit.

The sidecar runs one for the programs it has to compile (all of a stream's
at once, see ``ProgramManager.prepare``) and adopts what it pinned, as it
adopts a crashed predecessor's pins: clang and LLVM (about 60 MiB mapped,
~100 MiB more at the peak of a compile) are never loaded into the sidecar,
and die with this process. The hooks are BPF links pinned in bpffs, so they
stay attached after it exits.

BCC is imported once; then a worker is forked per instance, one per CPU
(at most :data:`MAX_WORKERS`) at a time (this process has no threads, so
forking is safe), and ends with ``os._exit`` as soon as its instance is
pinned, skipping LLVM's and Python's teardown.

Reads a JSON list of requests on stdin, each with ``manifest`` (the
program's manifest.yaml), ``parameters`` (as given), ``cflags`` (complete, as
the sidecar computed them for the instance key) and ``pin_dir``. Writes a
JSON list of replies in the same order: ``pid``, ``seconds`` (since the
loader started) and, if it failed, ``error`` with the compiler's or
verifier's output. Compiler output goes nowhere else: fd 2 is captured
around each compile.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from ebpf_sidecar import compile_cache, pins
from ebpf_sidecar.catalog import CatalogError, RequestError
from ebpf_sidecar.manifest import load_manifest
from ebpf_sidecar.programs import LoadError, load_fresh, pin


class NotLinked(Exception):
    """The hooks are not BPF links: the sidecar compiles the program itself."""


def load(request: dict[str, object]) -> None:
    """Compile, attach and pin as ``request`` says; LoadError if that fails."""
    program = load_manifest(Path(str(request["manifest"])))
    parameters = {str(k): str(v) for k, v in dict(request["parameters"]).items()}  # type: ignore[call-overload]
    values = program.parameter_values(parameters)
    cflags = [str(f) for f in request["cflags"]]  # type: ignore[attr-defined]
    loaded, _ = load_fresh(program, tuple(sorted(parameters.items())), 0, cflags, values)
    if loaded.links is None:
        # BCC attached the hooks itself (kprobes, kfuncs, LSM; or a kernel
        # without BPF links for tracepoints): they die with this process
        raise NotLinked(f"program {program.name!r}: its hooks cannot be pinned")
    try:
        layout = pin(loaded, pins.PinDir(Path(str(request["pin_dir"]))))
    except OSError as e:
        raise LoadError(f"program {program.name!r} was loaded but not pinned: {e}") from None
    if request.get("cache"):
        named = {f"map_{m}": loaded.bpf[m.encode()].map_fd for m in layout["maps"]}
        named |= {f"ringbuf_{s.spec.ring_buffer}": s.fd for s in loaded.events.values()}
        try:
            compile_cache.record(
                Path(str(request["cache"])), str(request["instance"]), loaded.bpf, named, layout
            )
        except OSError as e:  # loaded all the same; the next start compiles again
            print(f"not recorded in the compile cache: {e}", file=sys.stderr)


# Compilers at once: one per CPU, but no more than this many, since each
# holds tens of MiB of clang and LLVM heap in the sidecar container's memory
# cgroup (docs/reliability.md: the container's limit covers maps too).
MAX_WORKERS = 4
# A reply longer than a pipe holds would block its worker before it exits.
_REPLY_MAX = 32 * 1024


def _worker(request: dict[str, object], started: float, out: int) -> None:
    """In a forked worker: load, write the reply to ``out``, and end the process."""
    code = 0
    try:
        try:
            load(request)
            reply: dict[str, object] = {}
        except (LoadError, CatalogError, RequestError) as e:
            reply = {"error": str(e)[-_REPLY_MAX // 2 :]}
        except NotLinked as e:
            reply = {"error": str(e), "in_process": True}
        reply.update(pid=os.getpid(), seconds=time.monotonic() - started)
        os.write(out, json.dumps(reply).encode()[:_REPLY_MAX])
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def main() -> int:
    started = time.monotonic()
    requests = json.loads(sys.stdin.read())
    import bcc  # noqa: F401  (once, before forking: every worker shares it)

    replies: list[dict[str, object] | None] = [None] * len(requests)
    running: dict[int, tuple[int, int]] = {}  # pid -> (request index, pipe)
    todo = list(enumerate(requests))
    at_once = max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    while todo or running:
        while todo and len(running) < at_once:
            i, request = todo.pop(0)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _worker(request, started, w)
            os.close(w)
            running[pid] = (i, r)
        pid, status = os.wait()
        i, r = running.pop(pid)
        with os.fdopen(r, "rb") as f:
            raw = f.read()
        try:
            replies[i] = json.loads(raw)
        except ValueError:
            replies[i] = {
                "pid": pid,
                "seconds": time.monotonic() - started,
                "error": f"the loader's worker for {requests[i]['manifest']} died "
                f"(wait status {status}); see the sidecar's log",
            }
    print(json.dumps(replies), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
