"""``pid``: a process id to its executable name, from ``/proc/<pid>/comm``.

For a key holding a tgid (``bpf_get_current_pid_tgid() >> 32``) this is the
process's main thread name, as ``ps -o comm`` shows it. A pid with no /proc
entry (the process has exited) becomes the empty string (the failure value):
its name is unknown, not ``pid:<n>``. Names are cached for ten seconds
(pids are reused and exec renames a process, so not forever), at most
65536 of them. /proc must be the host's (hostPID in Kubernetes).
"""

from __future__ import annotations

from ebpf_sidecar.decoders._pid_files import PidFileCache
from ebpf_sidecar.decoders.base import Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

NAMES = PidFileCache("comm", lambda raw: raw.rstrip(b"\n").decode("utf-8", errors="replace"))
process_name = NAMES.get

PID = Decoder("pid", pb.FIELD_TYPE_STRING, NAMES.decode, failure='""')
