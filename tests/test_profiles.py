"""CPU profiles end to end: the `profile` program, the real collector's profiles
pipeline and its OTLP exporter, read back by an OTLP profiles sink run here.

One pipeline run serves every check (each needs seconds of samples):

- a C program built with frame pointers, in a kubelet-shaped container cgroup,
  spends a known amount of CPU in a non-inlined function with a distinctive
  name, then blocks: >= 90 % of its samples contain that function, its sample
  count x period matches its on-CPU time from /proc/<pid>/schedstat within
  10 %, and its profiles carry its container.id and k8s.pod.uid;
- a process reading /dev/zero in large blocks (its time is spent in the
  kernel): its samples contain the resolved kernel frames of read(2)'s path;
- the resource attributes and function names arrive through the real OTLP
  exporter.

The samples are complete once the sink has a profile whose interval started
after both processes stopped using CPU (each ProfilesData holds one
interval of every process).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as ps,
)
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2_grpc as ps_grpc,
)

from conftest import (
    REPO,
    KubeletContainer,
    Process,
    collector_flags,
    start_collector,
    start_sidecar,
    wait_for,
    wait_started,
)

FREQUENCY_HZ = 199  # enough samples in seconds for a 10 % check; the default is 19
CPU_SECONDS = 5.0  # ~1000 samples: sampling error about 3 %, against the 10 % checked
FUNCTION = "ebpfprof_spin_in_a_distinctive_function"
SPINNER = rf"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}}

__attribute__((noinline)) unsigned long {FUNCTION}(unsigned long n) {{
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < n; i++)
        x += i * 7;
    return x;
}}

int main(int argc, char **argv) {{
    double until = atof(argv[1]);
    while (cpu_seconds() < until)
        {FUNCTION}(1000000);
    printf("done\n");
    fflush(stdout);
    char buf[1];
    return read(0, buf, 1) < 0;  /* blocks, off CPU, until the test closes stdin */
}}
"""
READER = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    double until = atof(argv[1]);
    static char buf[1 << 20];
    int fd = open("/dev/zero", O_RDONLY);
    struct timespec ts;
    do {
        for (int i = 0; i < 64; i++)
            if (read(fd, buf, sizeof(buf)) != sizeof(buf))
                return 1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    } while (ts.tv_sec + ts.tv_nsec / 1e9 < until);
    printf("done\n");
    fflush(stdout);
    return read(0, buf, 1) < 0;
}
"""


@dataclass
class Received:
    """What the sink decoded: per pid, its samples as (function names leaf first, count)."""

    samples: dict[int, list[tuple[list[str], int]]] = field(default_factory=dict)
    resources: dict[int, dict[str, Any]] = field(default_factory=dict)
    periods: set[tuple[str, str, int]] = field(default_factory=set)
    latest_start_ns: int = 0


class Sink(ps_grpc.ProfilesServiceServicer):
    """An OTLP profiles backend: keeps what the collector's OTLP exporter sends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got = Received()

    def Export(
        self, request: ps.ExportProfilesServiceRequest, context: grpc.ServicerContext
    ) -> ps.ExportProfilesServiceResponse:
        d = request.dictionary
        strings = d.string_table

        def names(stack_index: int) -> list[str]:
            out = []
            for li in d.stack_table[stack_index].location_indices:
                for line in d.location_table[li].lines:
                    out.append(strings[d.function_table[line.function_index].name_strindex])
            return out

        with self.lock:
            for rp in request.resource_profiles:
                attrs: dict[str, Any] = {}
                for kv in rp.resource.attributes:
                    # the exporter moves keys and string values into the
                    # dictionary's string table (key_strindex, string_value_strindex)
                    key = kv.key or strings[kv.key_strindex]
                    v = kv.value
                    if v.HasField("int_value"):
                        attrs[key] = v.int_value
                    elif v.HasField("string_value_strindex"):
                        attrs[key] = strings[v.string_value_strindex]
                    else:
                        attrs[key] = v.string_value
                pid = int(attrs.get("process.pid", 0))
                self.got.resources[pid] = attrs
                for sp in rp.scope_profiles:
                    for p in sp.profiles:
                        self.got.latest_start_ns = max(self.got.latest_start_ns, p.time_unix_nano)
                        self.got.periods.add(
                            (
                                strings[p.period_type.type_strindex],
                                strings[p.period_type.unit_strindex],
                                p.period,
                            )
                        )
                        for s in p.samples:
                            self.got.samples.setdefault(pid, []).append(
                                (names(s.stack_index), int(s.values[0]))
                            )
        return ps.ExportProfilesServiceResponse()


def build(source: str, name: str, tmp: Path) -> Path:
    c = tmp / f"{name}.c"
    c.write_text(source)
    binary = tmp / name
    subprocess.run(["cc", "-O2", "-fno-omit-frame-pointer", "-o", str(binary), str(c)], check=True)
    return binary


def oncpu_ns(pid: int) -> int:
    """The kernel's own on-CPU time of the process's only thread (schedstat field 1)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


@dataclass
class Run:
    got: Received
    spinner_pid: int
    spinner_oncpu_ns: int
    reader_pid: int
    container: KubeletContainer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("profiles")
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ps_grpc.add_ProfilesServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sock = tmp / "sidecar.sock"
    cfg = {
        "receivers": {
            "ebpf": {
                "endpoint": f"unix://{sock}",
                "collection_interval": "1s",
                "programs": [
                    {
                        "name": "profile",
                        "parameters": {"frequency_hz": str(FREQUENCY_HZ)},
                    }
                ],
            }
        },
        "exporters": {"otlp_grpc": {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}}},
        "service": {
            "pipelines": {"profiles": {"receivers": ["ebpf"], "exporters": ["otlp_grpc"]}},
            "telemetry": {"metrics": {"level": "none"}},
        },
    }
    config = tmp / "collector.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    sidecar = start_sidecar(sock, tmp / "sidecar.log", *collector_flags(config, "sidecar"))
    col: Process | None = None
    container = KubeletContainer()
    procs: list[subprocess.Popen[str]] = []
    try:
        col = start_collector(config, tmp)
        wait_started(col, "a profiles pipeline")
        wait_for(
            "the first profiles at the sink",
            lambda: sink.got.latest_start_ns or None,
            30,
        )
        spinner = container.run(
            [str(build(SPINNER, "spinner", tmp)), str(CPU_SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(spinner)
        reader = subprocess.Popen(
            [str(build(READER, "zeroreader", tmp)), str(CPU_SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(reader)
        for p in (spinner, reader):
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "done"
        spent = oncpu_ns(spinner.pid)
        stopped = time.time_ns()
        wait_for(
            "a profile of an interval after both processes stopped",
            lambda: sink.got.latest_start_ns > stopped or None,
            60,
        )
        with sink.lock:
            yield Run(sink.got, spinner.pid, spent, reader.pid, container)
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(10)
        if col is not None:
            col.stop()
        sidecar.stop()
        server.stop(grace=None)
        container.remove()


def test_the_distinctive_function_is_in_nine_tenths_of_its_samples(run: Run) -> None:
    samples = run.got.samples.get(run.spinner_pid)
    assert samples, f"no samples of pid {run.spinner_pid}; pids: {sorted(run.got.samples)}"
    total = sum(n for _, n in samples)
    with_function = sum(n for names, n in samples if FUNCTION in names)
    assert with_function >= 0.9 * total, (with_function, total, samples[:5])
    # the caller chain through the frame pointers, leaf first
    chain = next(names for names, _ in samples if FUNCTION in names)
    assert chain.index(FUNCTION) < chain.index("main"), chain


def test_sample_count_times_period_is_its_oncpu_time(run: Run) -> None:
    [(kind, unit, period)] = run.got.periods
    assert (kind, unit) == ("cpu", "nanoseconds")
    assert period == round(1e9 / FREQUENCY_HZ)
    total = sum(n for _, n in run.got.samples[run.spinner_pid])
    sampled_ns = total * period
    off = 100 * (sampled_ns / run.spinner_oncpu_ns - 1)
    print(
        f"spinner: {total} samples x {period} ns = {sampled_ns / 1e9:.3f} s; schedstat "
        f"{run.spinner_oncpu_ns / 1e9:.3f} s ({off:+.1f} %)"
    )
    assert abs(sampled_ns - run.spinner_oncpu_ns) <= 0.1 * run.spinner_oncpu_ns, (
        f"{total} samples x {period} ns = {sampled_ns / 1e9:.3f} s sampled, "
        f"schedstat says {run.spinner_oncpu_ns / 1e9:.3f} s on CPU"
    )


def test_profiles_carry_the_process_and_container_identity(run: Run) -> None:
    attrs = run.got.resources[run.spinner_pid]
    assert attrs["process.pid"] == run.spinner_pid
    assert attrs["process.executable.name"] == "spinner"
    assert attrs["container.id"] == run.container.container_id
    assert attrs["k8s.pod.uid"] == run.container.pod_uid
    reader = run.got.resources[run.reader_pid]
    assert reader["process.executable.name"] == "zeroreader"
    assert "container.id" not in reader  # a host process has none


def test_syscall_samples_have_the_kernel_frames_of_its_path(run: Run) -> None:
    samples = run.got.samples[run.reader_pid]
    total = sum(n for _, n in samples)
    in_read = sum(n for names, n in samples if "vfs_read" in names and "ksys_read" in names)
    # reading /dev/zero is nearly all kernel time: clearing the user buffer
    assert in_read >= 0.5 * total, (in_read, total, samples[:3])
    path = next(names for names, _ in samples if "vfs_read" in names)
    # leaf first: the read path above the syscall entry, then the user frames
    assert path.index("vfs_read") < path.index("ksys_read"), path
    assert any(n.startswith(("do_syscall_64", "entry_SYSCALL")) for n in path), path


def test_a_filter_samples_only_the_named_container(
    kubelet_containers: Callable[[], KubeletContainer], tmp_path: Path
) -> None:
    """The program's cgroup filter, filled by the sidecar's profiles stream from a
    container id prefix: a spinner in that container is sampled, one outside is not."""
    from opentelemetry.proto.profiles.v1development import profiles_pb2 as pp

    from ebpf_sidecar.manifest import load_catalog
    from ebpf_sidecar.plan import WantedProfiles
    from ebpf_sidecar.profile_stream import ProfileStream
    from ebpf_sidecar.programs import ProgramManager
    from ebpf_sidecar.symbols import Symbolizer
    from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

    inside = kubelet_containers()
    spinner = build(SPINNER, "spinner", tmp_path)
    manager = ProgramManager(load_catalog([REPO / "bpf"]))
    procs: list[subprocess.Popen[str]] = []
    try:
        loaded = manager.acquire("profile", {"frequency_hz": str(FREQUENCY_HZ)}, exclusive=True)
        wanted = WantedProfiles("profile", False, (inside.container_id[:12],))
        stream = ProfileStream(wanted, loaded, Symbolizer())
        procs.append(inside.run([str(spinner), "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        procs.append(
            subprocess.Popen(
                [str(spinner), "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "done"
        snap = pb.Snapshot()
        stream.add_to(snap)
        data = pp.ProfilesData.FromString(snap.profiles)
        pids = {
            kv.value.int_value
            for rp in data.resource_profiles
            for kv in rp.resource.attributes
            if kv.key == "process.pid"
        }
        containers = {
            kv.value.string_value
            for rp in data.resource_profiles
            for kv in rp.resource.attributes
            if kv.key == "container.id"
        }
        assert procs[0].pid in pids
        assert procs[1].pid not in pids
        assert containers == {inside.container_id}
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(10)
        manager.close()
