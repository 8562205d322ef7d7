"""order-service: an application instrumented with the OpenTelemetry SDK.

tests/test_trace_join.py runs it inside a kubelet-shaped container cgroup.
It handles one "order" in a root span with two children: O_DIRECT writes and
reads on a block device it is given (``disk.io``), and a paced stream of
small messages over TCP to a server of its own (``tcp.send``). Its spans go
over OTLP/gRPC to the collector under test, with the resource attributes a
real service would carry: service.name, process.pid (the SDK's
ProcessResourceDetector) and container.id.

container.id comes from this process's cgroup v2 path (the ``0::`` line of
/proc/self/cgroup), whose last component containerd names
``cri-containerd-<64 hex>.scope``. The SDK's container detector
(opentelemetry-resource-detector-containerid) is not used: it takes the
first line of /proc/self/cgroup that ends in hex, which on a host with
cgroup v1 controllers mounted too is some v1 controller's path, not the
container's.

The TCP sockets are made in the network namespace named by ``--netns``
(where the test drops packets, for retransmits) while the process, and so its
OTLP exporter, stays in the host's: setns(2) moves only the calling thread,
and a socket keeps the namespace it was made in.

Driven over stdin/stdout, one line each, so the test can take the kernel's
own counts between the steps:
  prints "connected"  the connection is up, no byte sent; waits for "go"
  prints "done"       the order is handled (every byte acked); waits for "close"
  prints JSON         {"trace_id", "cpu_ns"} once the spans are exported; waits for EOF
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import (
    ProcessResourceDetector,
    Resource,
    get_aggregated_resources,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from test_accuracy_block import direct_io

SERVICE_NAME = "order-service"
CLONE_NEWNET = 0x40000000
SIOCOUTQ = 0x5411  # bytes in the send queue not yet acked
MESSAGE = b"m" * 100
CONTAINERD_SCOPE = re.compile(r"cri-containerd-([0-9a-f]{64})\.scope$")


def own_container_id() -> str:
    """The 64-hex container id of this process's cgroup v2 path ("" outside a container)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, _, path = line.split(":", 2)
        if hierarchy == "0":
            found = CONTAINERD_SCOPE.search(path.rsplit("/", 1)[-1])
            return found.group(1) if found else ""
    return ""


@contextmanager
def thread_in_netns(name: str) -> Iterator[None]:
    """This thread in network namespace ``name`` (as `ip netns` made it), then back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(target)
        os.close(home)


class Connection:
    """A client socket and the server end it is connected to, both this process's."""

    def __init__(self, address: str) -> None:
        self.server = socket.socket()
        self.server.bind((address, 0))
        self.server.listen(1)
        self.client = socket.create_connection(self.server.getsockname())
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer, _ = self.server.accept()
        self.received = 0
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        while data := self.peer.recv(65536):
            self.received += len(data)

    def send_paced(self, messages: int) -> None:
        """``messages`` small writes, one packet each, then wait until all are acked."""
        for _ in range(messages):
            self.client.sendall(MESSAGE)
            time.sleep(0.0005)  # unpaced, writes pile up into a few large skbs
        while struct.unpack("i", fcntl.ioctl(self.client, SIOCOUTQ, b"\0" * 4))[0]:
            time.sleep(0.01)

    def close(self) -> int:
        self.client.close()
        self._reader.join()
        self.peer.close()
        self.server.close()
        return self.received


def own_cpu_ns() -> int:
    """On-CPU time of every live thread of this process (schedstat, ns).

    A thread that exits between the listing and its read (the exporter's and
    the reader's threads end around now) is left out, like those that exited
    before.
    """
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # gone before open, or before read
            continue
    return total


def expect(line: str) -> None:
    got = sys.stdin.readline().strip()
    if got != line:
        raise SystemExit(f"expected {line!r} on stdin, got {got!r}")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--otlp-endpoint", required=True, help="host:port of an OTLP/gRPC receiver")
    parser.add_argument("--device", required=True, help="a block device only this app uses")
    parser.add_argument("--netns", required=True, help="network namespace of the TCP work")
    parser.add_argument("--address", required=True, help="TCP address in that namespace")
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()

    resource = get_aggregated_resources(
        [ProcessResourceDetector()],
        Resource.create({"service.name": SERVICE_NAME, "container.id": own_container_id()}),
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"http://{args.otlp_endpoint}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer(SERVICE_NAME)

    # Connected before the test adds packet loss: no SYN is retransmitted.
    with thread_in_netns(args.netns):
        conn = Connection(args.address)
    say("connected")
    expect("go")

    with tracer.start_as_current_span("POST /orders") as order:
        with tracer.start_as_current_span("disk.io") as disk:
            # The fd stays open until exit: closing a device opened for
            # writing makes udev re-read it, which must not count here.
            _fd, total = direct_io(args.device)
            disk.set_attribute("system.device", os.path.basename(args.device))
            disk.set_attribute("disk.io.bytes", total)
        with tracer.start_as_current_span("tcp.send") as send:
            conn.send_paced(args.messages)
            send.set_attribute("network.peer.address", args.address)
            send.set_attribute("app.tcp.messages", args.messages)
        trace_id = f"{order.get_span_context().trace_id:032x}"
    say("done")
    expect("close")

    received = conn.close()
    if received != args.messages * len(MESSAGE):
        raise SystemExit(f"the server received {received} bytes")
    provider.shutdown()  # exports every span before returning
    say(json.dumps({"trace_id": trace_id, "cpu_ns": own_cpu_ns()}))
    sys.stdin.read()  # alive until the test has seen our last CPU time


if __name__ == "__main__":
    main()
