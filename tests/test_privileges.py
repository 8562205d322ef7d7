"""The sidecar runs with CAP_BPF + CAP_PERFMON only, and every program still works.

The real sidecar process is started as root; once started, every one of its
threads must hold exactly the two capabilities in its effective, permitted
and bounding sets, and a stream of every catalog program with every map
must load and read without an error.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from conftest import REPO, Process, start_sidecar
from ebpf_sidecar.manifest import load_catalog
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from ebpfreceiver.sidecar.v1 import sidecar_pb2_grpc as pb_grpc

CAP_PERFMON, CAP_BPF, CAP_SYS_PTRACE = 38, 39, 19


def _capabilities(pid: int) -> dict[int, dict[str, int]]:
    """Every thread's capability sets, by thread id: {"CapEff": mask, ...}."""
    sets = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text().splitlines()
        sets[int(task.name)] = {
            k: int(v, 16)
            for k, _, v in (line.partition(":\t") for line in status)
            if k.startswith("Cap")
        }
    return sets


def _expected(*caps: int) -> dict[str, int]:
    mask = sum(1 << c for c in caps)
    return {"CapInh": 0, "CapPrm": mask, "CapEff": mask, "CapBnd": mask, "CapAmb": 0}


def _stream_every_program(sock: Path) -> list[pb.Snapshot]:
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]
        catalog = stub.Describe(pb.DescribeRequest(), timeout=10)
        # the bool parameters that enable a map set (a map that another
        # replaces, enabled_by "!name", then gives way); the sidecar's judge
        # says which maps those parameters compile in
        programs = [
            pb.ProgramRequest(
                name=p.name,
                parameters={
                    m.enabled_by: "true"
                    for m in p.maps
                    if m.enabled_by and not m.enabled_by.startswith("!")
                },
            )
            for p in catalog.programs
        ]
        plan = stub.Plan(pb.StreamRequest(programs=programs), timeout=10)
        assert not plan.errors, plan.errors
        request = pb.StreamRequest(
            programs=programs,
            maps=[pb.MapRequest(program=p.name, map=m.name) for p in plan.programs for m in p.maps],
        )
        request.interval.FromMilliseconds(500)
        stream = stub.Stream(request, timeout=180)
        snapshots = [next(stream), next(stream)]
        stream.cancel()
        return snapshots


def test_the_sidecar_keeps_only_bpf_and_perfmon_and_still_loads_every_program(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "sidecar.sock"
    sidecar = start_sidecar(sock, tmp_path / "sidecar.log")
    try:
        threads = _capabilities(sidecar.proc.pid)
        assert len(threads) > 1, "gRPC's threads are there too"
        for tid, sets in threads.items():
            assert sets == _expected(CAP_PERFMON, CAP_BPF), f"thread {tid}"
        snapshots = _stream_every_program(sock)
        maps = {(m.program, m.map): m for m in snapshots[-1].maps}
        # every map of the catalog, but those another replaces when its
        # parameter is on (runqlat's node-wide histogram: per_cgroup)
        catalog = load_catalog([REPO / "bpf"])
        every = [m for p in catalog.programs.values() for m in p.maps.values()]
        assert len(maps) == len([m for m in every if not m.enabled_by.startswith("!")]), sorted(
            maps
        )
        assert not [m.error for m in maps.values() if m.error]
        # live counters: some entries, on a machine that is never idle
        assert maps["cpu", "process_cpu"].entries > 0
        assert maps["syscalls", "syscalls"].entries > 0
        # threads the stream made hold no more
        for tid, sets in _capabilities(sidecar.proc.pid).items():
            assert sets == _expected(CAP_PERFMON, CAP_BPF), f"thread {tid}"
    finally:
        assert sidecar.stop() == 0, sidecar.output()
    assert "capabilities: kept CAP_PERFMON, CAP_BPF" in sidecar.output()


def test_keep_capabilities_keeps_what_it_names(tmp_path: Path) -> None:
    sock = tmp_path / "sidecar.sock"
    sidecar = start_sidecar(sock, tmp_path / "sidecar.log", "--keep-capabilities", "CAP_SYS_PTRACE")
    try:
        for tid, sets in _capabilities(sidecar.proc.pid).items():
            assert sets == _expected(CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF), f"thread {tid}"
    finally:
        sidecar.stop()


def test_an_unknown_capability_name_stops_the_sidecar_at_start(tmp_path: Path) -> None:
    sidecar = Process(
        "sidecar",
        [
            str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"),
            "-m",
            "ebpf_sidecar",
            "--listen",
            f"unix://{tmp_path / 's.sock'}",
            "--keep-capabilities",
            "CAP_NO_SUCH",
        ],
        tmp_path / "sidecar.log",
    )
    assert sidecar.proc.wait(60) == 2
    sidecar.stop()
    assert "--keep-capabilities: unknown capability 'CAP_NO_SUCH'" in sidecar.output()
