"""The snapshot path at node scale: a benchmark that prints a table (no assertions).

A map shaped like the cpu program's ``process_cpu`` (32-byte key: pid, comm,
cgroup id; per-CPU value of three u64) is created in the real kernel with
``--capacity`` entries (1 M by default) and filled from user space (by a
forked process, as the kernel fills it in production) with 10 k, 100 k and
1 M entries: distinct pids, 200 comms, and the cgroup ids of 300
kubelet-shaped cgroups (100 pods of 3 containers, made by the benchmark
under a cgroup of its own and removed at the end), so the cgroup,
container_id and pod_uid decoders resolve real paths. For each size, in a
child process of its own:

- sidecar read: the median wall time of ``MapReader.read()`` (batch lookup,
  columns, decoders, per-CPU sums, the exited-process reaper, filling the
  columns; packed columns where the tree has them, as the receiver asks)
  over ``--reads`` reads after one warm-up read;
- wire size: the serialized ``Snapshot``, as the sidecar sends it;
- sidecar peak RSS: the child's peak RSS (VmHWM, reset after the map was
  filled) while reading and serializing;
- receiver: ``go test -bench BenchmarkSnapshot`` (receiver-go) on that very
  snapshot: unmarshal, and conversion with the cpu program's default metrics
  under the default cardinality limit and with every series admitted, in
  time per snapshot and allocations per entry, and the benchmark process's
  peak RSS;
- end to end: read + serialize + unmarshal + convert (default limit).

With ``--changed PCT`` (default 1), a second table: the map read by a
changes-only stream (``MapReader.read(changes=...)``) after PCT % of the
entries changed since its previous read. Runs without changes-only support
print only the first table.

    .venv/bin/python bench/snapshot.py [--sizes 10000,100000,1000000] [--reads 3]
    git archive main | tar -x -C /tmp/base   # then, before and after in one run:
    .venv/bin/python bench/snapshot.py --compare /tmp/base

``--compare TREE`` measures another source tree of the project alike
(its sidecar package and its receiver, with this benchmark's Go file copied
in), size by size interleaved with this one, and labels the rows.

Needs root. See docs/overhead.md ("Snapshot path") for results.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECEIVER = ROOT / "receiver-go"

SOURCE = """
struct process_key {
    u32 pid;
    char comm[16];
    u64 cgroup_id;
};
struct process_value {
    u64 oncpu_ns;
    u64 voluntary;
    u64 involuntary;
};
BPF_PERCPU_HASH(process_cpu, struct process_key, struct process_value, CAPACITY);
"""


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _make_cgroups(top: Path, pods: int = 100, containers: int = 3) -> list[Path]:
    """Kubelet-shaped (systemd driver, containerd) cgroups under ``top``; all made, in order."""
    made = [top, top / "kubepods.slice", top / "kubepods.slice" / "kubepods-burstable.slice"]
    for p in range(pods):
        uid = f"{p:08x}_0000_4000_8000_{os.getpid():012x}"
        pod = made[2] / f"kubepods-burstable-pod{uid}.slice"
        made.append(pod)
        made += [pod / f"cri-containerd-{p:032x}{c:032x}.scope" for c in range(containers)]
    for d in made:
        d.mkdir()
    return made


def _cgroup_ids(top: Path) -> list[int]:
    return [os.stat(d).st_ino for d in sorted(top.rglob("*.scope"))]


def _fill(
    table: Any,
    n: int,
    cpus: int,
    cgroups_top: Path,
    generation: int = 0,
    changed: float = 1.0,
    written: list[Any] | None = None,
) -> None:
    """Entries 0..n-1; with ``generation`` > 0, bump the values of the first
    ``changed`` part. With ``written`` (the written-keys maps), what the cpu
    program does as it writes: each entry's value holds the epoch, and the
    keys go into the epoch's set (once the sidecar has started the epochs)."""
    import numpy as np

    cgroups = np.array(_cgroup_ids(cgroups_top), dtype=np.uint64)
    m = n if generation == 0 else max(1, int(n * changed))
    idx = np.arange(m, dtype=np.uint64)
    keys = np.zeros(m, dtype=[("pid", "<u4"), ("comm", "S16"), ("pad", "V4"), ("cg", "<u8")])
    keys["pid"] = idx + 1
    comms = np.array([f"worker-{i}".encode() for i in range(200)], dtype="S16")
    keys["comm"] = comms[idx % 200]
    keys["cg"] = cgroups[idx % len(cgroups)]
    words = ct.sizeof(table.Leaf) // cpus // 8  # 3, or 4 with the epoch (__written)
    values = np.zeros((m, cpus, words), dtype=np.uint64)
    values[:, :, 0] = (idx * 1_000_003 + generation)[:, None]
    values[:, :, 1] = (idx % 1000 + generation)[:, None]
    values[:, :, 2] = (idx % 77)[:, None]
    assert keys.itemsize == ct.sizeof(table.Key) and values[0].nbytes == ct.sizeof(table.Leaf)
    epoch = int(written[0][ct.c_uint32(0)].value) if written else 0
    if written and epoch:
        values[:, :, 3] = epoch
        _update_batch(written[1 + (epoch & 1)].map_fd, keys, np.ones(m, np.uint8))
    if hasattr(table, "items_update_batch"):  # a BCC table
        k = (table.Key * m).from_buffer(keys)
        v = (table.Leaf * m).from_buffer(values)
        table.items_update_batch(k, v)
        return
    _update_batch(table.map_fd, keys, values)


def _update_batch(fd: int, keys: Any, values: Any) -> None:
    from ebpf_sidecar.libbpf import lib

    count = ct.c_uint32(len(keys))
    if lib.so.bpf_map_update_batch(fd, keys.ctypes.data, values.ctypes.data, ct.byref(count), None):
        raise OSError(ct.get_errno(), "BPF_MAP_UPDATE_BATCH failed")


def _fill_elsewhere(*args: Any) -> None:
    """:func:`_fill` (with the same arguments) in a forked process: in
    production the kernel fills the map, so the copy the entries were built
    in is not the sidecar's memory (it stayed in the measured process's RSS
    as freed but unreturned heap)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _fill(*args)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"filling the map failed (status {status})")


# process_cpu's key and value as the sidecar stores them with its pins
# (ebpf_sidecar.maps.flat_type): member name, offset, size, signedness.
PINNED_DESC: dict[str, Any] = {
    "key_type": {
        "size": 32,
        "members": [["pid", 0, 4, False], ["comm", 4, 16, None], ["cgroup_id", 24, 8, False]],
    },
    "leaf_type": {
        "size": 24,
        "members": [
            ["oncpu_ns", 0, 8, False],
            ["voluntary", 8, 8, False],
            ["involuntary", 16, 8, False],
        ],
    },
    "array": False,
    "per_cpu": True,
}
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5


def _process_cpu_map(maps: Any, capacity: int) -> tuple[Any, Any, list[Any] | None]:
    """The map to read, the BCC module that made it (None when it did not),
    and its written-keys maps (None in a tree without them).

    As the sidecar runs it: a tree whose sidecar adopts pinned maps
    (``PinnedTable``) reads without BCC in its address space (BCC maps LLVM
    and clang in, ~60 MiB), so the map is made with libbpf and read through a
    ``PinnedTable``; an older tree reads BCC's own table, as it did. A tree
    with written keys (``WrittenKeys``) gets them as bpf/cpu/cpu.c has them:
    the value ends in the epoch it was written in, and four maps beside it.
    """
    if hasattr(maps, "PinnedTable"):
        from ebpf_sidecar.libbpf import lib

        def create(kind: int, name: bytes, key: int, value: int, entries: int) -> int:
            fd = int(lib.so.bpf_map_create(kind, name, key, value, entries, None))
            if fd < 0:
                raise OSError(ct.get_errno(), "BPF_MAP_CREATE failed")
            return fd

        desc = dict(PINNED_DESC, max_entries=capacity)
        written: list[Any] | None = None
        if hasattr(maps, "WrittenKeys"):
            members = [*PINNED_DESC["leaf_type"]["members"], ["__written", 24, 8, False]]
            desc["leaf_type"] = {"size": 32, "members": members}
            u64 = {"size": 8, "scalar": False}
            one = {"key_type": {"size": 4, "scalar": False}, "leaf_type": u64, "max_entries": 1}
            one |= {"array": True, "per_cpu": False}
            key_set = {
                "key_type": PINNED_DESC["key_type"],
                "leaf_type": {"size": 1, "scalar": False},
            }
            key_set |= {"array": False, "per_cpu": False, "max_entries": capacity}
            written = [
                maps.PinnedTable.from_desc(
                    create(BPF_MAP_TYPE_ARRAY, b"written_epoch", 4, 8, 1), one
                ),
                *(
                    maps.PinnedTable.from_desc(
                        create(BPF_MAP_TYPE_HASH, b"written_%d" % i, 32, 1, capacity), key_set
                    )
                    for i in (0, 1)
                ),
                maps.PinnedTable.from_desc(
                    create(BPF_MAP_TYPE_ARRAY, b"written_lost", 4, 8, 1), one
                ),
            ]
        value_size = desc["leaf_type"]["size"]
        fd = create(BPF_MAP_TYPE_PERCPU_HASH, b"process_cpu", 32, value_size, capacity)
        return None, maps.PinnedTable.from_desc(fd, desc), written
    from bcc import BPF

    b = BPF(text=SOURCE.replace("CAPACITY", str(capacity)).encode())
    return b, b[b"process_cpu"], None


def child(
    n: int, capacity: int, reads: int, out: Path, changed: float, cgroups: Path
) -> dict[str, Any]:
    import gc

    import ebpf_sidecar
    from ebpf_sidecar import maps
    from ebpf_sidecar.manifest import load_manifest
    from ebpf_sidecar.maps import MapReader
    from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

    # the manifest of the tree measured (--compare runs another tree's sidecar)
    tree = Path(ebpf_sidecar.__file__).resolve().parents[3]
    spec = load_manifest(tree / "bpf" / "cpu" / "manifest.yaml").maps["process_cpu"]
    b, table, written = _process_cpu_map(maps, capacity)
    try:
        cpus = int(table.total_cpu)
        _fill_elsewhere(table, n, cpus, cgroups)
        # the written keys, where the tree has them (changes-only reads look up
        # only those; whole reads are as before)
        extra: dict[str, Any] = {"written_keys": written} if written else {}
        reader = MapReader(table, spec, "cpu.process_cpu", capacity, **extra)
        # A stream that never reads: the exited-process reaper compares every
        # pid with /proc as usual but deletes nothing (it waits for this
        # stream's exports), so every read sees the whole map.
        reader.subscribe(object())
        gc.collect()

        stream = object()
        reader.subscribe(stream)

        def snapshot(**kw: Any) -> tuple[float, pb.Snapshot]:
            snap = pb.Snapshot(sequence=1, time_unix_nano=time.time_ns())
            ms = snap.maps.add(program="cpu", map="process_cpu", attach_time_unix_nano=1)
            started = time.perf_counter()
            reader.read(ms, stream=stream, **kw)
            return time.perf_counter() - started, snap

        params = inspect.signature(MapReader.read).parameters
        # as the receiver asks: packed columns where the sidecar has them
        packed = {"packed": True} if "packed" in params else {}
        snapshot(**packed)  # warm-up: the cgroup walk, the decoders' caches
        rss_before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
        times, ser = [], []
        for _ in range(reads):
            t, snap = snapshot(**packed)
            times.append(t)
            started = time.perf_counter()
            raw = snap.SerializeToString()
            ser.append(time.perf_counter() - started)
        out.write_bytes(raw)
        result: dict[str, Any] = {
            "entries": snap.maps[0].entries,
            "read_s": statistics.median(times),
            "serialize_s": statistics.median(ser),
            "wire_bytes": len(raw),
            "rss_before_mib": rss_before / 1024,
            "peak_rss_mib": _status_kib("VmHWM") / 1024,
        }
        del snap, raw
        if changed > 0 and "changes" in params:
            from ebpf_sidecar.maps import Changes

            state = Changes()
            snap = pb.Snapshot(sequence=1, time_unix_nano=time.time_ns())
            ms = snap.maps.add(program="cpu", map="process_cpu", attach_time_unix_nano=1)
            reader.read(ms, stream=stream, packed=True, changes=state)  # the first, whole
            out.with_suffix(".base.pb").write_bytes(snap.SerializeToString())
            ctimes, cbytes = [], []
            for gen in range(1, reads + 1):
                _fill_elsewhere(table, n, cpus, cgroups, gen, changed, written)
                snap = pb.Snapshot(sequence=1, time_unix_nano=time.time_ns())
                ms = snap.maps.add(program="cpu", map="process_cpu", attach_time_unix_nano=1)
                started = time.perf_counter()
                reader.read(ms, stream=stream, packed=True, changes=state)
                ctimes.append(time.perf_counter() - started)
                raw = snap.SerializeToString()
                cbytes.append(len(raw))
                assert ms.changes_only and len(ms.slots) // 4 == ms.entries
            out.with_suffix(".changes.pb").write_bytes(raw)
            result.update(
                changes_entries=snap.maps[0].entries,
                changes_read_s=statistics.median(ctimes),
                changes_read_max_s=max(ctimes),
                changes_wire_bytes=statistics.median(cbytes),
                changes_peak_rss_mib=_status_kib("VmHWM") / 1024,
            )
        return result
    finally:
        if b is not None:
            b.cleanup()
        else:
            os.close(table.map_fd)
            for t in written or []:
                os.close(t.map_fd)


def _go_bench(
    test_binary: Path, snapshot: Path, times: int, cwd: Path, base: Path | None = None
) -> dict[str, Any]:
    """Runs the receiver's BenchmarkSnapshot on one snapshot; its numbers and peak RSS."""
    env = dict(os.environ, EBPF_BENCH_SNAPSHOT=str(snapshot))
    if base is not None:
        env["EBPF_BENCH_BASE"] = str(base)
    proc = subprocess.Popen(
        [
            str(test_binary),
            "-test.run",
            "^$",
            "-test.bench",
            "BenchmarkSnapshot",
            "-test.benchmem",
            "-test.benchtime",
            f"{times}x",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"go benchmark failed:\n{text}")
    out: dict[str, Any] = {"peak_rss_mib": usage.ru_maxrss / 1024}
    for line in text.splitlines():
        if not line.startswith("BenchmarkSnapshot/"):
            continue
        name = line.split()[0].split("/", 1)[1].rsplit("-", 1)[0]
        fields = line.split()
        metrics = {fields[i + 1]: float(fields[i]) for i in range(2, len(fields) - 1, 2)}
        out[name] = metrics
    return out


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--capacity", type=int, default=1 << 20)
    parser.add_argument("--reads", type=int, default=3)
    parser.add_argument("--changed", type=float, default=1.0, help="percent changed (0: skip)")
    parser.add_argument("--compare", type=Path, help="another source tree, measured alike")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cgroups", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="10 k and 100 k entries, one read")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.reads = "10000,100000", 1
    if args.child is not None:
        result = child(
            args.child, args.capacity, args.reads, args.out, args.changed / 100, args.cgroups
        )
        print(json.dumps(result))
        return

    trees = [("this", ROOT)]
    if args.compare is not None:
        trees.insert(0, (args.compare.name, args.compare.resolve()))
    top = CGROUP_ROOT / f"ebpf-snapbench-{os.getpid()}"
    made = _make_cgroups(top)
    try:
        with tempfile.TemporaryDirectory(prefix="snapbench-") as tmp:
            rows = _measure(args, trees, top, Path(tmp))
    finally:
        for d in reversed(made):
            d.rmdir()

    _report(args, rows)


def _measure(args: Any, trees: list[tuple[str, Path]], cgroups: Path, tmp: Path) -> list[Any]:
    binaries = {}
    for label, tree in trees:
        binaries[label] = tmp / f"receiver-{label}.test"
        bench_go = tree / "receiver-go" / "convert_bench_test.go"
        if tree != ROOT:
            bench_go.write_bytes((RECEIVER / "convert_bench_test.go").read_bytes())
        subprocess.run(
            ["go", "test", "-c", "-o", str(binaries[label]), "."],
            cwd=tree / "receiver-go",
            check=True,
        )
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for label, tree in trees:
            out = tmp / f"snap-{label}-{n}.pb"
            env = dict(os.environ)
            if tree != ROOT:
                env["PYTHONPATH"] = str(tree / "sidecar" / "src")
            run = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(n),
                    "--capacity",
                    str(args.capacity),
                    "--reads",
                    str(args.reads),
                    "--changed",
                    str(args.changed),
                    "--out",
                    str(out),
                    "--cgroups",
                    str(cgroups),
                ],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            side = json.loads(run.stdout.strip().splitlines()[-1])
            go = _go_bench(binaries[label], out, args.reads, tree / "receiver-go")
            gc = None
            if "changes_entries" in side:
                changes = out.with_suffix(".changes.pb")
                gc = _go_bench(
                    binaries[label],
                    changes,
                    args.reads,
                    tree / "receiver-go",
                    base=out.with_suffix(".base.pb"),
                )
            rows.append((f"{n} ({label})" if len(trees) > 1 else str(n), side, go, gc))
            print(f"done: {n} entries, {label}", file=sys.stderr)
    return rows


def _report(args: Any, rows: list[Any]) -> None:
    print(
        f"\nSnapshot path, process_cpu-shaped map of {args.capacity} entries "
        f"({os.cpu_count()} CPUs, kernel {os.uname().release}); median of {args.reads} reads\n"
    )
    print(
        "| entries | sidecar read | serialize | wire size | sidecar peak RSS | "
        "receiver unmarshal | convert (default limit) | allocs/entry | "
        "convert (all admitted) | allocs/entry | receiver peak RSS | end to end |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, side, go, _ in rows:
        um = go["unmarshal"]["ns/op"] / 1e9
        dl, al = go["convert/default_limit"], go["convert/all_admitted"]
        e2e = side["read_s"] + side["serialize_s"] + um + dl["ns/op"] / 1e9
        print(
            f"| {n} | {side['read_s']:.3f} s | {side['serialize_s']:.3f} s | "
            f"{_mib(side['wire_bytes'])} | {side['peak_rss_mib']:.0f} MiB "
            f"(at rest {side['rss_before_mib']:.0f}) | {um:.3f} s | "
            f"{dl['ns/op'] / 1e9:.3f} s | {dl['allocs/entry']:.1f} | "
            f"{al['ns/op'] / 1e9:.3f} s | {al['allocs/entry']:.1f} | "
            f"{go['peak_rss_mib']:.0f} MiB | {e2e:.3f} s |"
        )
    if any(gc is not None for *_, gc in rows):
        print(f"\nChanges only: {args.changed:g} % of the entries changed since the previous read")
        print()
        print(
            "| entries | changed sent | sidecar read (slowest) | wire size | sidecar peak RSS | "
            "receiver unmarshal | convert (default limit) | convert (all admitted) | end to end |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for n, side, _, gc in rows:
            if gc is None:
                continue
            um = gc["unmarshal"]["ns/op"] / 1e9
            dl, al = gc["convert/default_limit"], gc["convert/all_admitted"]
            e2e = side["changes_read_s"] + um + dl["ns/op"] / 1e9
            slowest = side.get("changes_read_max_s", side["changes_read_s"])
            print(
                f"| {n} | {side['changes_entries']} | {side['changes_read_s']:.3f} s "
                f"({slowest:.3f} s) | {_mib(side['changes_wire_bytes'])} | "
                f"{side['changes_peak_rss_mib']:.0f} MiB | {um:.3f} s | "
                f"{dl['ns/op'] / 1e9:.3f} s | {al['ns/op'] / 1e9:.3f} s | {e2e:.3f} s |"
            )
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\n(children's user+sys CPU: {usage.ru_utime + usage.ru_stime:.1f} s)")


if __name__ == "__main__":
    main()
