from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cachetools import TTLCache

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders import majorminor
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def kdev(major: int, minor: int) -> int:
    """The kernel-internal encoding tracepoints report: MKDEV()."""
    return major << 20 | minor


@pytest.fixture
def fake_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A /sys/dev/block and /proc/partitions of our own, and an empty cache."""
    sysdev = tmp_path / "sys-dev-block"
    sysdev.mkdir()
    parts = tmp_path / "partitions"
    parts.write_text("major minor  #blocks  name\n\n 259        0  1000 nvme0n1\n")
    monkeypatch.setattr(majorminor, "SYS_DEV_BLOCK", sysdev)
    monkeypatch.setattr(majorminor, "PROC_PARTITIONS", parts)
    monkeypatch.setattr(majorminor, "_names", TTLCache(maxsize=16, ttl=majorminor.TTL))
    yield sysdev


def link(sysdev: Path, majmin: str, target: str) -> None:
    (sysdev / majmin).symlink_to(target)


def test_sysfs_link_names_disks_and_partitions(fake_sys: Path) -> None:
    link(fake_sys, "7:3", "../../devices/virtual/block/loop3")
    link(fake_sys, "254:1", "../../devices/pci0000:00/virtio4/block/vda/vda1")
    assert decoders.apply(["majorminor"], [kdev(7, 3), kdev(254, 1), kdev(7, 3)]) == [
        "loop3",
        "vda1",
        "loop3",
    ]


def test_proc_partitions_is_the_fallback(fake_sys: Path) -> None:
    assert decoders.apply(["majorminor"], [kdev(259, 0)]) == ["nvme0n1"]


def test_unknown_device_becomes_major_minor_and_is_retried(fake_sys: Path) -> None:
    # a minor above 255 shows the kernel encoding is split at bit 20
    assert decoders.apply(["majorminor"], [kdev(8, 300), 0]) == ["8:300", "0:0"]
    link(fake_sys, "8:300", "../../devices/x/block/sdq")
    assert decoders.apply(["majorminor"], [kdev(8, 300)]) == ["sdq"]


def test_names_are_looked_up_again_after_the_ttl(
    fake_sys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    names: TTLCache[int, str] = TTLCache(maxsize=16, ttl=majorminor.TTL, timer=lambda: now[0])
    monkeypatch.setattr(majorminor, "_names", names)
    link(fake_sys, "259:1", "../../devices/x/block/nvme1n1")
    assert majorminor.device_name(kdev(259, 1)) == "nvme1n1"
    (fake_sys / "259:1").unlink()
    link(fake_sys, "259:1", "../../devices/x/block/nvme2n1")
    now[0] = 100.0 + majorminor.TTL / 2
    assert majorminor.device_name(kdev(259, 1)) == "nvme1n1"
    now[0] = 100.0 + majorminor.TTL + 1
    assert majorminor.device_name(kdev(259, 1)) == "nvme2n1"


def test_this_machines_disks_are_named_like_proc_partitions() -> None:
    rows = [line.split() for line in Path("/proc/partitions").read_text().splitlines()[2:]]
    devices = [(int(r[0]), int(r[1]), r[3]) for r in rows if len(r) == 4]
    assert devices, "no block devices in /proc/partitions"
    got = decoders.apply(["majorminor"], [kdev(ma, mi) for ma, mi, _ in devices])
    assert got == [name for _, _, name in devices]
    # the same device numbers stat() reports for the device nodes
    for ma, mi, name in devices:
        node = Path("/dev") / name
        if node.exists():
            st = os.stat(node)
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (ma, mi)


def test_majorminor_output_type() -> None:
    assert decoders.get("majorminor").output == pb.FIELD_TYPE_STRING
    assert decoders.get("majorminor").failure == "MAJ:MIN"
