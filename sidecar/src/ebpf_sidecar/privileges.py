"""Dropping to the capabilities the sidecar measurably needs, once it has started.

What needs more runs first, in :func:`ebpf_sidecar.cli.main`: mounting
tracefs (CAP_SYS_ADMIN), lifting the memlock limit (CAP_SYS_RESOURCE, see
:func:`lift_memlock_limit`), opening /proc/kallsyms (CAP_SYSLOG, see
``decoders.ksym``), creating and handing the socket's folder to its group
(CAP_CHOWN, CAP_FOWNER, CAP_FSETID). Then everything but :data:`NEEDED` is
dropped from the effective, permitted, inheritable, ambient and bounding
sets, like ebpf_exporter does, so a compromised sidecar, or a child it
runs (bpftool, for BTF offsets), holds no more than loading BPF takes.

Measured on Linux 6.18 (tests/test_privileges.py streams every catalog
program from a sidecar that dropped to this set):

- CAP_BPF: loading programs and creating maps.
- CAP_PERFMON: tracing programs (tracepoints, raw tracepoints) and their
  helpers (bpf_probe_read_kernel, bpf_get_current_task), and perf events to
  attach them with perf_event_paranoid at 2.

Not needed once started: CAP_SYS_ADMIN, CAP_SYS_RESOURCE (kernels since 5.11
charge BPF memory to the memory cgroup, not to RLIMIT_MEMLOCK),
CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (the decoders read /proc/<pid>/comm
and /proc/<pid>/cgroup, which any process may read, also those of other
users' processes, unless /proc is mounted with hidepid), CAP_SYSLOG (the
kallsyms file stays open). ``--keep-capabilities`` keeps more, e.g.
CAP_SYS_PTRACE on a host whose /proc has hidepid.

Capabilities belong to threads: :func:`drop` refuses to run once a second
thread exists (gRPC starts its own as soon as a server is made), since that
thread would keep everything.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Iterable

import capng

log = logging.getLogger(__name__)

NEEDED = ("CAP_BPF", "CAP_PERFMON")


class CapabilityError(RuntimeError):
    """A capability name is unknown, or the drop cannot be done safely."""


def capability_number(name: str) -> int:
    """``CAP_SYS_PTRACE``, ``cap_sys_ptrace`` or ``sys_ptrace`` as its number."""
    bare = name.strip().lower().removeprefix("cap_")
    number = int(capng.capng_name_to_capability(bare))
    if number < 0:
        raise CapabilityError(
            f"--keep-capabilities: unknown capability {name!r}; use names like "
            "CAP_SYS_PTRACE (see capabilities(7))"
        )
    return number


def capability_name(number: int) -> str:
    return f"CAP_{capng.capng_capability_to_name(number).upper()}"


def lift_memlock_limit() -> None:
    """Lift RLIMIT_MEMLOCK while CAP_SYS_RESOURCE is still there.

    Kernels before 5.11 charge BPF maps and programs to it (a default of
    64 KiB fits no catalog program); BCC would lift it itself on the first
    EPERM, but only with CAP_SYS_RESOURCE, which is gone by then.
    """
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, unlimited)
    except (ValueError, OSError) as e:
        log.info(
            "could not lift the memlock limit (%s): fine on kernels since 5.11, which "
            "charge BPF memory to the memory cgroup instead",
            e,
        )


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def drop(extra: Iterable[str] = ()) -> list[str]:
    """Keep :data:`NEEDED` plus ``extra`` (names), drop every other capability.

    Returns the names kept. A needed capability the sidecar never had is
    logged (programs will fail to load, with the kernel's EPERM).
    """
    if _thread_count() != 1:
        raise CapabilityError(
            "capabilities must be dropped before any thread starts (they are per "
            f"thread), but this process has {_thread_count()} threads"
        )
    wanted = {capability_number(n) for n in (*NEEDED, *extra)}
    capng.capng_get_caps_process()
    held = {
        c
        for c in range(capng.CAP_LAST_CAP + 1)
        if capng.capng_have_capability(capng.CAPNG_PERMITTED, c)
    }
    for c in sorted(wanted - held):
        log.warning(
            "the sidecar does not have %s, which it needs to load programs; "
            "run it as root or grant it",
            capability_name(c),
        )
    kept = sorted(wanted & held)
    # The bounding set limits what an exec (of bpftool, say) can regain as
    # root; changing it takes CAP_SETPCAP, which a container may lack.
    select = (
        capng.CAPNG_SELECT_ALL
        if capng.CAP_SETPCAP in held and hasattr(capng, "CAPNG_SELECT_ALL")
        else capng.CAPNG_SELECT_CAPS
    )
    capng.capng_clear(capng.CAPNG_SELECT_BOTH)
    every_set = capng.CAPNG_EFFECTIVE | capng.CAPNG_PERMITTED | capng.CAPNG_BOUNDING_SET
    for c in kept:
        capng.capng_update(capng.CAPNG_ADD, every_set, c)
    if capng.capng_apply(select) != 0:
        raise CapabilityError("dropping capabilities failed (capng_apply)")
    if select == capng.CAPNG_SELECT_CAPS:
        log.warning(
            "no CAP_SETPCAP: the bounding set is left as it is; programs the sidecar "
            "runs as root could regain capabilities it dropped"
        )
    names = [capability_name(c) for c in kept]
    log.info("capabilities: kept %s, dropped every other", ", ".join(names) or "none")
    return names
