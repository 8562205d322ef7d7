"""A second BPF program on the same raw tracepoints as the program under
test, as small as counting can be: what the kernel delivered to BPF.

The accuracy tests judge our programs by the kernel's own counters
(/proc/diskstats, RetransSegs). On the Firecracker guest kernels this project
is tested on, the kernel now and then raises a tracepoint without running the
BPF programs attached to it, and without counting a recursion miss either:
a retransmit that RetransSegs and ftrace's own trace event both have, while
every raw-tracepoint program on tcp_retransmit_skb, ours and this counter
alike, ran one time fewer (bpf_prog_info.run_cnt). Under load that was one
retransmit in every few runs of a test. ftrace is no witness for that: it
is called where BPF is not. This counter is. A test asks our counts to equal
the kernel's, and where they fall short, to equal what this counter saw,
event for event: a loss in our program (a map update failing, a wrong key)
still fails, and only what no BPF program was given is excused.

Run as a script in a process of its own (BCC, LLVM and their globals stay
out of pytest): it prints ``ready`` once attached and, when its stdin
closes, one JSON line with the counts and its programs' run statistics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Retransmitted skbs that went out (err == 0 where the kernel reports it)
# and SYN-ACKs sent again, machine-wide: the events the tcp program counts
# and an ftrace instance records as tcp_retransmit_skb with err=0 and
# tcp_retransmit_synack.
TCP_RETRANSMITS = r"""
BPF_ARRAY(counts, u64, 1);
RAW_TRACEPOINT_PROBE(tcp_retransmit_skb) {
#ifdef TP_TCP_RETRANSMIT_SKB_HAS_ERR
    if ((int)ctx->args[2] != 0)
        return 0;
#endif
    int zero = 0;
    u64 *n = counts.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
RAW_TRACEPOINT_PROBE(tcp_retransmit_synack) {
    int zero = 0;
    u64 *n = counts.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""

# Completed reads and writes of one device with their bytes, as diskstats
# and the block program count them (completions of nr_bytes > 0).
BLOCK_COMPLETIONS = r"""
BPF_ARRAY(counts, u64, 4); // read ops, read bytes, write ops, write bytes
RAW_TRACEPOINT_PROBE(block_rq_complete) {
    const void *rq = (const void *)ctx->args[0];
    u32 nr_bytes = (u32)ctx->args[2];
    void *q = 0, *disk = 0;
    int major = 0, first_minor = 0;
    u32 opf = 0;
    bpf_probe_read_kernel(&q, sizeof(q), rq + BTF_OFFSET_REQUEST_Q);
    if (q)
        bpf_probe_read_kernel(&disk, sizeof(disk), q + BTF_OFFSET_REQUEST_QUEUE_DISK);
    if (!disk || (nr_bytes >> 9) == 0)
        return 0;
    bpf_probe_read_kernel(&major, sizeof(major), disk + BTF_OFFSET_GENDISK_MAJOR);
    bpf_probe_read_kernel(&first_minor, sizeof(first_minor), disk + BTF_OFFSET_GENDISK_FIRST_MINOR);
    if (major != DEV_MAJOR || first_minor != DEV_MINOR)
        return 0;
    bpf_probe_read_kernel(&opf, sizeof(opf), rq + BTF_OFFSET_REQUEST_CMD_FLAGS);
    u32 op = opf & ((1u << BTF_ENUM___REQ_FAILFAST_DEV) - 1);
    int at = op == BTF_ENUM_REQ_OP_READ ? 0 : op == BTF_ENUM_REQ_OP_WRITE ? 2 : -1;
    if (at < 0)
        return 0;
    u64 *ops = counts.lookup(&at);
    if (ops)
        __sync_fetch_and_add(ops, 1);
    at++;
    u64 *bytes = counts.lookup(&at);
    if (bytes)
        __sync_fetch_and_add(bytes, (u64)(nr_bytes >> 9) << 9);
    return 0;
}
"""


def _load(kind: str, device: str | None) -> tuple[Any, Callable[[], dict[str, int]]]:
    from bcc import BPF

    from ebpf_sidecar.kernel import btf_defines, tracepoint_defines

    if kind == "tcp":
        bpf = BPF(
            text=TCP_RETRANSMITS, cflags=tracepoint_defines(["raw_tracepoint:tcp_retransmit_skb"])
        )
        return bpf, lambda: {"retransmits": int(bpf["counts"][0].value)}
    assert kind == "block" and device, "block needs its device"
    rdev = os.stat(device).st_rdev
    cflags = btf_defines(
        [
            "request.q",
            "request_queue.disk",
            "gendisk.major",
            "gendisk.first_minor",
            "request.cmd_flags",
        ],
        ["__REQ_FAILFAST_DEV", "REQ_OP_READ", "REQ_OP_WRITE"],
    )
    cflags += [f"-DDEV_MAJOR={os.major(rdev)}", f"-DDEV_MINOR={os.minor(rdev)}"]
    bpf = BPF(text=BLOCK_COMPLETIONS, cflags=cflags)

    def counts() -> dict[str, int]:
        c = [int(bpf["counts"][i].value) for i in range(4)]
        return {"read_ops": c[0], "read_bytes": c[1], "write_ops": c[2], "write_bytes": c[3]}

    return bpf, counts


def main(argv: list[str]) -> None:
    from ebpf_sidecar.cost import prog_stats

    bpf, counts = _load(argv[0], argv[1] if len(argv) > 1 else None)
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    misses = sum(prog_stats(fn.fd).recursion_misses for fn in bpf.funcs.values())
    print(json.dumps(counts() | {"recursion_misses": misses}), flush=True)


@contextmanager
def witness(kind: str, device: str | None = None) -> Iterator[dict[str, int]]:
    """The counter of ``kind`` ("tcp", or "block" of ``device``) attached for
    the block; the dict it yields is filled with its counts on the way out.
    Fails, as every BPF test does in CI, when it cannot load."""
    argv = [sys.executable, __file__, kind] + ([device] if device else [])
    p = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert p.stdin and p.stdout
    try:
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            raise AssertionError(f"the BPF witness did not load: {line} {p.communicate()[1]}")
        seen: dict[str, int] = {}
        yield seen
        out, err = p.communicate("", timeout=60)
        assert p.returncode == 0, err
        seen.update(json.loads(out))
        # a run the kernel skipped for the witness itself would excuse a loss
        # of ours that is not the kernel's
        assert seen["recursion_misses"] == 0, f"the BPF witness missed runs itself: {seen}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
