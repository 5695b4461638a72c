"""Read a kubectl-style table as the user sees it: columns start where their headers start.

Cells may hold spaces (`2.9 KiB`, `ACCESS MODES`) or be empty, so splitting a row on whitespace is wrong;
the renderer pads every column to its width, which makes the header's positions exact for every row.
"""

from __future__ import annotations

import re


def columns(header: str) -> list[tuple[str, int]]:
    """Each header and where it starts; headers are separated by two spaces or more."""
    return [(m.group(0), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]


def rows(text: str) -> list[dict[str, str]]:
    """The rows of the table in ``text`` (its first line the header) as header → cell."""
    lines = [line for line in text.splitlines() if line.strip()]
    cols = columns(lines[0])
    out = []
    for line in lines[1:]:
        cells = {}
        for i, (name, start) in enumerate(cols):
            end = cols[i + 1][1] if i + 1 < len(cols) else None
            cells[name] = line[start:end].strip()
        out.append(cells)
    return out
