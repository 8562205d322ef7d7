"""The few bpf() calls the sidecar makes on loaded maps, through libbpf.

Reading maps and ring buffers needs neither a compiler nor BCC: loading
``libbcc.so`` maps LLVM and clang into the process (about 60 MiB of RSS
before anything is compiled, see docs/overhead.md), while ``libbpf.so.1``,
which BCC itself links against, is a few hundred KiB. The sidecar adopts
programs a short-lived loader process compiled and pinned
(:mod:`ebpf_sidecar.loader`), so its own address space needs only these.

``lib`` offers them under BCC's names (``lib.bpf_lookup_elem`` ...), so call
sites read the same with either library; like BCC's, the calls return 0 or a
negative number and leave the error in ``ctypes.get_errno()``.
"""

from __future__ import annotations

import ctypes as ct
import functools
import os
from typing import Any

# int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size), as BCC's
RINGBUF_CB_TYPE = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_size_t)


class _Lib:
    """libbpf's calls under the names of BCC's ``libbcc`` wrappers."""

    def __init__(self, so: ct.CDLL) -> None:
        vp, u32p = ct.c_void_p, ct.POINTER(ct.c_uint32)
        for name, args in {
            "bpf_map_lookup_elem": [ct.c_int, vp, vp],
            "bpf_map_update_elem": [ct.c_int, vp, vp, ct.c_uint64],
            "bpf_map_lookup_batch": [ct.c_int, vp, vp, vp, vp, u32p, vp],
            "bpf_map_lookup_and_delete_batch": [ct.c_int, vp, vp, vp, vp, u32p, vp],
            "bpf_map_delete_batch": [ct.c_int, vp, u32p, vp],
            "bpf_map_update_batch": [ct.c_int, vp, vp, u32p, vp],  # the benches fill maps
            "bpf_enable_stats": [ct.c_int],
            "bpf_obj_get_info_by_fd": [ct.c_int, vp, u32p],
            "ring_buffer__poll": [vp, ct.c_int],
            "ring_buffer__free": [vp],
        }.items():
            getattr(so, name).argtypes = args
            getattr(so, name).restype = ct.c_int
        so.ring_buffer__new.argtypes = [ct.c_int, RINGBUF_CB_TYPE, vp, vp]
        so.ring_buffer__new.restype = vp
        so.ring_buffer__free.restype = None
        # what only the compile cache calls, under libbpf's own names (lib.so)
        so.bpf_map_create.argtypes = [
            ct.c_int,
            ct.c_char_p,
            ct.c_uint32,
            ct.c_uint32,
            ct.c_uint32,
            vp,
        ]
        so.bpf_prog_load.argtypes = [ct.c_int, ct.c_char_p, ct.c_char_p, vp, ct.c_size_t, vp]
        so.bpf_raw_tracepoint_open.argtypes = [ct.c_char_p, ct.c_int]
        self._so = so

    @property
    def so(self) -> ct.CDLL:
        """libbpf itself, for the calls with no libbcc-named wrapper here."""
        return self._so

    def bpf_lookup_elem(self, fd: int, key: Any, value: Any) -> int:
        return int(self._so.bpf_map_lookup_elem(fd, key, value))

    def bpf_update_elem(self, fd: int, key: Any, value: Any, flags: int) -> int:
        return int(self._so.bpf_map_update_elem(fd, key, value, flags))

    def bpf_lookup_batch(
        self, fd: int, in_batch: Any, out_batch: Any, keys: Any, values: Any, count: Any
    ) -> int:
        return int(
            self._so.bpf_map_lookup_batch(fd, in_batch, out_batch, keys, values, count, None)
        )

    def bpf_lookup_and_delete_batch(
        self, fd: int, in_batch: Any, out_batch: Any, keys: Any, values: Any, count: Any
    ) -> int:
        return int(
            self._so.bpf_map_lookup_and_delete_batch(
                fd, in_batch, out_batch, keys, values, count, None
            )
        )

    def bpf_enable_stats(self, stats_type: int) -> int:
        return int(self._so.bpf_enable_stats(stats_type))

    def bpf_obj_get_info_by_fd(self, fd: int, info: Any, length: Any) -> int:
        return int(self._so.bpf_obj_get_info_by_fd(fd, info, length))

    def bpf_delete_batch(self, fd: int, keys: Any, count: Any) -> int:
        return int(self._so.bpf_map_delete_batch(fd, keys, count, None))

    def bpf_new_ringbuf(self, fd: int, callback: Any, ctx: Any) -> Any:
        return self._so.ring_buffer__new(fd, callback, ctx, None)

    def bpf_poll_ringbuf(self, rb: Any, timeout_ms: int) -> int:
        return int(self._so.ring_buffer__poll(rb, timeout_ms))

    def bpf_free_ringbuf(self, rb: Any) -> None:
        self._so.ring_buffer__free(rb)


@functools.cache
def _lib() -> _Lib:
    return _Lib(ct.CDLL("libbpf.so.1", use_errno=True))


def __getattr__(name: str) -> Any:
    if name == "lib":  # loaded on first use, like BCC's
        return _lib()
    raise AttributeError(name)


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many CPUs per-CPU maps hold values for (BCC's ``len(get_possible_cpus())``)."""
    return len(cpu_list(path))


def cpu_list(path: str) -> set[int]:
    """The CPUs of a kernel CPU list file ("0-3,8")."""
    cpus: set[int] = set()
    with open(path) as f:
        for part in f.read().strip().split(","):
            if part:
                first, _, last = part.partition("-")
                cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def online_cpus() -> set[int]:
    return cpu_list("/sys/devices/system/cpu/online")


def read_u64(fd: int) -> int:
    """Element 0 of a map of u64 (a 1-element array)."""
    key, value = ct.c_int(0), ct.c_uint64(0)
    if _lib().bpf_lookup_elem(fd, ct.byref(key), ct.byref(value)) != 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_MAP_LOOKUP_ELEM failed: {os.strerror(err)}")
    return int(value.value)


def write_u64(fd: int, v: int) -> None:
    """Sets element 0 of a map of u64 (a 1-element array)."""
    key, value = ct.c_int(0), ct.c_uint64(v)
    if _lib().bpf_update_elem(fd, ct.byref(key), ct.byref(value), 0) != 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_MAP_UPDATE_ELEM failed: {os.strerror(err)}")
