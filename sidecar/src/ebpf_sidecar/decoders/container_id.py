"""``container_id``: a cgroup v2 path to the 64-hex id of the container in it.

Understands the layouts of the common runtimes and cgroup drivers, reading
the path from its leaf towards the root and taking the deepest match:

- systemd driver: ``.../cri-containerd-<id>.scope`` (containerd),
  ``.../crio-<id>.scope`` (CRI-O), ``.../docker-<id>.scope`` (Docker),
  ``.../libpod-<id>.scope`` (Podman);
- cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>``, ``/docker/<id>``.

CRI-O's monitor (``crio-conmon-<id>.scope``) is not the container and does
not match. A path with no container id becomes the empty string (the failure
value): empty means "not in a container" (or a cgroup the sidecar could not
name), and should not become an attribute.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

_COMPONENT = re.compile(
    r"^(?:(?:cri-containerd|crio|docker|libpod|containerd)-)?([0-9a-f]{64})(?:\.scope)?$"
)


@lru_cache(maxsize=65536)
def container_id(path: str) -> str:
    for component in reversed(path.split("/")):
        m = _COMPONENT.match(component)
        if m:
            return m.group(1)
    return ""


def decode_container_id(column: Column) -> list[str]:
    return [container_id(v) if isinstance(v, str) else "" for v in column]


CONTAINER_ID = Decoder("container_id", pb.FIELD_TYPE_STRING, decode_container_id, failure='""')
