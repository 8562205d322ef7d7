"""``python -m ebpf_sidecar.loader``: compile, attach and pin one program instance, then exit.

The sidecar runs one per program it compiles (several at once, see
``ProgramManager.prepare``) and adopts what it pinned, as it adopts a
crashed predecessor's pins: clang and LLVM (tens of MiB mapped, ~100 MiB at
the peak of a compile) are never loaded into the sidecar, and die with this
process. The hooks are BPF links pinned in bpffs, so they stay attached
after it exits.

Reads one JSON request on stdin: ``manifest`` (the program's manifest.yaml),
``parameters`` (as given), ``cflags`` (complete, as the sidecar computed them
for the instance key) and ``pin_dir``. Writes one JSON reply on stdout:
``{}``, or ``{"error": "..."}`` with the compiler's or verifier's output.
Compiler output goes nowhere else: fd 2 is captured around the compile.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ebpf_sidecar import pins
from ebpf_sidecar.catalog import CatalogError, RequestError
from ebpf_sidecar.manifest import load_manifest
from ebpf_sidecar.programs import LoadError, load_fresh, pin


def load(request: dict[str, object]) -> None:
    """Compile, attach and pin as ``request`` says; LoadError if that fails."""
    program = load_manifest(Path(str(request["manifest"])))
    parameters = {str(k): str(v) for k, v in dict(request["parameters"]).items()}  # type: ignore[call-overload]
    values = program.parameter_values(parameters)
    cflags = [str(f) for f in request["cflags"]]  # type: ignore[attr-defined]
    loaded, _ = load_fresh(program, tuple(sorted(parameters.items())), 0, cflags, values)
    if loaded.links is None:
        raise LoadError(
            f"program {program.name!r}: its hooks cannot be attached as BPF links here, "
            "so they would not outlive the loader"
        )
    try:
        pin(loaded, pins.PinDir(Path(str(request["pin_dir"]))))
    except OSError as e:
        raise LoadError(f"program {program.name!r} was loaded but not pinned: {e}") from None


def main() -> int:
    try:
        load(json.loads(sys.stdin.read()))
    except (LoadError, CatalogError, RequestError) as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 0
    print(json.dumps({}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
