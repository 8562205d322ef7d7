"""Samples as OTLP profiles: a serialized ``ProfilesData`` (profiles v1development).

Built with the ``opentelemetry-proto`` package pinned in requirements.txt,
whose profiles v1development messages have the field numbers and types of
the pdata the collector is built with (go.opentelemetry.io/collector/pdata
v1.71.0, from opentelemetry-proto-go's profiles v0.4.1; checked field by
field, see docs/profiles.md). The receiver hands the bytes to
pprofile.ProtoUnmarshaler as they are.

One ResourceProfiles per process (``process.pid``, ``process.executable.name``,
``container.id``, ``k8s.pod.uid`` when known), or per container with
``per_container`` (processes outside containers stay one each; the pid and
executable name become sample attributes). One Profile per resource per
interval: sample type ``samples``/``count``, period type ``cpu``/``nanoseconds``,
period 1e9 / frequency (as the OpenTelemetry eBPF profiler writes them), so
count x period is on-CPU time. Stacks are leaf first; kernel frames carry
``profile.frame.type`` ``kernel``, user frames ``native``; every location
names its mapping (the module file, ``[kernel.kallsyms]`` for the kernel)
and keeps its address.

The dictionary is shared by all profiles of the message; index 0 of every
table is the empty element, as pprofile requires.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pp

from ebpf_sidecar import __version__
from ebpf_sidecar.profiles import Sample
from ebpf_sidecar.symbols import Frame

SCOPE = "ebpfreceiver/profile"
FRAME_TYPE = "profile.frame.type"


class _Dictionary:
    def __init__(self, d: pp.ProfilesDictionary) -> None:
        self.d = d
        self._strings: dict[str, int] = {}
        self._functions: dict[str, int] = {}
        self._mappings: dict[str, int] = {}
        self._locations: dict[tuple[str, str, int], int] = {}
        self._stacks: dict[tuple[int, ...], int] = {}
        self._attributes: dict[tuple[str, str | int], int] = {}
        # index 0: the empty element of each table
        self.string("")
        d.mapping_table.add()
        d.location_table.add()
        d.function_table.add()
        d.link_table.add()
        d.attribute_table.add()
        d.stack_table.add()

    def string(self, s: str) -> int:
        i = self._strings.get(s)
        if i is None:
            i = self._strings[s] = len(self.d.string_table)
            self.d.string_table.append(s)
        return i

    def attribute(self, key: str, value: str | int) -> int:
        i = self._attributes.get((key, value))
        if i is None:
            i = self._attributes[(key, value)] = len(self.d.attribute_table)
            a = self.d.attribute_table.add(key_strindex=self.string(key))
            if isinstance(value, int):
                a.value.int_value = value
            else:
                a.value.string_value = value
        return i

    def mapping(self, module: str) -> int:
        if not module:
            return 0
        i = self._mappings.get(module)
        if i is None:
            i = self._mappings[module] = len(self.d.mapping_table)
            self.d.mapping_table.add(filename_strindex=self.string(module))
        return i

    def function(self, name: str) -> int:
        i = self._functions.get(name)
        if i is None:
            i = self._functions[name] = len(self.d.function_table)
            self.d.function_table.add(
                name_strindex=self.string(name), system_name_strindex=self.string(name)
            )
        return i

    def location(self, frame: Frame) -> int:
        # A resolved frame is one location per function and module (the
        # flame graph merges call sites); an unresolved one keeps its address.
        address = 0 if frame.resolved else frame.address
        key = (frame.function, frame.module, address)
        i = self._locations.get(key)
        if i is None:
            i = self._locations[key] = len(self.d.location_table)
            loc = self.d.location_table.add(
                mapping_index=self.mapping(frame.module),
                address=frame.address,
                attribute_indices=[
                    self.attribute(FRAME_TYPE, "kernel" if frame.kernel else "native")
                ],
            )
            loc.lines.add(function_index=self.function(frame.function))
        return i

    def stack(self, frames: Sequence[Frame]) -> int:
        locations = tuple(self.location(f) for f in frames)
        i = self._stacks.get(locations)
        if i is None:
            i = self._stacks[locations] = len(self.d.stack_table)
            self.d.stack_table.add(location_indices=locations)
        return i


def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    return kv


def build(
    samples: Iterable[Sample],
    start_ns: int,
    end_ns: int,
    frequency_hz: int,
    per_container: bool = False,
) -> pp.ProfilesData:
    """One ProfilesData for one interval's samples."""
    data = pp.ProfilesData()
    dictionary = _Dictionary(data.dictionary)
    period = round(1e9 / frequency_hz)
    groups: dict[tuple[str | int, ...], list[Sample]] = {}
    for s in samples:
        if s.count <= 0:
            continue
        key: tuple[str | int, ...]
        if per_container and s.container_id:
            key = ("container", s.container_id, s.pod_uid)
        else:
            key = ("process", s.pid, s.comm, s.container_id, s.pod_uid)
        groups.setdefault(key, []).append(s)
    for key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rp = data.resource_profiles.add()
        first = group[0]
        attributes: list[tuple[str, str | int]] = []
        if key[0] == "process":
            attributes += [("process.pid", first.pid), ("process.executable.name", first.comm)]
        if first.container_id:
            attributes.append(("container.id", first.container_id))
        if first.pod_uid:
            attributes.append(("k8s.pod.uid", first.pod_uid))
        rp.resource.attributes.extend(_kv(k, v) for k, v in attributes)
        sp = rp.scope_profiles.add()
        sp.scope.name = SCOPE
        sp.scope.version = __version__
        profile = sp.profiles.add(
            time_unix_nano=start_ns,
            duration_nano=max(0, end_ns - start_ns),
            period=period,
            profile_id=os.urandom(16),
        )
        profile.sample_type.type_strindex = dictionary.string("samples")
        profile.sample_type.unit_strindex = dictionary.string("count")
        profile.period_type.type_strindex = dictionary.string("cpu")
        profile.period_type.unit_strindex = dictionary.string("nanoseconds")
        for s in group:
            sample = profile.samples.add(stack_index=dictionary.stack(s.frames), values=[s.count])
            if key[0] == "container":
                sample.attribute_indices.extend(
                    [
                        dictionary.attribute("process.pid", s.pid),
                        dictionary.attribute("process.executable.name", s.comm),
                    ]
                )
    return data
