"""Container logs in the CRI log format, written by the runtime and read back for ``pods/log``.

Each line is ``<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`` as containerd writes them
under /var/log/pods: F ends a line, P is a partial line (longer than the 16 KiB chunk or unterminated
at exit). Keeping the runtime's own timestamps is what makes ``timestamps=true`` and
``sinceSeconds`` honest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

_MAX_LINE = 16 * 1024


def rfc3339nano(t: dt.datetime | None = None) -> str:
    t = t or dt.datetime.now(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def parse_time(text: str) -> dt.datetime:
    base, _, frac = text.rstrip("Z").partition(".")
    t = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return t.replace(microsecond=int((frac + "000000")[:6])) if frac else t


async def pump(reader: asyncio.StreamReader, stream: str, out: BinaryIO) -> None:
    """Copy ``reader`` into ``out`` line by line in CRI format until EOF."""
    tag = stream.encode()
    while True:
        try:
            line = await reader.readuntil(b"\n")
            partial = False
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return
            line, partial = e.partial, True
        except asyncio.LimitOverrunError as e:
            line, partial = await reader.readexactly(min(e.consumed, _MAX_LINE) or 1), True
        content = line[:-1] if not partial else line
        out.write(rfc3339nano().encode() + b" " + tag + (b" P " if partial else b" F ") + content + b"\n")
        out.flush()


def _render(raw: bytes, timestamps: bool) -> tuple[dt.datetime | None, bytes]:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None, b""
    content = parts[3] if len(parts) == 4 else b""
    body = content if parts[2] == b"P" else content + b"\n"
    ts = parts[0].decode()
    return parse_time(ts), ((parts[0] + b" ") if timestamps else b"") + body


async def read(path: Path, *, follow: bool, tail_lines: int | None, since: dt.datetime | None,
               timestamps: bool, still_running: Callable[[], bool]) -> AsyncIterator[bytes]:
    """Yield log content of ``path``; with ``follow``, keep reading until the container stops."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        lines = f.readlines()
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        for raw in lines:
            ts, body = _render(raw, timestamps)
            if ts is not None and (since is None or ts >= since):
                yield body
        if not follow:
            return
        pending = b""
        while True:
            chunk = f.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    ts, body = _render(pending, timestamps)
                    pending = b""
                    if ts is not None and (since is None or ts >= since):
                        yield body
                continue
            if not still_running():
                return
            await asyncio.sleep(0.1)
