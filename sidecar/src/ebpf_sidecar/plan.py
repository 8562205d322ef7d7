"""The judge of a StreamRequest: what Plan answers and what Stream checks first.

Every rule of the catalog a client can break (program names, parameter
types and ranges, which maps parameters compile in, map requests, the
interval) is applied here, once, without compiling anything. Stream refuses
a request this judge finds problems in; Plan returns the same problems as
field paths, so that the receiver reports them at collector start against
its own config paths instead of re-implementing the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_sidecar import cgroup_filter
from ebpf_sidecar.catalog import (
    SEVERITIES,
    Catalog,
    EventSpec,
    Program,
    RequestError,
    enabling_parameter,
)
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

MIN_INTERVAL_S = 0.1
# A day: longer says nothing a collector can use, and a wait that long
# overflows the thread timeout (threading.TIMEOUT_MAX, about 292 years, is
# below what a Duration can hold).
MAX_INTERVAL_S = 86400.0
DEFAULT_INTERVAL_S = 10.0
# Events per second of one event type a stream gets when its request says 0,
# and the most it may ask for: past that an event storm costs the sidecar a
# core (docs/events.md has the numbers).
DEFAULT_RATE_LIMIT = 1000
MAX_RATE_LIMIT = 100_000


@dataclass(frozen=True)
class WantedMap:
    """One MapRequest of a stream, validated."""

    program: str
    map: str
    clear: bool  # clear_after_read: delta reads, on an instance of the program of its own
    per_cpu: bool


@dataclass(frozen=True)
class WantedProfiles:
    """The stream's ProfilesRequest, validated: whose samples become OTLP profiles."""

    program: str
    per_container: bool
    cgroups: tuple[str, ...] = ()


@dataclass(frozen=True)
class WantedEvent:
    """One event type a stream gets, from an EventRequest, validated."""

    program: str
    event: EventSpec
    rate_limit: int


@dataclass(frozen=True)
class PlannedProgram:
    program: Program
    # the request's parameter values, as text (what ProgramManager.acquire takes)
    requested: dict[str, str]
    # every parameter's validated number, defaults filled in
    numbers: dict[str, int]

    def to_proto(self) -> pb.PlannedProgram:
        p = self.program
        return pb.PlannedProgram(
            name=p.name,
            parameters={
                name: _text(spec.type, spec.allowed, self.numbers[name])
                for name, spec in p.parameters.items()
            },
            maps=[
                m.to_proto(self.numbers) for m in p.maps.values() if p.map_enabled(m, self.numbers)
            ],
        )


def _text(type_: str, allowed: tuple[str, ...], number: int) -> str:
    if type_ == "bool":
        return "true" if number else "false"
    if type_ == "enum":
        return allowed[number]
    return str(number)


@dataclass
class Plan:
    interval: float
    programs: list[PlannedProgram] = field(default_factory=list)
    maps: list[WantedMap] = field(default_factory=list)
    events: list[WantedEvent] = field(default_factory=list)
    profiles: WantedProfiles | None = None
    # (path into the StreamRequest, message), every problem found
    errors: list[tuple[str, str]] = field(default_factory=list)

    def to_proto(self) -> pb.PlanResponse:
        return pb.PlanResponse(
            errors=[pb.FieldError(field=f, message=m) for f, m in self.errors],
            programs=[p.to_proto() for p in self.programs],
        )

    def raise_errors(self) -> None:
        """A RequestError with every problem ("path: message; ..."), if any."""
        if self.errors:
            raise RequestError("; ".join(f"{f}: {m}" for f, m in self.errors))


def plan(catalog: Catalog, request: pb.StreamRequest) -> Plan:
    """Judge ``request`` against ``catalog`` without loading anything."""
    result = Plan(interval=DEFAULT_INTERVAL_S)
    if request.HasField("interval"):
        # not ToTimedelta(): a timedelta overflows long before a Duration does
        result.interval = request.interval.seconds + request.interval.nanos / 1e9
    if result.interval > MAX_INTERVAL_S:
        result.errors.append(
            (
                "interval",
                f"{result.interval:g}s is above the maximum {MAX_INTERVAL_S:g}s (a day); "
                f"use at most {MAX_INTERVAL_S:g}s",
            )
        )
    elif result.interval < MIN_INTERVAL_S:
        result.errors.append(
            (
                "interval",
                f"{result.interval:g}s is below the minimum {MIN_INTERVAL_S:g}s; "
                f"use at least {MIN_INTERVAL_S:g}s",
            )
        )

    planned: dict[str, PlannedProgram] = {}
    requested_at: dict[str, int] = {}
    for i, p in enumerate(request.programs):
        where = f"programs[{i}]"
        if p.name in requested_at:
            result.errors.append(
                (
                    f"{where}.name",
                    f"program {p.name!r} is also requested as "
                    f"programs[{requested_at[p.name]}]; request each program once",
                )
            )
            continue
        requested_at[p.name] = i
        try:
            program = catalog.program(p.name)
        except RequestError as e:
            result.errors.append((f"{where}.name", str(e)))
            continue
        numbers, problems = program.check_parameters(dict(p.parameters))
        result.errors += [(f"{where}.parameters.{name}", m) for name, m in problems]
        if not problems:
            planned[p.name] = PlannedProgram(program, dict(p.parameters), numbers)
            result.programs.append(planned[p.name])

    for i, m in enumerate(request.maps):
        where = f"maps[{i}]"
        if m.program not in requested_at:
            result.errors.append((f"{where}.program", not_requested(m.program, requested_at)))
            continue
        try:
            spec = catalog.map(m.program, m.map)
        except RequestError as e:
            result.errors.append((f"{where}.map", str(e)))
            continue
        if any(w.program == m.program and w.map == m.map for w in result.maps):
            result.errors.append(
                (where, f"map {m.map!r} of {m.program!r} is requested twice; request each map once")
            )
            continue
        if m.per_cpu and "cpu" in spec.key_names:
            result.errors.append(
                (f"{where}.per_cpu", f"map {m.program}/{m.map} already has a key field 'cpu'")
            )
            continue
        loaded = planned.get(m.program)
        if loaded is not None and not loaded.program.map_enabled(spec, loaded.numbers):
            name, wanted = enabling_parameter(spec.enabled_by)
            value = "true" if wanted else "false"
            other = "false" if wanted else "true"
            result.errors.append(
                (
                    f"{where}.map",
                    f"map {m.program}/{m.map} exists only when parameter {name!r} of program "
                    f"{m.program!r} is {value}, and it is {other}; set that parameter to {value}",
                )
            )
            continue
        result.maps.append(WantedMap(m.program, m.map, m.clear_after_read, m.per_cpu))
    _plan_events(catalog, request, requested_at, result)
    if request.HasField("profiles"):
        _plan_profiles(catalog, request.profiles, planned, requested_at, result)
    return result


def not_requested(program: str, requested_at: dict[str, int]) -> str:
    """Why a map, event or profiles request naming ``program`` is refused."""
    return (
        f"{program!r} is not among the requested programs "
        f"({', '.join(sorted(requested_at)) or 'none'})"
    )


def _plan_events(
    catalog: Catalog, request: pb.StreamRequest, requested_at: dict[str, int], result: Plan
) -> None:
    for i, e in enumerate(request.events):
        where = f"events[{i}]"
        if e.program not in requested_at:
            result.errors.append((f"{where}.program", not_requested(e.program, requested_at)))
            continue
        try:
            program = catalog.program(e.program)
        except RequestError:
            continue  # reported at programs[]
        if e.event and e.event not in program.events:
            result.errors.append(
                (
                    f"{where}.event",
                    f"program {e.program!r} has no event {e.event!r}; its events: "
                    f"{', '.join(program.events) or 'none'}",
                )
            )
            continue
        if not e.event and not program.events:
            result.errors.append((f"{where}.program", f"program {e.program!r} sends no events"))
            continue
        if e.min_severity and e.min_severity not in SEVERITIES:
            result.errors.append(
                (
                    f"{where}.min_severity",
                    f"{e.min_severity!r} is not a severity; use one of {', '.join(SEVERITIES)}",
                )
            )
            continue
        if e.rate_limit > MAX_RATE_LIMIT:
            result.errors.append(
                (
                    f"{where}.rate_limit",
                    f"{e.rate_limit} is above the maximum {MAX_RATE_LIMIT}; use "
                    f"1..{MAX_RATE_LIMIT} (0: the default {DEFAULT_RATE_LIMIT})",
                )
            )
            continue
        least = SEVERITIES[e.min_severity] if e.min_severity else 0
        for spec in program.events.values():
            if e.event and spec.name != e.event:
                continue
            if spec.severity_number < least:
                continue
            if any(w.event.name == spec.name for w in result.events):
                result.errors.append(
                    (where, f"event {spec.name!r} is requested twice; request each event once")
                )
                continue
            result.events.append(WantedEvent(e.program, spec, e.rate_limit or DEFAULT_RATE_LIMIT))


def _plan_profiles(
    catalog: Catalog,
    wanted: pb.ProfilesRequest,
    planned: dict[str, PlannedProgram],
    requested_at: dict[str, int],
    result: Plan,
) -> None:
    samplers = sorted(n for n, p in catalog.programs.items() if p.profile is not None)
    if wanted.program not in requested_at:
        result.errors.append(
            (
                "profiles.program",
                f"{not_requested(wanted.program, requested_at)}; request a program that "
                f"samples stacks ({', '.join(samplers) or 'none in this catalog'})",
            )
        )
        return
    program = catalog.programs.get(wanted.program)
    if program is None or program.profile is None:
        result.errors.append(
            (
                "profiles.program",
                f"program {wanted.program!r} samples no stacks; programs that do: "
                f"{', '.join(samplers) or 'none in this catalog'}",
            )
        )
        return
    if any(
        w.program == wanted.program and w.map == program.profile.counts_map for w in result.maps
    ):
        result.errors.append(
            (
                "profiles.program",
                f"map {wanted.program}/{program.profile.counts_map} is read for profiles, "
                "which clears it every interval; bind no metric to it",
            )
        )
        return
    bad = [(i, cgroup_filter.check(e)) for i, e in enumerate(wanted.cgroups)]
    result.errors += [(f"profiles.cgroups[{i}]", m) for i, m in bad if m]
    if wanted.program in planned and not any(m for _, m in bad):
        result.profiles = WantedProfiles(
            wanted.program, wanted.per_container, tuple(wanted.cgroups)
        )
