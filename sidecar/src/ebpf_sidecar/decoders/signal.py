"""``signal``: a signal number to its name (``SIGKILL``, ``SIGSEGV``).

Names are Linux's (x86 and arm64 share them), from Python's ``signal``
module; real-time signals are ``SIGRTMIN+<n>``; 0 (no signal) is the empty
string, and a number no signal has becomes ``SIG<n>`` (the failure value).
"""

from __future__ import annotations

import signal

from ebpf_sidecar.decoders.base import Column, Decoder
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb


def signal_name(number: int) -> str:
    if number == 0:
        return ""
    if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}" if number > signal.SIGRTMIN else "SIGRTMIN"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def decode_signal(column: Column) -> list[str]:
    return [signal_name(int(v)) for v in column]


SIGNAL = Decoder("signal", pb.FIELD_TYPE_STRING, decode_signal, failure="SIG<n>")
