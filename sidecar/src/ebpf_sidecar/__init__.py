"""Privileged sidecar of the OpenTelemetry `ebpf` receiver.

It owns everything that needs CAP_BPF: compiling and attaching the catalog's
BCC programs, reading their maps and decoding keys. The receiver, inside the
collector, only ever sees columnar snapshots over gRPC.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = "v1"
