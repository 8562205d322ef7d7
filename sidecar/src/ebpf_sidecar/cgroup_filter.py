"""Which cgroups a filtered profile samples: containers, pods or cgroup paths to ids.

A profiles request may name what to sample (``ProfilesRequest.cgroups``):
a container id (or its first 12 or more hex digits), a pod uid, or a
cgroup v2 path (``/kubepods.slice/...``). Each names the cgroups whose
paths match (the container's, the pod's, the path's) and every cgroup
below them, as the ``container_id`` and ``pod_uid`` decoders read paths.
The ids are those ``bpf_get_current_cgroup_id()`` returns (the cgroup
directory's inode), found by walking the cgroup2 mount
(:class:`ebpf_sidecar.decoders.cgroup.CgroupPaths`); a stream resolves them
again every interval, so containers started later are sampled too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ebpf_sidecar.decoders.container_id import container_id
from ebpf_sidecar.decoders.pod_uid import pod_uid

_CONTAINER = re.compile(r"^[0-9a-f]{12,64}$")
_POD = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^[0-9a-f]{32}$")


def check(entry: str) -> str | None:
    """What is wrong with a filter entry, or None."""
    if entry.startswith("/") or _CONTAINER.match(entry) or _POD.match(entry):
        return None
    return (
        f"{entry!r} is neither a container id (12 to 64 hex digits), a pod uid "
        "(8-4-4-4-12 hex) nor a cgroup v2 path starting with '/'"
    )


def matches(entry: str, path: str) -> bool:
    if entry.startswith("/"):
        top = entry.rstrip("/") or "/"
        return top == "/" or path == top or path.startswith(top + "/")
    if _POD.match(entry):
        return pod_uid(path) == entry
    found = container_id(path)
    return bool(found) and found.startswith(entry)


def resolve(entries: Iterable[str], paths: Mapping[int, str]) -> set[int]:
    """The ids of every cgroup (of ``paths``: id -> path) an entry names."""
    wanted = list(entries)
    return {cid for cid, path in paths.items() if any(matches(e, path) for e in wanted)}
