"""End-to-end fixtures: the real sidecar, the real ocb-built collector."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
# The BPF helpers of the sidecar's tests (loaded programs, fdinfo) serve here too.
sys.path.insert(0, str(REPO / "sidecar" / "tests"))
# Fails the session when a test leaves a namespace, loop device, cgroup,
# mount or BPF program behind.
pytest_plugins = ["machine_state"]
PYTHON = REPO / ".venv" / "bin" / "python"
COLLECTOR = REPO / "build" / "otelcol-ebpf" / "otelcol-ebpf"
DEFAULT_SOCKET = Path("/run/ebpf-sidecar/sidecar.sock")
# The sidecars of one test session share a compile cache of their own (under
# /run: root's, as the sidecar requires), made empty at the start and removed
# at the end, so that no run starts from what an earlier one compiled.
COMPILE_CACHE = Path(f"/run/ebpfreceiver-test-compile-cache-{os.getpid()}")

T = TypeVar("T")


def pytest_sessionstart(session: pytest.Session) -> None:
    # These tests load BPF programs: without root they must fail, not skip.
    if os.geteuid() != 0:
        raise pytest.UsageError("end-to-end tests load BPF programs: run them as root")
    if not COLLECTOR.exists():
        raise pytest.UsageError(f"{COLLECTOR} is missing: run `make setup` first")
    shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


def with_compile_cache(extra: tuple[str, ...]) -> list[str]:
    """A sidecar's flags, with the session's compile cache unless they name one."""
    if any(flag.startswith("--compile-cache") for flag in extra):
        return list(extra)
    return [*extra, "--compile-cache", str(COMPILE_CACHE)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as e:  # the endpoint may not be up yet
            last_error = e
        else:
            if value:
                return value
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def with_a_fork(probe: Callable[[], T | None]) -> Callable[[], T | None]:
    """``probe``, run after creating a process of our own.

    A series keyed by what happens (a process created or exited) only exists
    once it has happened; on a quiet machine nothing else may fork.
    """

    def forked() -> T | None:
        subprocess.run(["/bin/true"], check=True)
        return probe()

    return forked


class Process:
    """A child process whose output goes to a log file shown on failure."""

    def __init__(self, name: str, argv: list[str], log: Path, **kw: Any) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, **kw)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return int(self.proc.returncode)


def start_sidecar(socket_path: Path, log: Path, *extra: str) -> Process:
    p = Process(
        "sidecar",
        [
            str(PYTHON),
            *("-m", "ebpf_sidecar", "--listen", f"unix://{socket_path}"),
            *with_compile_cache(extra),
        ],
        log,
    )
    wait_for(
        f"sidecar socket {socket_path}\n{log}",
        lambda: (
            socket_path.exists() or (not p.alive() and _raise(f"sidecar exited:\n{p.output()}"))
        ),
        30,
    )
    return p


class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, written as the PEM files the sidecar's and the receiver's
    TLS settings name (the keys 0600: the sidecar refuses any other)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = folder / "ca.pem"
        self.server_cert, self.server_key = folder / "server.pem", folder / "server.key"
        self.client_cert, self.client_key = folder / "client.pem", folder / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        for name, cert, key in [
            ("127.0.0.1", self.server_cert, self.server_key),
            ("otel-collector", self.client_cert, self.client_key),
        ]:
            issued = self.ca.issue_cert(name)
            issued.cert_chain_pems[0].write_to_path(str(cert))
            key.touch(mode=0o600)
            issued.private_key_pem.write_to_path(str(key))

    def sidecar_flags(self) -> list[str]:
        return [
            *("--tls-cert", str(self.server_cert)),
            *("--tls-key", str(self.server_key)),
            *("--tls-client-ca", str(self.ca_file)),
        ]

    def receiver_tls(self) -> dict[str, str]:
        """The receiver's ``tls`` settings (configgrpc) with this client certificate."""
        return {
            "ca_file": str(self.ca_file),
            "cert_file": str(self.client_cert),
            "key_file": str(self.client_key),
        }


def start_tcp_sidecar(listen: str, log: Path, *extra: str) -> Process:
    """The sidecar on TCP (``--listen host:port``, TLS flags in ``extra``)."""
    p = Process(
        "sidecar",
        [str(PYTHON), "-m", "ebpf_sidecar", "--listen", listen, *with_compile_cache(extra)],
        log,
    )
    try:
        wait_for(
            f"the sidecar to listen on {listen}\n{log}",
            lambda: (
                f"listening on {listen}" in p.output()
                or (not p.alive() and _raise(f"sidecar exited:\n{p.output()}"))
            ),
            30,
        )
    except BaseException:
        p.stop()
        raise
    return p


def sidecar_pids(socket_path: Path) -> list[int]:
    """Pids of the sidecars listening on ``socket_path`` (by their command line)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # exited meanwhile
            if b"ebpf_sidecar" in cmd and f"unix://{socket_path}".encode() in cmd:
                pids.append(int(d.name))
    return pids


def _raise(msg: str) -> bool:
    raise AssertionError(msg)


def start_collector(config: dict[str, Any] | Path, tmp: Path, name: str = "collector") -> Process:
    if isinstance(config, dict):
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
    else:
        path = config
    return Process(
        name,
        [str(COLLECTOR), "--config", str(path), *collector_flags(path)],
        tmp / f"{name}.log",
    )


def collector_flags(config: Path, which: str = "collector") -> list[str]:
    """What scripts/run.sh passes the collector (feature gates), or with
    ``which="sidecar"`` the sidecar (capabilities), for ``config``."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config-flags.py"), which, str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def wait_started(col: Process, what: str) -> None:
    """Wait until the collector is running its pipelines; fail with its log if it stopped
    (a config the sidecar's catalog refuses stops it at start)."""
    wait_for(
        f"the collector to start with {what}",
        lambda: "Everything is ready" in col.output() or not col.alive(),
        30,
    )
    assert col.alive(), f"{what}:\n{col.output()}"


def pipeline_config(receiver: dict[str, Any], prom_port: int) -> dict[str, Any]:
    """A collector config: the ebpf receiver straight into a Prometheus exporter."""
    return {
        "receivers": {"ebpf": receiver},
        "exporters": {
            "prometheus": {
                "endpoint": f"127.0.0.1:{prom_port}",
                "resource_constant_labels": {"included": ["*"]},
            }
        },
        "service": {
            "pipelines": {"metrics": {"receivers": ["ebpf"], "exporters": ["prometheus"]}},
            # keep the collector's own telemetry off the shared :8888
            "telemetry": {"metrics": {"level": "none"}},
        },
    }


def expose_self_telemetry(cfg: dict[str, Any], port: int, level: str = "normal") -> None:
    """Serve the collector's own metrics (otelcol_receiver_ebpf_*) in the
    Prometheus format on 127.0.0.1:``port``, for :func:`scrape`."""
    cfg["service"]["telemetry"] = {
        "metrics": {
            "level": level,
            "readers": [
                {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": port}}}}
            ],
        }
    }


@contextmanager
def ftrace_events(*events: str, name: str = "test", event_filter: str = "") -> Iterator[Path]:
    """An ftrace instance of our own (``name`` tells two apart) recording
    ``events`` ("system/event"), each with ``event_filter`` if given, on the
    monotonic clock. tracefs is mounted first where it is missing (a new
    machine), by the sidecar's own code, not left to a sidecar that ran
    before."""
    from ebpf_sidecar.kernel import tracefs

    inst = tracefs() / "instances" / f"ebpf-{name}-{os.getpid()}"
    inst.mkdir()
    try:
        (inst / "trace_clock").write_text("mono")
        (inst / "buffer_size_kb").write_text("8192")
        for ev in events:
            if event_filter:
                (inst / "events" / ev / "filter").write_text(event_filter)
            (inst / "events" / ev / "enable").write_text("1")
        yield inst
    finally:
        for ev in events:
            (inst / "events" / ev / "enable").write_text("0")
        inst.rmdir()


def assert_no_trace_lost(text: str) -> None:
    """ftrace's header says how many entries its buffer holds and how many were written."""
    m = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", text)
    assert m and m.group(1) == m.group(2), "the trace buffer overflowed"


Samples = list[tuple[str, dict[str, str], float]]


def scrape_stamped(port: int) -> list[tuple[str, dict[str, str], float, float]]:
    """The exporter's samples with their timestamps in s: the time the sidecar
    took the snapshot each comes from (needs the exporter's send_timestamps)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [
        (s.name, dict(s.labels), float(s.value), float(s.timestamp or 0))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def scrape_since(
    port: int, since: float, names: Iterable[str], timeout: float = 30, **labels: str
) -> Samples:
    """The exporter's samples once those called one of ``names`` with
    ``labels`` all come from snapshots the sidecar took after ``since``
    (``time.time()``), i.e. read from the kernel after it.

    Causal, not by waiting for two equal scrapes: a snapshot read before
    ``since`` can reach the exporter seconds later when the pipeline lags
    (a loaded 2-CPU machine), and equal scrapes then show its stale value.
    Needs the exporter's send_timestamps.
    """
    wanted = set(names)

    def probe() -> Samples | None:
        samples = scrape_stamped(port)
        stamps = [ts for n, lab, _, ts in samples if n in wanted and labels.items() <= lab.items()]
        if not stamps or min(stamps) <= since:
            return None
        return [(n, lab, v) for n, lab, v, _ in samples]

    return wait_for(f"{sorted(wanted)} {labels} from snapshots after {since:.3f}", probe, timeout)


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [
        (s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    return sum(found) if found else None


# A process that spins on a CPU for argv[1] seconds once told "go" (stdin),
# says "done", and exits when stdin closes: run queue contention on demand.
BUSY_WORKER = r"""
import sys, time
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.readline()
"""


def hear(procs: Iterable[subprocess.Popen[str]], word: str) -> None:
    """Each of ``procs`` says ``word`` (a line of its stdout), in turn."""
    for p in procs:
        assert p.stdout
        assert p.stdout.readline().strip() == word


def busy_round(workers: list[subprocess.Popen[str]]) -> None:
    """Tell every BUSY_WORKER "go", then wait until each says "done"."""
    for w in workers:
        assert w.stdin
        w.stdin.write("go\n")
        w.stdin.flush()
    hear(workers, "done")


def blocked_on_stdin(*pids: int) -> float:
    """The time once every one of ``pids`` sleeps (state S) on its stdin, as a
    worker does right after it said "done": nothing it does after counts."""

    def sleeping() -> bool:
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat[stat.rindex(")") + 2] != "S":
                return False
        return True

    wait_for(f"{list(pids)} blocked on their stdin", sleeping, 10, every=0.001)
    return time.time()


SYSCALL_CHILD = r"""
import ctypes, os, sys
# PR_SET_NAME: a comm of our own, so only this loop's calls count under it
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
n = int(sys.argv[2])
sys.stdin.readline()
getppid = os.getppid
for _ in range(n):
    getppid()
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.readline()
"""


class SyscallChild:
    """A process that makes exactly ``n`` getppid() calls when told to."""

    def __init__(self, comm: str, n: int) -> None:
        assert len(comm) <= 15, "comm is at most 15 characters"
        self.comm, self.n = comm, n
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SYSCALL_CHILD, comm, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[Process, Path]]:
    sock = tmp_path / "sidecar.sock"
    p = start_sidecar(sock, tmp_path / "sidecar.log")
    yield p, sock
    p.stop()


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup/unified on a hybrid host)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2" and left.split()[3] == "/":
            return Path(left.split()[4])
    raise AssertionError("no cgroup2 mount in /proc/self/mountinfo")


class KubeletContainer:
    """A cgroup v2 directory laid out as kubelet (systemd driver) and containerd
    make it: kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
    cri-containerd-<64 hex>.scope. Processes started with ``run`` live in it
    from their first instruction; ``remove`` kills them and removes the tree."""

    def __init__(self) -> None:
        import uuid

        self.pod_uid = str(uuid.uuid4())
        self.container_id = os.urandom(32).hex()
        root = cgroup2_mount()
        pod = f"kubepods-burstable-pod{self.pod_uid.replace('-', '_')}.slice"
        self.dirs = [root / "kubepods.slice", root / "kubepods.slice" / "kubepods-burstable.slice"]
        self.dirs.append(self.dirs[-1] / pod)
        self.dirs.append(self.dirs[-1] / f"cri-containerd-{self.container_id}.scope")
        self.created: list[Path] = []
        for d in self.dirs:
            if not d.exists():
                d.mkdir()
                self.created.append(d)
        self.path = self.dirs[-1]

    def run(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """``argv`` started inside the container's cgroup (the shell moves in, then execs)."""
        script = f'echo $$ > "{self.path}/cgroup.procs" && exec "$0" "$@"'
        return subprocess.Popen(["sh", "-c", script, *argv], text=True, **kw)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            procs = d / "cgroup.procs"
            if procs.exists():
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for d in reversed(self.created):
            # a killed task leaves its cgroup a moment after it is reaped
            deadline = time.monotonic() + 10
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


@pytest.fixture
def kubelet_containers() -> Iterator[Callable[[], KubeletContainer]]:
    """Makes kubelet-shaped container cgroups; all are removed at teardown."""
    made: list[KubeletContainer] = []

    def make() -> KubeletContainer:
        made.append(KubeletContainer())
        return made[-1]

    yield make
    for c in reversed(made):
        c.remove()
