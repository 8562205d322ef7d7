from __future__ import annotations

import pytest

from ebpf_sidecar import decoders

ID = "0123456789abcdef" * 4
UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(
    "path",
    [
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{ID}.scope",
        f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope",
        f"/system.slice/docker-{ID}.scope",
        f"/machine.slice/libpod-{ID}.scope",
        f"/kubepods/burstable/pod{UID}/{ID}",
        f"/kubepods/pod{UID}/{ID}",
        f"/docker/{ID}",
    ],
)
def test_runtimes_and_cgroup_drivers(path: str) -> None:
    assert decoders.apply(["container_id"], [path]) == [ID]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "",
        "/user.slice/user-0.slice/session-1.scope",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
        f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope",  # CRI-O's monitor
        f"/docker-{ID[:-1]}.scope",  # 63 digits
        f"/docker-{ID.upper()}.scope",
    ],
)
def test_no_container_is_empty(path: str) -> None:
    assert decoders.apply(["container_id"], [path]) == [""]


def test_non_text_is_empty() -> None:
    assert decoders.apply(["container_id"], [17, None]) == ["", ""]
    assert decoders.get("container_id").failure == '""'
