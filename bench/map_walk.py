"""What one walk of a large BPF hash map costs in the kernel: a benchmark that prints a table.

Changes-only snapshots send ~1 % of a 1 M-entry map, but finding that 1 %
still walks the whole map. This measures the kernel's walk alone, by the two
ways user space has to walk a map, on a map shaped like the cpu program's
``process_cpu`` (32-byte key, three u64 values; per-CPU and not):

- batch lookup: ``BPF_MAP_LOOKUP_BATCH`` into buffers for every entry, as
  the sidecar reads (``ebpf_sidecar.maps``), one syscall for the whole map;
- iterator: a ``bpf_map_elem`` BPF iterator program run over the map, once
  writing every entry out (``bpf_seq_write``) and once writing ~1 % of them
  (a filter on the value): the walk in the kernel without the copy out.

    .venv/bin/python bench/map_walk.py [--entries 1000000] [--rounds 3] [--quick]

Needs root. Results in docs/overhead.md ("Changes only: the kernel's walk").
"""

from __future__ import annotations

import argparse
import ctypes as ct
import os
import statistics
import time
from typing import Any

import numpy as np

SOURCE = r"""
struct process_key { u32 pid; char comm[16]; u64 cgroup_id; };
struct process_value { u64 oncpu_ns; u64 voluntary; u64 involuntary; };
MAP_KIND(walked, struct process_key, struct process_value, CAPACITY);

// the context of a bpf_map_elem iterator program (kernel/bpf/map_iter.c)
struct bpf_iter_meta { struct seq_file *seq; u64 session_id; u64 seq_num; };
struct bpf_iter__bpf_map_elem {
    struct bpf_iter_meta *meta;
    struct bpf_map *map;
    void *key;
    void *value;
};

BPF_ITER(bpf_map_elem) {
    struct seq_file *seq = ctx->meta->seq;
    u64 *value = ctx->value;
    if (!ctx->key || !value)
        return 0;
    // the first CPU's oncpu_ns: the fill makes 1 in MODULO of them a multiple of MODULO
    if (value[0] % MODULO == 0) {
        bpf_seq_write(seq, ctx->key, 32);
        bpf_seq_write(seq, value, VALUE_BYTES);
    }
    return 0;
}
"""


class _MapLinkInfo(ct.Structure):  # union bpf_iter_link_info, its map member
    _fields_ = [("map_fd", ct.c_uint32)]


def _walk(per_cpu: bool, entries: int, rounds: int) -> dict[str, Any]:
    from bcc import BPF, lib  # BCC compiles the iterator program

    from ebpf_sidecar.libbpf import lib as libbpf
    from ebpf_sidecar.libbpf import possible_cpus

    row: dict[str, Any] = {"map": "per-CPU hash" if per_cpu else "hash", "entries": entries}
    for label, modulo in (("iterator, every entry out", 1), ("iterator, 1 % out", 100)):
        # a per-CPU map's iterator sees every possible CPU's value, one after the other
        value_bytes = 24 * possible_cpus() if per_cpu else 24
        text = (
            SOURCE.replace("MAP_KIND", "BPF_PERCPU_HASH" if per_cpu else "BPF_HASH")
            .replace("CAPACITY", str(entries))
            .replace("MODULO", str(modulo))
            .replace("VALUE_BYTES", str(value_bytes))
        )
        b = BPF(text=text.encode())
        try:
            table = b[b"walked"]
            n_cpu = int(table.total_cpu) if per_cpu else 1
            keys = np.zeros(
                entries, dtype=[("pid", "<u4"), ("comm", "S16"), ("pad", "V4"), ("cg", "<u8")]
            )
            keys["pid"] = np.arange(entries) + 1
            values = np.zeros((entries, n_cpu, 3), dtype=np.uint64)
            values[:, :, 0] = np.arange(entries)[:, None]
            count = ct.c_uint32(entries)
            if libbpf.so.bpf_map_update_batch(
                table.map_fd, keys.ctypes.data, values.ctypes.data, ct.byref(count), None
            ):
                raise OSError(ct.get_errno(), "BPF_MAP_UPDATE_BATCH failed")

            if modulo == 1:  # the batch lookup once per map, next to the first iterator
                out_keys, out_values = np.empty_like(keys), np.empty_like(values)
                times = []
                for _ in range(rounds):
                    got = ct.c_uint32(entries)
                    out_batch = ct.c_uint32(0)
                    started = time.perf_counter()
                    res = libbpf.so.bpf_map_lookup_batch(
                        table.map_fd,
                        None,
                        ct.byref(out_batch),
                        out_keys.ctypes.data,
                        out_values.ctypes.data,
                        ct.byref(got),
                        None,
                    )
                    times.append(time.perf_counter() - started)
                    if res and ct.get_errno() != 2:  # ENOENT: the end of the map
                        raise OSError(ct.get_errno(), "BPF_MAP_LOOKUP_BATCH failed")
                    assert got.value == entries, got.value
                row["batch lookup"] = statistics.median(times)

            fn = b.load_func(b"bpf_iter__bpf_map_elem", BPF.TRACING)
            info = _MapLinkInfo(table.map_fd)
            lib.bcc_iter_attach.argtypes = [ct.c_int, ct.c_void_p, ct.c_uint32]
            lib.bcc_iter_create.argtypes = [ct.c_int]
            link = lib.bcc_iter_attach(fn.fd, ct.byref(info), ct.sizeof(info))
            if link < 0:
                raise OSError(ct.get_errno(), "attaching the map iterator failed")
            times, written = [], 0
            for _ in range(rounds):
                started = time.perf_counter()
                fd = lib.bcc_iter_create(link)
                if fd < 0:
                    raise OSError(ct.get_errno(), "creating the map iterator failed")
                written = 0
                while chunk := os.read(fd, 1 << 20):
                    written += len(chunk)
                os.close(fd)
                times.append(time.perf_counter() - started)
            os.close(link)
            assert written == (entries + modulo - 1) // modulo * (32 + value_bytes), written
            row[label] = statistics.median(times)
        finally:
            b.cleanup()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 k entries, one walk")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.rounds = 100_000, 1
    columns = ["batch lookup", "iterator, every entry out", "iterator, 1 % out"]
    print(f"| map | entries | {' | '.join(columns)} |")
    print("|---|---|" + "---|" * len(columns))
    for per_cpu in (True, False):
        row = _walk(per_cpu, args.entries, args.rounds)
        cells = [f"{row[c]:.3f} s ({row[c] / row['entries'] * 1e9:.0f} ns/entry)" for c in columns]
        print(f"| {row['map']} | {row['entries']} | {' | '.join(cells)} |")
    print(f"(median of {args.rounds} walks each)")


if __name__ == "__main__":
    main()
