"""A flame graph for a person: N seconds of CPU samples as a pprof file.

    .venv/bin/python -m ebpf_sidecar.flamegraph --seconds 30 [--pid PID | --container ID]
        [--endpoint unix:///run/ebpf-sidecar/sidecar.sock] [--frequency-hz 99] -o cpu.pb.gz
    go tool pprof -http=127.0.0.1:8080 cpu.pb.gz      # VIEW > Flame graph

It asks the running sidecar (the one ``make run`` starts, or any other at
``--endpoint``) for the ``profile`` program's samples as OTLP profiles, as
the receiver does in a profiles pipeline, for ``--seconds``, and writes
them as a gzipped pprof profile (github.com/google/pprof's profile.proto)
that ``go tool pprof -http`` shows as a flame graph; ``--folded`` also writes
folded stacks (``comm;root;...;leaf count``) for other flame graph tools.
Without ``--pid`` or ``--container`` it is the whole node, each process's
stacks under its name. The samples are the same as the pipeline's: the
same program, symbolizer and OTLP encoding (a stream of its own: the
profiles of a collector's stream are not shared with it).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pp

from ebpf_sidecar.cli import DEFAULT_LISTEN
from ebpf_sidecar.symbols import KERNEL_MODULE
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc
from perftools.profiles import profile_pb2 as pprof

PROGRAM = "profile"


@dataclass(frozen=True)
class Stack:
    """One sample of the OTLP profiles, as names and modules, leaf first."""

    pid: int
    comm: str
    container_id: str
    frames: tuple[tuple[str, str, int], ...]  # (function, module, address)
    count: int


def _attr_value(d: pp.ProfilesDictionary, value: Any) -> str | int:
    if value.HasField("int_value"):
        return int(value.int_value)
    if value.HasField("string_value_strindex"):
        return str(d.string_table[value.string_value_strindex])
    return str(value.string_value)


def stacks(data: pp.ProfilesData) -> list[Stack]:
    """Every sample of a ProfilesData, resolved through its dictionary."""
    d = data.dictionary
    out = []
    for rp in data.resource_profiles:
        resource = {
            kv.key or d.string_table[kv.key_strindex]: _attr_value(d, kv.value)
            for kv in rp.resource.attributes
        }
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                for s in p.samples:
                    attrs = dict(resource)
                    for i in s.attribute_indices:
                        a = d.attribute_table[i]
                        attrs[d.string_table[a.key_strindex]] = _attr_value(d, a.value)
                    frames = []
                    for li in d.stack_table[s.stack_index].location_indices:
                        loc = d.location_table[li]
                        module = d.string_table[
                            d.mapping_table[loc.mapping_index].filename_strindex
                        ]
                        for line in loc.lines:
                            fn = d.function_table[line.function_index]
                            frames.append((d.string_table[fn.name_strindex], module, loc.address))
                    out.append(
                        Stack(
                            pid=int(attrs.get("process.pid", 0)),
                            comm=str(attrs.get("process.executable.name", "")),
                            container_id=str(attrs.get("container.id", "")),
                            frames=tuple(frames),
                            count=sum(s.values),
                        )
                    )
    return out


def to_pprof(samples: Iterable[Stack], period_ns: int, duration_ns: int, start_ns: int) -> bytes:
    """A pprof Profile (gzipped): sample types samples/count and cpu/nanoseconds,
    each process's name as its stacks' root frame."""
    prof = pprof.Profile()
    strings: dict[str, int] = {}

    def string(s: str) -> int:
        if s not in strings:
            strings[s] = len(prof.string_table)
            prof.string_table.append(s)
        return strings[s]

    string("")
    functions: dict[str, int] = {}
    mappings: dict[str, int] = {}
    locations: dict[tuple[str, str], int] = {}

    def location(name: str, module: str, address: int) -> int:
        key = (name, module)
        if key not in locations:
            if name not in functions:
                functions[name] = len(prof.function) + 1
                prof.function.add(id=functions[name], name=string(name), system_name=string(name))
            mapping_id = 0
            if module:
                if module not in mappings:
                    mappings[module] = len(prof.mapping) + 1
                    prof.mapping.add(id=mappings[module], filename=string(module))
                mapping_id = mappings[module]
            locations[key] = len(prof.location) + 1
            loc = prof.location.add(id=locations[key], mapping_id=mapping_id, address=address)
            loc.line.add(function_id=functions[name])
        return locations[key]

    prof.sample_type.add(type=string("samples"), unit=string("count"))
    prof.sample_type.add(type=string("cpu"), unit=string("nanoseconds"))
    prof.period_type.type = string("cpu")
    prof.period_type.unit = string("nanoseconds")
    prof.period = period_ns
    prof.time_nanos = start_ns
    prof.duration_nanos = duration_ns
    prof.default_sample_type = string("cpu")
    for s in samples:
        ids = [location(f, m, a) for f, m, a in s.frames]
        ids.append(location(s.comm or f"pid {s.pid}", "", 0))  # the root: the process
        sample = prof.sample.add(location_id=ids, value=[s.count, s.count * period_ns])
        sample.label.add(key=string("pid"), num=s.pid)
        if s.container_id:
            sample.label.add(key=string("container.id"), str=string(s.container_id))
    return gzip.compress(prof.SerializeToString())


def folded(samples: Iterable[Stack]) -> str:
    lines: dict[str, int] = {}
    for s in samples:
        names = [s.comm or f"pid {s.pid}", *(f for f, _, _ in reversed(s.frames))]
        line = ";".join(n.replace(";", ":") for n in names)
        lines[line] = lines.get(line, 0) + s.count
    return "".join(f"{k} {v}\n" for k, v in sorted(lines.items()))


def collect(
    endpoint: str, seconds: float, frequency_hz: int | None, per_container: bool = False
) -> tuple[list[Stack], int]:
    """The samples of ``seconds`` from the sidecar, and the period in ns."""
    params = {"frequency_hz": str(frequency_hz)} if frequency_hz else {}
    interval = min(seconds, 5.0)
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name=PROGRAM, parameters=params)],
        profiles=pb.ProfilesRequest(program=PROGRAM, per_container=per_container),
    )
    req.interval.FromNanoseconds(round(interval * 1e9))
    out: list[Stack] = []
    period = 0
    with grpc.insecure_channel(
        endpoint, options=[("grpc.max_receive_message_length", 256 << 20)]
    ) as channel:
        stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
        stream = stub.Stream(req, wait_for_ready=True, timeout=seconds + 120)
        deadline = None
        try:
            for snap in stream:
                if deadline is None:
                    # the first snapshot comes at once, when the program is attached
                    deadline = time.monotonic() + seconds
                    continue
                if snap.profiles:
                    data = pp.ProfilesData.FromString(snap.profiles)
                    out += stacks(data)
                    for rp in data.resource_profiles:
                        for sp in rp.scope_profiles:
                            for p in sp.profiles:
                                period = p.period
                if time.monotonic() >= deadline - interval / 2:
                    break
        finally:
            stream.cancel()
    return out, period


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ebpf-sidecar-flamegraph", description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default=DEFAULT_LISTEN, help="the sidecar (%(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long (%(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--pid", type=int, help="only this process")
    which.add_argument("--container", help="only this container (its id, or a prefix of it)")
    p.add_argument(
        "--frequency-hz",
        type=int,
        help="samples per second and CPU (default: the program's, 19; 99 gives a finer graph)",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("cpu.pb.gz"), help="%(default)s")
    p.add_argument("--folded", type=Path, help="also write folded stacks here")
    args = p.parse_args(argv)
    start = time.time_ns()
    try:
        samples, period = collect(args.endpoint, args.seconds, args.frequency_hz)
    except grpc.RpcError as e:
        print(
            f"the eBPF sidecar at {args.endpoint}: {e.code().name}: {e.details()}", file=sys.stderr
        )
        return 1
    if args.pid is not None:
        samples = [s for s in samples if s.pid == args.pid]
    if args.container:
        samples = [s for s in samples if s.container_id.startswith(args.container)]
    total = sum(s.count for s in samples)
    if not samples:
        print("no samples matched (is the process running on a CPU?)", file=sys.stderr)
        return 1
    args.output.write_bytes(to_pprof(samples, period, time.time_ns() - start, start))
    if args.folded:
        args.folded.write_text(folded(samples))
    user = [f for s in samples for f in s.frames if f[1] != KERNEL_MODULE and f[1]]
    named = [f for f in user if not f[0].startswith("0x") and "+0x" not in f[0]]
    if user and len(named) < len(user) / 2:
        print(
            f"{len(user) - len(named)} of {len(user)} user frames have no name: code without "
            "frame pointers or symbols, processes gone before their read, or a sidecar "
            "without CAP_SYS_PTRACE (docs/profiles.md)",
            file=sys.stderr,
        )
    print(
        f"{total} samples ({total * period / 1e9:.2f} CPU-seconds) in {args.output}; "
        f"view: go tool pprof -http=127.0.0.1:8080 {args.output}  (VIEW > Flame graph)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
