"""Privileged sidecar of the OpenTelemetry `ebpf` receiver.

It owns everything that needs CAP_BPF: compiling and attaching the catalog's
BCC programs, reading their maps and decoding keys. The receiver, inside the
collector, only ever sees columnar snapshots over gRPC.
"""

import os

# numpy (the map reads' columns) would start an OpenBLAS thread pool when
# first imported: the sidecar uses no BLAS, and it must still be a single
# thread when it drops its capabilities (they are per thread;
# ebpf_sidecar.privileges). Set before any module of the package imports numpy.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

__version__ = "0.1.0"
PROTOCOL_VERSION = "v1"
