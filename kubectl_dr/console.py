"""What a job may say to the person running it, given to every job by the CLI.

Jobs report progress and ask for confirmation through a `Console` instead of printing: the CLI's
console writes to stderr (a rich bar on a terminal, plain lines elsewhere) and knows whether it may
ask (a terminal) or must have --yes; a test or a library caller passes its own.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from kubectl_dr.errors import DrError


class Progress(Protocol):
    """A long transfer or pass over data: `advance(n)` as bytes go by (from any thread)."""

    done: int

    def advance(self, size: int) -> None: ...

    @property
    def elapsed(self) -> float: ...


class Console(Protocol):
    def say(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def confirm(self, question: str) -> None:
        """Return if the user agrees (or gave --yes); raise DrError otherwise. Never waits on a pipe."""

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Progress]: ...


def refuse_without_yes(question: str) -> DrError:
    return DrError(f"refusing to {question} without confirmation",
                   hint="Pass --yes to confirm (there is no terminal to ask on).")


def declined() -> DrError:
    return DrError("aborted: nothing was changed")


Say = Callable[[str], None]


def say_on_stderr(text: str) -> None:
    """A line for the person running the command, on stderr (stdout carries results only). Jobs that
    were not handed a Console say things this way; a closed terminal (EIO after SIGHUP) must not stop
    them."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)
