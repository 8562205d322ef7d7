"""What a latency histogram's slot costs in the kernel, per sample, by scale.

Loads a tiny XDP program per variant and runs it with BPF_PROG_TEST_RUN
(``repeat`` runs, the kernel's own timing): each run computes CALLS slots of
different values, summed so that the compiler keeps every call. The
``none`` variant sums the values themselves; the table shows each variant's
ns per run and, after subtracting ``none``, ns per slot. scale 0 is BCC's
``log2_slot()`` (via ``latency_slot()``), 1-3 are ``exp_slot()``
(bpf/include/ebpfreceiver.h). Asserts nothing.

    .venv/bin/python bench/histogram_slot.py [--repeat 200000]
"""

from __future__ import annotations

import argparse
import ctypes as ct
import statistics
import struct
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sidecar" / "src"))

from ebpf_sidecar import pins  # noqa: E402

CALLS = 16
_BPF_PROG_TEST_RUN = 10

SOURCE = """
#include <ebpfreceiver.h>
#define CALLS CALLS_N

static __always_inline u64 first_value(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (data + sizeof(u64) > end)
        return 0;
    return *(u64 *)data;
}

#define VARIANT(name, expr)                                 \\
    int name(struct xdp_md *ctx) {                          \\
        u64 v = first_value(ctx);                           \\
        u32 acc = 0;                                        \\
        _Pragma("clang loop unroll(disable)") for (int i = 0; i < CALLS; i++) { \\
            u64 x = v + (u64)i * 104729;                    \\
            acc += (expr);                                  \\
        }                                                   \\
        return acc;                                         \\
    }

VARIANT(none, (u32)x)
VARIANT(scale_0, latency_slot(x, 0, 10, 38))
VARIANT(scale_1, latency_slot(x, 1, 10, 38))
VARIANT(scale_2, latency_slot(x, 2, 10, 38))
VARIANT(scale_3, latency_slot(x, 3, 10, 38))
""".replace("CALLS_N", str(CALLS))

VARIANTS = ["none", "scale_0", "scale_1", "scale_2", "scale_3"]


def run(fd: int, value: int, repeat: int) -> int:
    """Mean ns per run over ``repeat`` runs, as the kernel timed them."""
    data = ct.create_string_buffer(struct.pack("<Q", value).ljust(64, b"\0"), 64)
    attr = pins._attr(struct.pack("<IIIIQQII", fd, 0, 64, 0, ct.addressof(data), 0, repeat, 0))
    pins._bpf(_BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return int(struct.unpack_from("<I", attr.raw, 36)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    from bcc import BPF

    b: Any = BPF(text=SOURCE.encode(), cflags=[f"-I{REPO / 'bpf' / 'include'}"])
    try:
        fds = {n: b.load_func(n.encode(), BPF.XDP).fd for n in VARIANTS}
        value = 3_000_000  # 3 ms: a run queue wait or an I/O
        times: dict[str, list[int]] = {n: [] for n in VARIANTS}
        for _ in range(args.rounds):  # interleaved, so drift hits every variant
            for n in VARIANTS:
                times[n].append(run(fds[n], value, args.repeat))
    finally:
        b.cleanup()
    base = statistics.median(times["none"])
    print(f"{CALLS} slots per run, {args.repeat} runs x {args.rounds} rounds, median")
    print(f"{'variant':10} {'ns/run':>8} {'ns/slot':>8}")
    for n in VARIANTS:
        med = statistics.median(times[n])
        per = (med - base) / CALLS if n != "none" else 0.0
        print(f"{n:10} {med:8.0f} {per:8.2f}")


if __name__ == "__main__":
    main()
