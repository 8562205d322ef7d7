"""Readiness probe: ``python -m ebpf_sidecar.probe [--endpoint ...] [--wait 60]``.

Exits 0 once the sidecar at the endpoint answers ``Describe`` (it is
listening and its catalog is loaded), 1 otherwise. ``make run`` starts the
collector only after it succeeds, and the Kubernetes manifest uses it as
the sidecar container's startup probe, so the receiver's first ``Describe``
finds the sidecar whichever process the platform starts first.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc

from ebpf_sidecar.cli import DEFAULT_LISTEN
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc


def describe(endpoint: str, timeout: float) -> pb.DescribeResponse:
    with grpc.insecure_channel(endpoint) as channel:
        # grpcio-tools emits no annotations for the stub's constructor.
        stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
        response: pb.DescribeResponse = stub.Describe(
            pb.DescribeRequest(), timeout=timeout, wait_for_ready=True
        )
        return response


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ebpf-sidecar-probe", description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default=DEFAULT_LISTEN, help="default %(default)s")
    p.add_argument(
        "--wait",
        type=float,
        default=2.0,
        help="seconds to wait for an answer (default %(default)s)",
    )
    args = p.parse_args(argv)
    start = time.monotonic()
    try:
        response = describe(args.endpoint, args.wait)
    except grpc.RpcError as e:
        print(
            f"the eBPF sidecar at {args.endpoint} did not answer within {args.wait:g}s: "
            f"{e.code().name}: {e.details()}",
            file=sys.stderr,
        )
        return 1
    print(
        f"the eBPF sidecar {response.sidecar_version} at {args.endpoint} answered after "
        f"{time.monotonic() - start:.1f}s with {len(response.programs)} programs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
