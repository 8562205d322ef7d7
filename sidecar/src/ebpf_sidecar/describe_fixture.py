"""Writes what Describe answers for the repository's catalog, for the receiver's tests.

``python -m ebpf_sidecar.describe_fixture OUT --catalog bpf --programs-dir examples/programs
[--verdicts VERDICTS]``

With ``--verdicts``, also what the sidecar's judge (Plan) answers for each
program under every combination of its bool parameters: which maps they
compile in is the sidecar's rule alone, and the receiver's examples test
replays these verdicts instead of re-implementing it.

The receiver resolves every shipped YAML example against this file, so an
example naming a map or parameter the catalog lacks fails ``go test`` instead
of stopping a user's collector. No kernel is needed: the catalog is read from
the manifests and the kernel facts are fixed, so the output depends on the
repository only (``scripts/test.sh lint`` regenerates it and compares).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from google.protobuf import json_format

from ebpf_sidecar.kernel import KernelInfo
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.plan import plan
from ebpf_sidecar.server import describe
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

# Not the build machine's kernel: the fixture must not change from one
# machine to the next. These are the facts of the kernels the catalog is
# written for (BTF, raw tracepoints and perf events; no kprobes).
FIXTURE_KERNEL = KernelInfo(
    release="0.0.0-fixture",
    btf=True,
    raw_tracepoints=True,
    perf_events=True,
    kprobes=False,
    headers="/lib/modules/0.0.0-fixture/build",
)


def render(directories: list[Path]) -> str:
    """The DescribeResponse of a sidecar serving ``directories``, as stable protojson."""
    response = describe(load_catalog(directories), FIXTURE_KERNEL)
    # sort_keys and a fixed indent keep the diff of a manifest change small;
    # programs are already sorted by name and maps keep manifest order.
    return json_format.MessageToJson(response, indent=2, sort_keys=True) + "\n"


def render_verdicts(directories: list[Path]) -> str:
    """Plan's answer for every program under every combination of its bool
    parameters (the others at their defaults), as stable JSON lines."""
    catalog = load_catalog(directories)
    lines = []
    for name, program in sorted(catalog.programs.items()):
        bools = sorted(n for n, p in program.parameters.items() if p.type == "bool")
        for mask in range(1 << len(bools)):
            params = {b: "true" if mask >> i & 1 else "false" for i, b in enumerate(bools)}
            request = pb.StreamRequest(programs=[pb.ProgramRequest(name=name, parameters=params)])
            [planned] = plan(catalog, request).to_proto().programs
            compiled_in = [m.name for m in planned.maps]
            lines.append({"program": name, "parameters": params, "maps": compiled_in})
    return json.dumps(lines, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ebpf_sidecar.describe_fixture",
        description="Write the sidecar's Describe response for a catalog as protojson.",
    )
    p.add_argument("out", type=Path, help="the JSON file to write")
    p.add_argument("--catalog", type=Path, required=True, help="the built-in catalog (bpf/)")
    p.add_argument(
        "--programs-dir",
        type=Path,
        action="append",
        default=[],
        help="an extra directory of programs, as the sidecar's --programs-dir",
    )
    p.add_argument("--verdicts", type=Path, help="also write the judge's verdicts here")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render([args.catalog, *args.programs_dir]))
    if args.verdicts:
        args.verdicts.write_text(render_verdicts([args.catalog, *args.programs_dir]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
