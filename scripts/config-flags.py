"""The command-line flags a collector config needs, one per line.

    .venv/bin/python scripts/config-flags.py collector CONFIG
    .venv/bin/python scripts/config-flags.py sidecar CONFIG

A config with a profiles pipeline (``service.pipelines.profiles`` or
``profiles/<name>``) needs, in the collector (v0.165.0), the alpha feature
gate ``service.profilesSupport``: without it the collector refuses the
pipeline type. And in the sidecar CAP_SYS_PTRACE, kept after it drops its
other capabilities: symbolizing user stacks reads /proc/<pid>/maps and the
mapped files through /proc/<pid>/root, which the kernel allows another
process's reader only with it (see docs/profiles.md). scripts/run.sh
(``make run``) and the tests start both processes with these flags.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

PROFILES_GATE = "service.profilesSupport"


def has_profiles(config: dict[str, Any]) -> bool:
    pipelines = ((config or {}).get("service") or {}).get("pipelines") or {}
    return any(str(name).split("/")[0] == "profiles" for name in pipelines)


def collector_flags(config: dict[str, Any]) -> list[str]:
    return [f"--feature-gates={PROFILES_GATE}"] if has_profiles(config) else []


def sidecar_flags(config: dict[str, Any]) -> list[str]:
    return ["--keep-capabilities", "CAP_SYS_PTRACE"] if has_profiles(config) else []


if __name__ == "__main__":
    which, path = sys.argv[1], Path(sys.argv[2])
    config = yaml.safe_load(path.read_text())
    for flag in {"collector": collector_flags, "sidecar": sidecar_flags}[which](config):
        print(flag)
