from __future__ import annotations

import pytest

from ebpf_sidecar import decoders

ID = "0123456789abcdef" * 4
UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
UID_ = UID.replace("-", "_")
STATIC = "6b1b0a4c6e1cd8d8f1d6b4a2a0a1d3f5"


@pytest.mark.parametrize(
    ("path", "uid"),
    [
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
            f"cri-containerd-{ID}.scope",
            UID,
        ),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice", UID),
        (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope", UID),  # Guaranteed
        (f"/kubepods/burstable/pod{UID}/{ID}", UID),
        (f"/kubepods/pod{UID}/{ID}", UID),
        (f"/kubepods.slice/kubepods-pod{STATIC}.slice/x", STATIC),  # static pod
    ],
)
def test_systemd_and_cgroupfs_layouts(path: str, uid: str) -> None:
    assert decoders.apply(["pod_uid"], [path]) == [uid]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "",
        f"/system.slice/docker-{ID}.scope",
        "/kubepods.slice",
        "/kubepods/burstable/podnotauid",
    ],
)
def test_outside_a_pod_is_empty(path: str) -> None:
    assert decoders.apply(["pod_uid"], [path]) == [""]
    assert decoders.apply(["pod_uid"], [None]) == [""]
