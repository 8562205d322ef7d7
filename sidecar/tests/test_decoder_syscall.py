from __future__ import annotations

from ebpf_sidecar import decoders


def test_syscall_names_for_this_architecture() -> None:
    # x86_64 numbers: 0 read, 1 write, 110 getppid
    assert decoders.apply(["syscall"], [0, 1, 110]) == ["read", "write", "getppid"]


def test_unknown_syscall_keeps_its_number() -> None:
    assert decoders.apply(["syscall"], [99999]) == ["unknown:99999"]
