"""Results on stdout in the format `-o` asked for.

Tables look like kubectl's (upper-case headers, columns padded with three spaces) so they read the same
and survive `grep`; json and yaml carry the full data (exact bytes and times) for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TextIO

from kubectl_dr.console import say_on_stderr
from kubectl_dr.units import count

__all__ = ["Tabular", "count", "emit", "message", "render_data", "render_fields", "render_table", "show", "write_bytes"]


class Tabular(Protocol):
    """A command's result: rows under columns for people, a dict with the same facts for scripts."""

    def columns(self) -> Sequence[str]: ...

    def rows(self) -> Sequence[Sequence[Any]]: ...

    def to_dict(self) -> dict[str, Any]: ...


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h).upper() for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [row[i].ljust(widths[i]) for i in range(len(row) - 1)] + [row[-1]]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines) + "\n"


def render_fields(fields: Sequence[tuple[str, Any]]) -> str:
    """One thing's main facts as a two-column table (FIELD, VALUE), each value one cell."""
    return render_table(["FIELD", "VALUE"], [[name, "-" if value in (None, "") else value]
                                              for name, value in fields])


def render_data(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    raise ValueError(f"unsupported output format {fmt!r}")


def emit(data: Any, fmt: str, *, table: str | None = None, out: TextIO | None = None) -> None:
    """Print `data` as json/yaml, or the pre-rendered `table` text (falling back to yaml)."""
    stream = out or sys.stdout
    if fmt == "table":
        stream.write(table if table is not None else render_data(data, "yaml"))
    else:
        stream.write(render_data(data, fmt))
    stream.flush()


def show(result: Tabular, fmt: str, *, data: dict[str, Any] | None = None, out: TextIO | None = None) -> None:
    """The one way a result reaches stdout: its table by default, its dict (or `data`, the dict with what
    the command added) for -o json|yaml."""
    emit(result.to_dict() if data is None else data, fmt, table=render_table(result.columns(), result.rows()),
         out=out)


def write_bytes(pieces: Iterable[bytes]) -> None:
    """A file's bytes to stdout as they come (`backups cat`): one piece in memory at a time."""
    out = sys.stdout.buffer
    for piece in pieces:
        out.write(piece)
    out.flush()


def message(text: str) -> None:
    """A progress or status line for humans: always stderr, so stdout stays clean for results."""
    say_on_stderr(text)
