from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders import ksym
from ebpf_sidecar.decoders.ksym import Kallsyms

FAKE = """\
ffffffff81000000 T _stext
ffffffff81000100 t helper
ffffffff81000200 D some_data
ffffffff81000300 W weak_fn
ffffffff81100000 T mod_fn\t[mymod]
"""


def test_bisects_to_the_nearest_text_symbol(tmp_path: Path) -> None:
    p = tmp_path / "kallsyms"
    p.write_text(FAKE)
    k = Kallsyms(p)
    assert k.name(0xFFFFFFFF81000000) == "_stext"
    assert k.name(0xFFFFFFFF810000FF) == "_stext"
    assert k.name(0xFFFFFFFF81000180) == "helper"
    assert k.name(0xFFFFFFFF81000250) == "helper"  # data symbols are skipped
    assert k.name(0xFFFFFFFF81000310) == "weak_fn"
    assert k.name(0xFFFFFFFF81100010) == "mod_fn"


def test_misses_become_the_address_and_reload_rate_limited(tmp_path: Path) -> None:
    p = tmp_path / "kallsyms"
    p.write_text(FAKE)
    k = Kallsyms(p)
    assert k.name(0x1000, now=0.0) == "0x1000"  # below the first symbol
    far = 0xFFFFFFFF81100000 + ksym.MAX_OFFSET + 1
    assert k.name(far, now=1.0) == hex(far)
    p.write_text(FAKE + f"{far:x} T new_module_fn\n")
    assert k.name(far, now=2.0) == hex(far), "reloaded before RELOAD_INTERVAL"
    assert k.name(far, now=ksym.RELOAD_INTERVAL + 0.5) == "new_module_fn"


def test_missing_kallsyms_never_raises(tmp_path: Path) -> None:
    assert Kallsyms(tmp_path / "none").name(0xFFFF) == "0xffff"


def test_real_kallsyms_names_a_known_function() -> None:
    # Reading addresses needs root (kptr_restrict): as a non-root user every
    # address is 0 and this fails rather than skips.
    for line in Path("/proc/kallsyms").read_text().splitlines():
        addr, kind, name = line.split()[:3]
        if name == "schedule" and kind in "tT":
            break
    else:
        raise AssertionError("no schedule in /proc/kallsyms")
    assert int(addr, 16) != 0, "kallsyms hides addresses: run as root"
    assert decoders.apply(["ksym"], [int(addr, 16) + 4]) == ["schedule"]
    assert decoders.apply(["ksym"], ["junk"]) == ["junk"]


DROP_THEN_RESOLVE = """
import sys
from ebpf_sidecar import privileges
from ebpf_sidecar.decoders import ksym
ksym.KSYMS.keep_open()  # what the command line does before dropping
privileges.drop()
print(ksym.decode_ksym([int(sys.argv[1], 16)])[0])
"""


def test_addresses_resolve_after_the_sidecar_dropped_cap_syslog() -> None:
    # The kernel shows kallsyms addresses to CAP_SYSLOG only, judged at open.
    assert os.geteuid() == 0, "this test drops capabilities: run it as root"
    names: dict[int, set[str]] = {}
    with open("/proc/kallsyms") as f:
        for a, t, n, *_ in (line.split() for line in f):
            if t in "tT":
                names.setdefault(int(a, 16), set()).add(n)
    addr = sorted(names)[len(names) // 2]
    assert addr, "the test itself must see addresses"
    out = subprocess.run(
        [sys.executable, "-c", DROP_THEN_RESOLVE, hex(addr)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() in names[addr]
