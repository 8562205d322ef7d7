"""Which folders and files the sidecar may trust.

The sidecar runs as root: it compiles the C of its catalog folders into the
kernel and listens on a socket in a folder. Whoever can write to such a
folder, or to any folder above it, could swap what the sidecar compiles or
where it listens. A path is trusted when it and every folder above it are
owned by root (or by the sidecar's own user) and writable by nobody else. A
folder above may be a sticky one like ``/tmp``: there only an entry's owner
may rename or remove it, so a root-owned entry stays put.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UntrustedPath(RuntimeError):
    """A path others could change; the message names it and the fix."""


def _owners() -> set[int]:
    return {0, os.geteuid()}


def problem(st: os.stat_result, path: Path, sticky_ok: bool) -> str | None:
    """What makes ``path`` (with lstat ``st``) untrustworthy, or None."""
    if st.st_uid not in _owners():
        return f"{path} is owned by uid {st.st_uid}, not root; run chown root {path}"
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not writable:
        return None
    if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return None
    who = " and ".join(
        w for bit, w in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if writable & bit
    )
    return (
        f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); run chmod go-w {path}"
    )


def check_ancestors(path: Path, what: str) -> None:
    """Every folder above the resolved ``path`` must be trusted (sticky ones too)."""
    for folder in reversed(path.parents):
        found = problem(os.lstat(folder), folder, sticky_ok=True)
        if found:
            raise UntrustedPath(f"{what}: {found}")


def check_tree(root: Path, what: str, _seen: set[Path] | None = None) -> None:
    """``root``, the folders above it and everything below it must be trusted.

    Below ``root`` a sticky folder is no excuse: anyone may add a new
    program to it. A symbolic link is followed and its target checked the
    same way, wherever it points.
    """
    real = Path(os.path.realpath(root))
    seen = set() if _seen is None else _seen
    if real in seen:  # a link back into a tree already checked
        return
    seen.add(real)
    check_ancestors(real, what)
    found = problem(os.lstat(real), real, sticky_ok=False)
    if found:
        raise UntrustedPath(f"{what}: {found}")
    for folder, dirs, files in os.walk(real):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                check_tree(path, what, seen)
                continue
            found = problem(st, path, sticky_ok=False)
            if found:
                raise UntrustedPath(f"{what}: {found}")
