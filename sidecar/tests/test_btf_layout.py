"""Layouts the programs rely on that BTF cannot name, checked on the running kernel."""

from __future__ import annotations

import re
import subprocess

from ebpf_sidecar import kernel

MEMBER = re.compile(r"^\t'(?P<name>[^']*)' type_id=(?P<type>\d+) bits_offset=(?P<bits>\d+)")


def _types() -> dict[int, tuple[str, list[tuple[str, int, int]]]]:
    """Every struct and union of vmlinux's BTF: id -> (name, members)."""
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(kernel.BTF_VMLINUX)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    types: dict[int, tuple[str, list[tuple[str, int, int]]]] = {}
    members: list[tuple[str, int, int]] = []
    for line in dump.splitlines():
        header = re.match(r"^\[(\d+)\] (STRUCT|UNION) '([^']*)'", line)
        if header:
            members = []
            types[int(header[1])] = (header[3], members)
        elif line.startswith("\t") and (m := MEMBER.match(line)):
            members.append((m["name"], int(m["type"]), int(m["bits"])))
    return types


def test_tcp_gso_segs_is_the_first_u16_after_seq_and_end_seq() -> None:
    # bpf/tcp/tcp.c reads tcp_skb_pcount(skb) at skb->cb + 8 (TCP_SKB_CB_GSO_SEGS)
    types = _types()
    cb = next(members for name, members in types.values() if name == "tcp_skb_cb")
    at_64 = [type_id for name, type_id, bits in cb if bits == 64 and name == "(anon)"]
    assert at_64, cb
    union = types[at_64[0]][1]
    nested = [types[type_id][1] for name, type_id, bits in union if name == "(anon)" and bits == 0]
    assert any(
        member == "tcp_gso_segs" and bits == 0 for struct in nested for member, _, bits in struct
    ), nested
