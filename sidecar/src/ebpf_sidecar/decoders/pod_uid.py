"""``pod_uid``: a cgroup v2 path to the Kubernetes pod uid (``k8s.pod.uid``).

Understands the kubelet's layouts for both cgroup drivers:

- systemd: ``kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid with _ for ->.slice`` (also ``besteffort`` and
  Guaranteed pods' ``kubepods-pod<uid>.slice``); the uid gets its dashes back;
- cgroupfs: ``/kubepods/burstable/pod<uid>`` (``/kubepods/pod<uid>``).

A uid is the usual 8-4-4-4-12 hex form, or 32 hex digits (the config hash
the kubelet uses as the uid of a static pod). A path outside any pod becomes
the empty string (the failure value): empty means "not in a pod" and should
not become an attribute.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_COMPONENT = re.compile(rf"^(?:kubepods(?:-[a-z]+)?-)?pod({_UID})(?:\.slice)?$")


@lru_cache(maxsize=65536)
def pod_uid(path: str) -> str:
    for component in reversed(path.split("/")):
        m = _COMPONENT.match(component)
        if m:
            return m.group(1).replace("_", "-")
    return ""


def decode_pod_uid(column: Column) -> list[str]:
    return [pod_uid(v) if isinstance(v, str) else "" for v in column]


POD_UID = Decoder("pod_uid", pb.FIELD_TYPE_STRING, decode_pod_uid, failure='""')
