from __future__ import annotations

import os
from pathlib import Path

import pytest

from bpf_helpers import loaded_prog_ids, prog_ids_of, wait_unloaded
from conftest import CATALOG_DIR
from ebpf_sidecar.catalog import Catalog, RequestError
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb
from snapshots import column_sum

pytestmark = pytest.mark.usefixtures("needs_root")


def test_same_program_and_parameters_are_shared_and_detached_last(
    programs: ProgramManager,
) -> None:
    mgr = programs
    a = mgr.acquire("syscalls", {})
    b = mgr.acquire("syscalls", {})
    assert a is b and a.users == 2
    ids = prog_ids_of(a.bpf)
    assert ids and ids <= loaded_prog_ids()
    mgr.release(a)
    assert ids <= loaded_prog_ids(), "detached while a stream still uses it"
    mgr.release(b)
    assert not wait_unloaded(ids), "still loaded after the last stream closed"
    assert mgr.loaded() == []


def test_other_parameters_load_a_separate_instance(programs: ProgramManager) -> None:
    mgr = programs
    a = mgr.acquire("syscalls", {})
    b = mgr.acquire("syscalls", {"count_errors": "false"})
    try:
        assert a is not b
        assert len(mgr.loaded()) == 2
        assert not prog_ids_of(a.bpf) & prog_ids_of(b.bpf)
        # count_errors=false compiles the sys_exit hook out
        assert len(prog_ids_of(a.bpf)) == 2 and len(prog_ids_of(b.bpf)) == 1
    finally:
        mgr.release(a)
        mgr.release(b)


def test_bad_parameter_loads_nothing(programs: ProgramManager) -> None:
    mgr = programs
    before = loaded_prog_ids()
    with pytest.raises(RequestError):
        mgr.acquire("syscalls", {"max_entries": "1"})
    assert loaded_prog_ids() <= before  # nothing new (earlier ids may be freed meanwhile)


def test_reading_counts_own_getppid_calls_exactly(programs: ProgramManager) -> None:
    mgr = programs
    loaded = mgr.acquire("syscalls", {})
    try:
        reader = loaded.readers["syscalls"]
        snap = pb.MapSnapshot()
        reader.read(snap)
        before = _count(snap, "getppid")
        for _ in range(1234):
            os.getppid()
        snap = pb.MapSnapshot()
        reader.read(snap)
        # pytest's own threads make no getppid calls: the delta is exact.
        assert _count(snap, "getppid") - before == 1234
        assert snap.max_entries == 10240
    finally:
        mgr.release(loaded)


def _count(snap: pb.MapSnapshot, syscall: str) -> int:
    comm = Path("/proc/self/comm").read_text().strip()
    return column_sum(snap, "count", syscall_id=syscall, comm=comm)


def test_tracepoint_fields_become_defines() -> None:
    from ebpf_sidecar import kernel

    flags = kernel.tracepoint_defines(
        [
            "tracepoint:sched:sched_switch",
            "raw_tracepoint:tcp_retransmit_skb",
            "raw_tracepoint:no_such_event",
            "tracepoint:nope:missing",
        ]
    )
    assert "-DTP_SCHED_SWITCH_HAS_PREV_STATE=1" in flags
    assert "-DTP_SCHED_SWITCH_HAS_NEXT_PID=1" in flags
    # a raw tracepoint gets the fields of the classic event of its name (tcp:tcp_retransmit_skb)
    assert "-DTP_TCP_RETRANSMIT_SKB_HAS_SKADDR=1" in flags
    assert not any("COMMON" in f or "NOPE" in f or "NO_SUCH_EVENT" in f for f in flags)


def test_exclusive_instances_are_never_shared(programs: ProgramManager) -> None:
    # A stream that clears maps on read gets its own instance: its deletes
    # must not take counts away from another stream.
    mgr = programs
    shared = mgr.acquire("syscalls", {})
    a = mgr.acquire("syscalls", {}, exclusive=True)
    b = mgr.acquire("syscalls", {}, exclusive=True)
    try:
        assert len({id(shared), id(a), id(b)}) == 3
        assert a.users == b.users == 1
    finally:
        for loaded in (a, b):
            ids = prog_ids_of(loaded.bpf)
            mgr.release(loaded)
            assert not wait_unloaded(ids)
        assert mgr.loaded() == [shared]
        mgr.release(shared)


BAD_PROGRAM = """
BPF_ARRAY(counts, u64, 1);
TRACEPOINT_PROBE(sched, sched_switch) {
    int zero = 0;
    u64 *v = counts.lookup(&zero);
    if (!v)
        return 0;
    u32 i = bpf_get_prandom_u32();
    v[i]++;  /* no bounds check: the verifier must refuse this */
    return 0;
}
"""

BAD_MANIFEST = """
name: unchecked
hooks: [tracepoint:sched:sched_switch]
maps:
  - name: counts
    max_entries: 1
    key: [{name: slot, type: u32}]
    value: [{name: count, type: u64}]
"""


def test_verifier_rejection_carries_the_verifiers_words(tmp_path: Path) -> None:
    from ebpf_sidecar.programs import LoadError

    d = tmp_path / "unchecked"
    d.mkdir()
    (d / "unchecked.c").write_text(BAD_PROGRAM)
    (d / "manifest.yaml").write_text(BAD_MANIFEST)
    mgr = ProgramManager(load_catalog([tmp_path]))
    before = loaded_prog_ids()
    try:
        with pytest.raises(LoadError) as err:
            mgr.acquire("unchecked", {})
    finally:
        mgr.close()
    message = str(err.value)
    assert "program 'unchecked' failed to load" in message
    # the verifier's own diagnosis of the dereference, not just "failed"
    assert "unbounded memory access" in message, message
    assert loaded_prog_ids() <= before  # nothing new (earlier ids may be freed meanwhile)


def test_btf_offsets_come_from_the_running_kernel() -> None:
    from ebpf_sidecar import kernel

    # x86_64's ptrace ABI puts orig_ax at ORIG_RAX = 120 (uapi/asm/ptrace-abi.h);
    # the BTF of the running kernel must agree, or the syscalls program would
    # read the wrong register.
    assert kernel.btf_member_offset("pt_regs", "orig_ax") == 120
    assert kernel.btf_member_offset("pt_regs", "no_such_member") is None
    assert kernel.btf_defines(["pt_regs.orig_ax"]) == ["-DBTF_OFFSET_PT_REGS_ORIG_AX=120"]


def test_btf_offsets_reach_into_anonymous_members() -> None:
    from ebpf_sidecar import kernel

    # struct sock_common { union { __addrpair skc_addrpair; struct { __be32 skc_daddr;
    # __be32 skc_rcv_saddr; }; }; union { skc_hash ... }; union { __portpair
    # skc_portpair; struct { __be16 skc_dport; __u16 skc_num; }; }; ...}: the
    # layout bpf/tcp reads the peer with, fixed by the kernel (inet_hashtables.h
    # compares the pairs as one word).
    assert kernel.btf_member_offset("sock_common", "skc_daddr") == 0
    assert kernel.btf_member_offset("sock_common", "skc_rcv_saddr") == 4
    assert kernel.btf_member_offset("sock_common", "skc_dport") == 12
    assert kernel.btf_member_offset("sock_common", "skc_num") == 14


def test_btf_enums_come_from_the_running_kernel() -> None:
    from ebpf_sidecar import kernel

    # enum req_op has been stable since the ops got their own field (Linux 4.10)
    assert kernel.btf_enum_value("REQ_OP_READ") == 0
    assert kernel.btf_enum_value("REQ_OP_WRITE") == 1
    assert kernel.btf_enum_value("REQ_OP_NO_SUCH_OP") is None
    flags = kernel.btf_defines([], ["REQ_OP_WRITE", "REQ_OP_NO_SUCH_OP"])
    assert flags == ["-DBTF_ENUM_REQ_OP_WRITE=1"]


# A program of a --programs-dir folder that uses the catalog's shared header:
# a one-entry map keyed by syscall, so the first of two syscalls takes the
# entry and every call of the second is a counted drop.
FULL_MAP_PROGRAM = """
#include <ebpfreceiver.h>
BPF_PERCPU_HASH(calls, u32, u64, 1);
BPF_PERCPU_ARRAY(calls_dropped, u64, 1);
RAW_TRACEPOINT_PROBE(sys_enter) {
    u32 id = ctx->args[1];
    if (bpf_get_current_pid_tgid() >> 32 != TGID || (id != FIRST && id != SECOND))
        return 0;
    u64 zero = 0, *count = calls.lookup_or_try_init(&id, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(calls_dropped.lookup(DROPPED_KEY));
    return 0;
}
"""

FULL_MAP_MANIFEST = """
name: full_map
hooks: [raw_tracepoint:sys_enter]
parameters:
  - {name: tgid, type: int, default: 1, min: 1, max: 4194304, define: TGID}
  - {name: first, type: int, default: 0, min: 0, max: 1023, define: FIRST}
  - {name: second, type: int, default: 0, min: 0, max: 1023, define: SECOND}
maps:
  - name: calls
    max_entries: 1
    dropped_counter: calls_dropped
    key: [{name: id, type: u32, decoders: [syscall]}]
    value: [{name: count, type: u64}]
"""


def test_programs_dir_programs_count_drops_with_the_shared_header(tmp_path: Path) -> None:
    from bcc.syscall import syscalls

    ids = {name.decode(): number for number, name in syscalls.items()}
    d = tmp_path / "full_map"
    d.mkdir()
    (d / "full_map.c").write_text(FULL_MAP_PROGRAM)
    (d / "manifest.yaml").write_text(FULL_MAP_MANIFEST)
    mgr = ProgramManager(load_catalog([CATALOG_DIR, tmp_path]))
    params = {"tgid": str(os.getpid()), "first": str(ids["getppid"]), "second": str(ids["getuid"])}
    loaded = mgr.acquire("full_map", params)
    try:
        for _ in range(5):
            os.getppid()
        for _ in range(7):
            os.getuid()
        snap = pb.MapSnapshot()
        loaded.readers["calls"].read(snap)
        assert list(snap.key_columns[0].strings) == ["getppid"]
        assert list(snap.value_columns[0].uints) == [5]
        assert snap.dropped_updates == 7
    finally:
        mgr.release(loaded)


def test_map_sizes_follow_their_parameters(catalog: Catalog) -> None:
    mgr = ProgramManager(catalog)
    loaded = mgr.acquire("syscalls", {"max_entries": "4096"})
    try:
        snap = pb.MapSnapshot()
        loaded.readers["syscall_errors"].read(snap)
        assert snap.max_entries == 4096
    finally:
        mgr.release(loaded)


@pytest.mark.parametrize("scale", ["0", "1", "2", "3"])
def test_latency_histograms_compile_at_every_histogram_scale(
    programs: ProgramManager, scale: str
) -> None:
    """The C sources size their histograms as the manifests say at every scale
    (MapReader compares the compiled maps with the manifest's sizes)."""
    wanted = [
        ("runqlat", {}, "runqueue_latency"),
        ("runqlat", {"per_cgroup": "true"}, "runqueue_latency_by_cgroup"),
        ("cpu", {}, "cpu_usage"),
        ("block", {}, "disk_latency"),
        ("tcp", {"rtt": "true"}, "rtt"),
    ]
    for name, params, map_name in wanted:
        loaded = programs.acquire(name, {**params, "histogram_scale": scale})
        try:
            snap = pb.MapSnapshot()
            loaded.readers[map_name].read(snap)
            assert not snap.error, (name, snap.error)
        finally:
            programs.release(loaded)


def test_a_manifest_size_the_source_does_not_have_loads_nothing(tmp_path: Path) -> None:
    from ebpf_sidecar.programs import LoadError

    d = tmp_path / "unchecked"
    d.mkdir()
    (d / "unchecked.c").write_text("BPF_ARRAY(counts, u64, 2);\n")
    (d / "manifest.yaml").write_text(
        BAD_MANIFEST.replace("hooks: [tracepoint:sched:sched_switch]", "hooks: []")
    )
    mgr = ProgramManager(load_catalog([tmp_path]))
    with pytest.raises(
        LoadError,
        match=r"program 'unchecked' does not match its manifest: .*"
        r"max_entries: the manifest says 1 = 1 for these parameters, the "
        r"compiled map has 2 entries",
    ):
        mgr.acquire("unchecked", {})
    assert mgr.loaded() == []


LOG_WHILE_COMPILING = """
import logging, sys, threading, time
from pathlib import Path
from ebpf_sidecar import cli
from ebpf_sidecar.manifest import load_catalog
from ebpf_sidecar.programs import ProgramManager

cli.configure_logging("INFO")  # as the sidecar does
log = logging.getLogger("ticker")
stop, ticks, compiling = threading.Event(), [0], []

def tick():
    while not stop.is_set():
        ticks[0] += 1
        log.info("tick %d", ticks[0])
        time.sleep(0.001)

ticker = threading.Thread(target=tick)
ticker.start()
manager = ProgramManager(load_catalog([Path(sys.argv[1])]))
before = ticks[0]
manager.release(manager.acquire("oom", {}))
compiling.append(ticks[0] - before)
stop.set()
ticker.join()
manager.close()
print(ticks[0], compiling[0])
"""


def test_lines_other_threads_log_while_a_program_compiles_are_kept() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", LOG_WHILE_COMPILING, str(CATALOG_DIR)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    total, during_compile = map(int, done.stdout.split())
    assert during_compile > 10, "the ticker must log while the program compiles"
    logged = [
        int(line.rsplit(" ", 1)[1]) for line in done.stderr.splitlines() if "ticker: tick" in line
    ]
    assert logged == list(range(1, total + 1)), f"{total - len(logged)} lines lost"


SECRET = "TOP_SECRET_LINE"
PEEK_MANIFEST = """
name: peek
hooks: []
maps: []
"""


@pytest.mark.parametrize(
    "source, refusal",
    [
        ('#include "../secret.h"\n', "includes a file outside the program's folder"),
        ('#include "{secret}"\n', "includes a file outside the program's folder"),
        ("#include <{secret}>\n", "includes a file outside the program's folder"),
        ("#include <../../secret.h>\n", "includes a file outside the program's folder"),
        ('%:include "../secret.h"\n', "includes a file outside the program's folder"),
        ('#inc\\\nlude "../secret.h"\n', "includes a file outside the program's folder"),
        ('char *s = "/*";\n#include "../secret.h" // */\n', "outside the program's folder"),
        ('#include "{program}/inner.h"\n', "inner.h:1: #include "),
        ('#define F "../secret.h"\n#include F\n', "the file name comes from a macro"),
    ],
    ids=[
        "relative",
        "absolute",
        "absolute-angle",
        "angle-dotdot",
        "digraph",
        "spliced",
        "comment-in-string",
        "through-own-header",
        "macro",
    ],
)
def test_an_include_outside_the_programs_folder_is_refused_and_never_shown(
    tmp_path: Path, source: str, refusal: str
) -> None:
    from ebpf_sidecar.programs import LoadError

    secret = tmp_path / "secret.h"
    secret.write_text(f"{SECRET}_1 x;\n{SECRET}_2 y;\n")
    d = tmp_path / "peek"
    d.mkdir()
    (d / "inner.h").write_text(f'#include "{secret}"\n')
    (d / "peek.c").write_text(source.format(secret=secret, program=d))
    (d / "manifest.yaml").write_text(PEEK_MANIFEST)
    mgr = ProgramManager(load_catalog([CATALOG_DIR, tmp_path]))
    try:
        with pytest.raises(LoadError) as refused:
            mgr.acquire("peek", {})
    finally:
        mgr.close()
    assert refused.value.args[0].startswith("program 'peek' was not compiled: ")
    assert refusal in str(refused.value)
    assert SECRET not in str(refused.value)


def test_own_headers_and_the_catalogs_are_included(tmp_path: Path) -> None:
    d = tmp_path / "peek"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "local.h").write_text("#define LOCAL 1\n")
    # BCC compiles the source as /virtual/main.c: a header of its own
    # folder is named by its absolute path
    (d / "peek.c").write_text(
        f'#include <ebpfreceiver.h>\n#include "{d}/sub/local.h"\n#include <linux/sched.h>\n'
        "BPF_ARRAY(a, u64, LOCAL);\n"
    )
    (d / "manifest.yaml").write_text(PEEK_MANIFEST)
    mgr = ProgramManager(load_catalog([CATALOG_DIR, tmp_path]))
    try:
        mgr.release(mgr.acquire("peek", {}))
    finally:
        mgr.close()
