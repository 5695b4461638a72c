"""Which standard streams are terminals: the one place kubectl dr asks (`isatty`).

A terminal on stdin means a person can answer a question; on stderr, that a live progress bar is seen; on
stdin and stdout, that an interactive shell can be offered. Read once per command by the console.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Terminals:
    stdin: bool
    stdout: bool
    stderr: bool

    @classmethod
    def now(cls) -> Terminals:
        return cls(is_terminal(sys.stdin), is_terminal(sys.stdout), is_terminal(sys.stderr))


def is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed stream
        return False


def piped_stdin() -> bool:
    """stdin is a pipe or a file (`cmd | kubectl dr …`, `< file`): data someone meant to send. Not a terminal,
    not /dev/null or a closed stdin, which is what cron and CI give."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)
