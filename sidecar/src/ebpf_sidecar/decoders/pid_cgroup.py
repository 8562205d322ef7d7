"""``pid_cgroup``: a process id to its cgroup v2 path, from ``/proc/<pid>/cgroup``.

The path is the one on the ``0::`` line (the unified hierarchy), e.g.
``/kubepods.slice/.../cri-containerd-<id>.scope``, relative to the cgroup
namespace of the sidecar (the host's when it runs with hostPID and the host
cgroup namespace). Chain it with ``container_id`` or ``pod_uid``. A pid with
no /proc entry (exited) or no ``0::`` line becomes the empty string (the
failure value). Paths are cached for ten seconds, at most 65536.
For short-lived processes prefer a cgroup id in the BPF key and the
``cgroup`` decoder: the cgroup outlives the process.
"""

from __future__ import annotations

from ebpf_sidecar.decoders._pid_files import PidFileCache
from ebpf_sidecar.decoders.base import Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def unified_path(text: str) -> str | None:
    """The path of the ``0::`` line of a /proc/<pid>/cgroup text."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].split(" (deleted)")[0] or "/"
    return None


CGROUPS = PidFileCache("cgroup", lambda raw: unified_path(raw.decode(errors="replace")))

PID_CGROUP = Decoder("pid_cgroup", pb.FIELD_TYPE_STRING, CGROUPS.decode, failure='""')
