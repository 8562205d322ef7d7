"""The profile program's catalog rules, the profiles judge, the OTLP encoding
and symbolization, each on its own (the pipeline: tests/test_profiles.py)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pp

from ebpf_sidecar import otlp_profiles
from ebpf_sidecar.catalog import Catalog, CatalogError
from ebpf_sidecar.decoders import ksym
from ebpf_sidecar.manifest import load_manifest
from ebpf_sidecar.plan import WantedProfiles, plan
from ebpf_sidecar.profiles import Sample, folded
from ebpf_sidecar.symbols import KERNEL_MODULE, Frame, Symbolizer
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

SAMPLER = """
name: prog
hooks: [perf_event:cpu-clock]
parameters:
  - {name: hz, type: int, default: 19, min: 1, max: 1000, define: HZ}
profile:
  counts_map: counts
  count_field: count
  stack_map: stacks
  user_stack_field: user_stack_id
  kernel_stack_field: kernel_stack_id
  frequency_parameter: hz
maps:
  - name: counts
    max_entries: 8
    pid_field: pid
    key:
      - {name: pid, type: u32}
      - {name: user_stack_id, type: s32}
      - {name: kernel_stack_id, type: s32}
    value: [{name: count, type: u64}]
"""


def _write(tmp_path: Path, manifest: str) -> Path:
    d = tmp_path / "prog"
    d.mkdir()
    (d / "prog.c").write_text("// empty\n")
    (d / "manifest.yaml").write_text(manifest)
    return d / "manifest.yaml"


def test_a_sampling_program_loads_and_says_so(tmp_path: Path) -> None:
    prog = load_manifest(_write(tmp_path, SAMPLER))
    assert prog.profile is not None and prog.profile.frequency_parameter == "hz"
    assert prog.to_proto().profiles


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        (
            SAMPLER.replace("counts_map: counts", "counts_map: nope"),
            r"counts_map: 'nope' is no map",
        ),
        (
            SAMPLER.replace("{name: user_stack_id, type: s32}", "{name: user_stack_id, type: u32}"),
            r"user_stack_field: 'user_stack_id' is no s32 key field",
        ),
        (SAMPLER.replace("frequency_parameter: hz", "frequency_parameter: x"), r"no int parameter"),
        (SAMPLER.replace("    pid_field: pid\n", ""), r"needs a pid_field"),
        (SAMPLER.replace("perf_event:cpu-clock", "perf_event:cycles"), r"perf_event hooks are"),
        (
            SAMPLER[: SAMPLER.index("profile:")] + SAMPLER[SAMPLER.index("maps:") :],
            r"need a profile section",
        ),
    ],
)
def test_broken_profile_sections_name_the_field(tmp_path: Path, broken: str, error: str) -> None:
    with pytest.raises(CatalogError, match=error):
        load_manifest(_write(tmp_path, broken))


def test_the_catalog_profile_program_samples_stacks(catalog: Catalog) -> None:
    prog = catalog.program("profile")
    assert prog.profile is not None
    assert prog.parameters["frequency_hz"].default == "19"
    assert (prog.parameters["frequency_hz"].min, prog.parameters["frequency_hz"].max) == (1, 1000)


def test_the_judge_accepts_a_profiles_request(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="profile")],
        profiles=pb.ProfilesRequest(program="profile", per_container=True),
    )
    judged = plan(catalog, req)
    assert judged.errors == []
    assert judged.profiles == WantedProfiles("profile", per_container=True)


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (
            pb.StreamRequest(
                programs=[pb.ProgramRequest(name="cpu")],
                profiles=pb.ProfilesRequest(program="profile"),
            ),
            "'profile' is not among the requested programs (cpu); request a program that "
            "samples stacks (profile)",
        ),
        (
            pb.StreamRequest(
                programs=[pb.ProgramRequest(name="cpu")],
                profiles=pb.ProfilesRequest(program="cpu"),
            ),
            "program 'cpu' samples no stacks; programs that do: profile",
        ),
        (
            pb.StreamRequest(
                programs=[pb.ProgramRequest(name="profile")],
                maps=[pb.MapRequest(program="profile", map="stack_counts")],
                profiles=pb.ProfilesRequest(program="profile"),
            ),
            "map profile/stack_counts is read for profiles, which clears it every interval",
        ),
        (
            pb.StreamRequest(
                programs=[pb.ProgramRequest(name="profile", parameters={"frequency_hz": "5000"})],
            ),
            "5000 is out of range; use 1..1000",
        ),
    ],
)
def test_the_judge_refuses_bad_profiles_requests(
    catalog: Catalog, req: pb.StreamRequest, error: str
) -> None:
    judged = plan(catalog, req)
    assert any(error in m for _, m in judged.errors), judged.errors
    assert judged.profiles is None


def _frame(name: str, module: str = "/usr/bin/app", kernel: bool = False) -> Frame:
    return Frame(name, module, 0x1000, True, kernel)


SAMPLES = [
    Sample(1, "app", "c" * 64, "pod-1", (_frame("leaf"), _frame("main")), 5),
    Sample(1, "app", "c" * 64, "pod-1", (_frame("vfs_read", KERNEL_MODULE, True),), 2),
    Sample(2, "helper", "c" * 64, "pod-1", (_frame("leaf"), _frame("main")), 1),
    Sample(3, "host", "", "", (Frame("0xdead", "", 0xDEAD, False, False),), 4),
]


def _attrs(rp: pp.ResourceProfiles) -> dict[str, object]:
    return {
        kv.key: kv.value.int_value if kv.value.HasField("int_value") else kv.value.string_value
        for kv in rp.resource.attributes
    }


def test_one_profile_per_process_with_its_identity() -> None:
    data = otlp_profiles.build(SAMPLES, 1_000, 2_000, frequency_hz=19)
    d = data.dictionary
    # index 0 of every table is the empty element, as pprofile requires
    assert d.string_table[0] == ""
    assert d.stack_table[0] == pp.Stack()
    assert d.location_table[0] == pp.Location()
    assert d.function_table[0] == pp.Function()
    by_pid = {_attrs(rp)["process.pid"]: rp for rp in data.resource_profiles}
    assert set(by_pid) == {1, 2, 3}
    assert _attrs(by_pid[1]) == {
        "process.pid": 1,
        "process.executable.name": "app",
        "container.id": "c" * 64,
        "k8s.pod.uid": "pod-1",
    }
    assert "container.id" not in _attrs(by_pid[3])
    [profile] = by_pid[1].scope_profiles[0].profiles
    assert (profile.time_unix_nano, profile.duration_nano) == (1_000, 1_000)
    assert profile.period == round(1e9 / 19)
    assert d.string_table[profile.period_type.type_strindex] == "cpu"
    assert d.string_table[profile.period_type.unit_strindex] == "nanoseconds"
    assert d.string_table[profile.sample_type.type_strindex] == "samples"
    assert [s.values[0] for s in profile.samples] == [5, 2]
    names = [
        d.string_table[d.function_table[d.location_table[i].lines[0].function_index].name_strindex]
        for i in d.stack_table[profile.samples[0].stack_index].location_indices
    ]
    assert names == ["leaf", "main"]  # leaf first
    # the same stack in two processes is one stack of the dictionary
    [other] = by_pid[2].scope_profiles[0].profiles
    assert other.samples[0].stack_index == profile.samples[0].stack_index
    # an unresolved frame keeps its address
    [host] = by_pid[3].scope_profiles[0].profiles
    [loc] = d.stack_table[host.samples[0].stack_index].location_indices
    assert d.location_table[loc].address == 0xDEAD


def test_one_profile_per_container_with_processes_as_sample_attributes() -> None:
    data = otlp_profiles.build(SAMPLES, 1_000, 2_000, frequency_hz=19, per_container=True)
    resources = [_attrs(rp) for rp in data.resource_profiles]
    assert {"container.id": "c" * 64, "k8s.pod.uid": "pod-1"} in resources
    assert len(resources) == 2  # the container, and the host process on its own
    [container] = [
        rp for rp in data.resource_profiles if _attrs(rp).get("container.id") == "c" * 64
    ]
    d = data.dictionary
    pids = {
        d.attribute_table[i].value.int_value
        for s in container.scope_profiles[0].profiles[0].samples
        for i in s.attribute_indices
        if d.string_table[d.attribute_table[i].key_strindex] == "process.pid"
    }
    assert pids == {1, 2}


def test_folded_stacks_are_root_first_under_the_process_name() -> None:
    assert folded(SAMPLES[:3]) == {"app;main;leaf": 5, "app;vfs_read": 2, "helper;main;leaf": 1}


def test_user_frames_of_a_running_process_resolve() -> None:
    libc = ctypes.CDLL(None)
    addr = ctypes.cast(libc.getppid, ctypes.c_void_p).value
    assert addr is not None
    symbols = Symbolizer(max_processes=2)
    try:
        [frame] = symbols.user(os.getpid(), [addr])
        assert frame.resolved and "getppid" in frame.function, frame
        assert "libc" in frame.module
        # an address no module maps keeps its address, and ends the stack
        # (the frame pointer chain broke there)
        frames = symbols.user(os.getpid(), [addr, 0x10, addr])
        assert [(f.resolved, f.function) for f in frames[1:]] == [(False, "0x10")]
        assert symbols.unresolved == 1
    finally:
        symbols.close()


def test_kernel_frames_resolve_from_kallsyms() -> None:
    ksym.KSYMS.name(0)  # load the table
    vfs_read = next(
        int(line.split()[0], 16)
        for line in Path("/proc/kallsyms").read_text().splitlines()
        if line.split()[2] == "vfs_read"
    )
    [frame] = Symbolizer().kernel([vfs_read + 4])
    assert (frame.function, frame.module, frame.resolved) == ("vfs_read", KERNEL_MODULE, True)


def test_the_cache_of_symbols_is_bounded() -> None:
    symbols = Symbolizer(max_processes=1)
    try:
        symbols.user(os.getpid(), [0x10])
        symbols.user(1, [0x10])
        assert len(symbols._caches) == 1
    finally:
        symbols.close()


def test_the_flame_graph_command_turns_otlp_profiles_into_pprof() -> None:
    import gzip

    from ebpf_sidecar import flamegraph
    from perftools.profiles import profile_pb2 as pprof

    data = otlp_profiles.build(SAMPLES, 1_000, 2_000, frequency_hz=99)
    stacks = flamegraph.stacks(pp.ProfilesData.FromString(data.SerializeToString()))
    assert sorted((s.pid, s.count) for s in stacks) == [(1, 2), (1, 5), (2, 1), (3, 4)]
    [app] = [s for s in stacks if s.pid == 1 and s.count == 5]
    assert [f for f, _, _ in app.frames] == ["leaf", "main"]
    assert app.container_id == "c" * 64
    prof = pprof.Profile.FromString(gzip.decompress(flamegraph.to_pprof(stacks, 10, 1, 0)))
    names = {f.id: prof.string_table[f.name] for f in prof.function}
    location = {loc.id: names[loc.line[0].function_id] for loc in prof.location}
    by_stack = {tuple(location[i] for i in s.location_id): list(s.value) for s in prof.sample}
    # leaf first, the process as the root
    assert by_stack[("leaf", "main", "app")] == [5, 50]
    assert [prof.string_table[t.type] for t in prof.sample_type] == ["samples", "cpu"]
    assert flamegraph.folded(stacks).splitlines()[0] == "app;main;leaf 5"


CONTAINER = "a" * 64
POD = "0c5e7f2a-1b2c-4d5e-8f90-123456789abc"
SCOPE = (
    "/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{POD.replace('-', '_')}.slice/cri-containerd-{CONTAINER}.scope"
)


@pytest.mark.parametrize(
    ("entry", "path", "match"),
    [
        (CONTAINER, SCOPE, True),
        (CONTAINER[:12], SCOPE, True),
        (CONTAINER[:12], SCOPE + "/init", True),  # below the container
        ("b" * 12, SCOPE, False),
        (POD, SCOPE, True),
        (POD, SCOPE.rsplit("/", 1)[0], True),  # the pod's own cgroup
        (POD, "/system.slice/cron.service", False),
        ("/kubepods.slice", SCOPE, True),
        ("/kubepods.slice/", "/kubepods.slice", True),
        ("/kubepods", "/kubepods.slice", False),  # whole components only
    ],
)
def test_filter_entries_name_cgroups_and_what_is_below(entry: str, path: str, match: bool) -> None:
    from ebpf_sidecar import cgroup_filter

    assert cgroup_filter.check(entry) is None
    assert cgroup_filter.matches(entry, path) is match
    assert cgroup_filter.resolve([entry], {7: path}) == ({7} if match else set())


def test_the_judge_refuses_filter_entries_it_cannot_match(catalog: Catalog) -> None:
    req = pb.StreamRequest(
        programs=[pb.ProgramRequest(name="profile")],
        profiles=pb.ProfilesRequest(program="profile", cgroups=["/ok", "nginx"]),
    )
    judged = plan(catalog, req)
    assert [f for f, _ in judged.errors] == ["profiles.cgroups[1]"]
    assert "'nginx' is neither a container id" in judged.errors[0][1]
    assert judged.profiles is None
