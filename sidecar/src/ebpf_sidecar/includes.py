"""Which files a program's C may include: its own folder and the catalog's headers.

The compiler runs as root and echoes the line at fault of any file it
fails on, so ``#include "/etc/shadow"`` in a program of ``--programs-dir``
would send a line of that file to whoever asked for the program. Before a
program compiles, every include directive of its source (and of the files
it includes from its folder) is checked:

- ``#include "file"`` must resolve, from the including file's folder or an
  include folder, to a file inside the program's folder or an include folder
  of the catalog (``bpf/include``);
- ``#include <name>`` is a header of the compiler's search path (kernel
  headers): a relative name without ``..``; an absolute one must lie inside
  those folders too;
- an include whose name comes from a macro cannot be checked and is refused.

The directives are found the way the preprocessor finds them: lines are
spliced at backslash-newline first, comments removed (not inside string
literals), and the ``%:`` digraph counts as ``#``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

_DIRECTIVE = re.compile(r"^\s*(?:#|%:)\s*(include_next|include|import|embed)\b\s*(.*)$")


class IncludeError(ValueError):
    """An include directive reaches outside what a program may read."""


def _without_comments(text: str) -> str:
    """``text`` with comments replaced by a space, string and char literals kept."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def directives(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, directive, argument) of every include-like directive."""
    spliced = text.replace("\\\r\n", "").replace("\\\n", "")
    for number, line in enumerate(_without_comments(spliced).splitlines(), 1):
        m = _DIRECTIVE.match(line)
        if m:
            yield number, m.group(1), m.group(2).strip()


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def check(source: Path, include_dirs: Sequence[Path]) -> None:
    """Refuse ``source`` if it, or a file it includes from allowed folders, reads others."""
    allowed = [Path(os.path.realpath(d)) for d in (source.parent, *include_dirs)]
    pending, seen = [Path(os.path.realpath(source))], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for number, directive, argument in directives(current.read_text(errors="replace")):
            where = f"{current}:{number}: #{directive} {argument}"
            found = _resolve(current, argument, allowed, where)
            if found is not None:
                pending.append(found)


def _resolve(current: Path, argument: str, allowed: list[Path], where: str) -> Path | None:
    """The allowed file ``argument`` names (to check in turn), None for a system header."""
    outside = (
        f"{where}: includes a file outside the program's folder and the catalog's include "
        f"folders ({', '.join(str(a) for a in allowed)}); move it into the program's folder"
    )
    if len(argument) < 2 or (argument[0], argument[-1]) not in (('"', '"'), ("<", ">")):
        raise IncludeError(
            f"{where}: the file name comes from a macro and cannot be checked; write it out "
            'as "file" or <file>'
        )
    name = argument[1:-1]
    quoted = argument[0] == '"'
    if os.path.isabs(name):
        real = Path(os.path.realpath(name))
        if not _inside(real, allowed):
            raise IncludeError(outside)
        return real
    # Quoted names are looked up next to the including file first; both
    # forms then in the include folders (-I), then in the system's.
    candidates = ([current.parent / name] if quoted else []) + [a / name for a in allowed[1:]]
    for candidate in candidates:
        if candidate.exists():
            real = Path(os.path.realpath(candidate))
            if not _inside(real, allowed):
                raise IncludeError(outside)
            return real
    if ".." in Path(name).parts:
        raise IncludeError(outside)
    return None  # a kernel or compiler header
