"""The exponential-histogram helpers of bpf/include/ebpfreceiver.h, in the kernel.

A tiny program per helper returns the helper's result for the value it is
given; BPF_PROG_TEST_RUN runs it in the real kernel (a raw tracepoint
program takes its arguments from the test run's context), once per value.
Every result is compared with an exact reference: OpenTelemetry's bucket
index at scale s of a value v >= 1 is the i with 2^(i/2^s) < v <= 2^((i+1)/2^s),
i.e. 2^i < v^(2^s) <= 2^(i+1), which Python's integers compute exactly as
(v^(2^s) - 1).bit_length() - 1. The values: every power of two, every
threshold floor(2^(e + j/2^s)) of the 64-bit range and its neighbours, and
random values of every magnitude.
"""

from __future__ import annotations

import ctypes as ct
import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebpf_sidecar import pins

INCLUDE = Path(__file__).resolve().parents[2] / "bpf" / "include"
_BPF_PROG_TEST_RUN = 10

SOURCE = """
#include <ebpfreceiver.h>

int index_1(struct bpf_raw_tracepoint_args *ctx) { return exp_index(ctx->args[0], 1); }
int index_2(struct bpf_raw_tracepoint_args *ctx) { return exp_index(ctx->args[0], 2); }
int index_3(struct bpf_raw_tracepoint_args *ctx) { return exp_index(ctx->args[0], 3); }
int slot_2(struct bpf_raw_tracepoint_args *ctx) { return exp_slot(ctx->args[0], 2, 10, 38); }
int slot_3(struct bpf_raw_tracepoint_args *ctx) { return exp_slot(ctx->args[0], 3, 0, 24); }
int latency_0(struct bpf_raw_tracepoint_args *ctx) {
    return latency_slot(ctx->args[0], 0, 10, 38);
}
int latency_2(struct bpf_raw_tracepoint_args *ctx) {
    return latency_slot(ctx->args[0], 2, 10, 38);
}
"""


def exp_index(v: int, scale: int) -> int:
    """OpenTelemetry's bucket index of v >= 1 at ``scale``, exactly."""
    return int((v ** (1 << scale) - 1).bit_length()) - 1


def exp_slot(v: int, scale: int, min_log2: int, max_log2: int) -> int:
    """SLOT_CONVENTION_EXPONENTIAL with index_offset min_log2 * 2^scale."""
    if v <= 1 << min_log2:
        return 0
    last = ((max_log2 - min_log2) << scale) + 1
    return min(exp_index(v, scale) - (min_log2 << scale) + 1, last)


def bcc_log2_slot(v: int, slots: int) -> int:
    """BCC's bpf_log2l(v) (floor(log2 v) + 1, and 1 for 0), clamped to the last slot."""
    return min(max(v.bit_length(), 1), slots - 1)


def threshold(e: int, j: int, scale: int) -> int:
    """floor(2^(e + j/2^scale)), exactly: the 2^scale-th root of 2^(e*2^scale + j)."""
    x = 1 << ((e << scale) + j)
    for _ in range(scale):
        x = math.isqrt(x)
    return x


def values() -> list[int]:
    vs = {1, 2, 3, (1 << 64) - 1}
    for e in range(64):
        for scale in (1, 2, 3):
            for j in range(1 << scale):
                t = threshold(e, j, scale)
                vs.update({t - 1, t, t + 1})
    rng = random.Random(13)
    for bits in range(1, 65):
        vs.update(rng.getrandbits(bits) | (1 << (bits - 1)) for _ in range(40))
    return sorted(v for v in vs if 1 <= v < 1 << 64)


def run(fd: int, v: int) -> int:
    """The program's return value for args[0] = v, run once in the kernel."""
    ctx = ct.create_string_buffer(struct.pack("<Q", v), 8)
    attr = pins._attr(
        struct.pack("<IIIIQQIIIIQQ", fd, 0, 0, 0, 0, 0, 0, 0, 8, 0, ct.addressof(ctx), 0)
    )
    pins._bpf(_BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return int(struct.unpack_from("<I", attr.raw, 4)[0])


@pytest.fixture(scope="module")
def helpers() -> Iterator[dict[str, int]]:
    from bcc import BPF

    b: Any = BPF(text=SOURCE.encode(), cflags=[f"-I{INCLUDE}"])
    try:
        names = ["index_1", "index_2", "index_3", "slot_2", "slot_3", "latency_0", "latency_2"]
        yield {n: b.load_func(n.encode(), BPF.RAW_TRACEPOINT).fd for n in names}
    finally:
        b.cleanup()


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_exp_index_is_opentelemetrys_index(helpers: dict[str, int], scale: int) -> None:
    fd = helpers[f"index_{scale}"]
    wrong = [(v, run(fd, v), exp_index(v, scale)) for v in values() if v >= 2]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong, f"(value, kernel, reference): {wrong[:10]}"


def test_exp_slot_clamps_into_the_zero_and_the_last_slot(helpers: dict[str, int]) -> None:
    vs = [0, *values()]
    for name, scale, lo, hi in (("slot_2", 2, 10, 38), ("slot_3", 3, 0, 24)):
        got = [(v, run(helpers[name], v), exp_slot(v, scale, lo, hi)) for v in vs]
        wrong = [g for g in got if g[1] != g[2]]
        assert not wrong, f"{name} (value, kernel, reference): {wrong[:10]}"
    assert run(helpers["slot_2"], 1 << 10) == 0  # the zero bucket's upper edge
    assert run(helpers["slot_2"], (1 << 10) + 1) == 1  # index 40: (2^10, 2^10.25]
    assert run(helpers["slot_2"], 1 << 38) == (38 - 10) * 4  # index 151: up to 2^38
    assert run(helpers["slot_2"], (1 << 38) + 1) == (38 - 10) * 4 + 1  # the last slot


def test_latency_slot_at_scale_0_is_bccs_log2(helpers: dict[str, int]) -> None:
    vs = [0, *values()]
    wrong = [(v, r) for v in vs if (r := run(helpers["latency_0"], v)) != bcc_log2_slot(v, 40)]
    assert not wrong, f"(value, kernel): {wrong[:10]}"
    wrong = [(v, r) for v in vs if (r := run(helpers["latency_2"], v)) != exp_slot(v, 2, 10, 38)]
    assert not wrong, f"(value, kernel): {wrong[:10]}"
