from __future__ import annotations

import ctypes as ct
import struct

import pytest

from ebpf_sidecar.catalog import FieldSpec
from ebpf_sidecar.maps import Layout, LayoutError


def f(name: str, c_type: str) -> FieldSpec:
    return FieldSpec(name, c_type, (), "", name, "")


class Key(ct.Structure):
    # As BCC builds it for `struct { u32 id; char comm[16]; u64 n; }`, pad included.
    _fields_ = [
        ("id", ct.c_uint32),
        ("comm", ct.c_char * 16),
        ("__pad_1", ct.c_char * 4),
        ("n", ct.c_uint64),
    ]


def test_struct_layout_follows_compiled_offsets() -> None:
    layout = Layout.of(
        Key, [f("n", "u64"), f("id", "u32"), f("comm", "char[16]")], ct.sizeof(Key), "k"
    )
    raw = b"".join(struct.pack("<I16s4xQ", i, b"p%d" % i, 10 * i) for i in range(3))
    cols = layout.columns(raw + b"\0" * 32, 3)  # trailing buffer space is ignored
    assert cols["id"] == [0, 1, 2]
    assert cols["n"] == [0, 10, 20]
    assert [c.rstrip(b"\0") for c in cols["comm"]] == [b"p0", b"p1", b"p2"]


def test_scalar_key() -> None:
    layout = Layout.of(ct.c_uint32, [f("slot", "u32")], 4, "k")
    assert layout.columns(struct.pack("<3I", 7, 8, 9), 3) == {"slot": [7, 8, 9]}


def test_empty_map_gives_empty_columns() -> None:
    layout = Layout.of(ct.c_uint32, [f("slot", "u32")], 4, "k")
    assert layout.columns(b"", 0) == {"slot": []}


def test_manifest_field_missing_from_struct() -> None:
    with pytest.raises(LayoutError, match=r"do not match the compiled struct"):
        Layout.of(Key, [f("id", "u32"), f("comm", "char[16]")], ct.sizeof(Key), "k")


def test_manifest_size_disagrees_with_struct() -> None:
    with pytest.raises(LayoutError, match=r"k\.id: manifest says u64 \(8 bytes\)"):
        Layout.of(Key, [f("id", "u64"), f("comm", "char[16]"), f("n", "u64")], ct.sizeof(Key), "k")


def test_signed_fields() -> None:
    layout = Layout.of(ct.c_int64, [f("v", "s64")], 8, "v")
    assert layout.columns(struct.pack("<q", -5), 1) == {"v": [-5]}


def test_importing_the_map_reader_starts_no_thread() -> None:
    # The sidecar drops its capabilities, which are per thread, while it is
    # a single thread: numpy must not start OpenBLAS's pool at import.
    import subprocess
    import sys

    code = "import os, ebpf_sidecar.maps; print(len(os.listdir('/proc/self/task')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
