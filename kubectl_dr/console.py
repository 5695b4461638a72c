"""What a job may say to the person running it, given to every job by the CLI.

Jobs report progress and ask for confirmation through a `Console` instead of printing: the CLI's
console writes to stderr (a rich bar on a terminal, plain lines elsewhere) and knows whether it may
ask (a terminal) or must have --yes; a test or a library caller passes its own.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
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
    """The only way a job speaks to the person running it (the CLI's writes to stderr)."""

    def say(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def confirm(self, question: str, *, reason: str = "", hint: str = "", prompt: str = "") -> None:
        """Return if the user agrees (or gave --yes); raise DrError otherwise. Never waits on a pipe.

        ``question`` is what would be done ("delete backup …"); ``reason`` and ``hint`` go into the refusal
        without a terminal (see `refuse_without_yes`); ``prompt`` replaces the question asked on a terminal."""

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Progress]: ...

    @property
    def is_interactive(self) -> bool:
        """A person is at a terminal (stdin and stdout): an interactive shell may be opened for them."""


NO_TERMINAL = "there is no terminal to ask on and --yes was not given"


def refuse_without_yes(question: str, *, reason: str = "", hint: str = "") -> DrError:
    """The one refusal of every destructive step asked for without a terminal and without --yes.

    ``question`` is what would be done ("delete backup …"), ``reason`` why it needs consent when that
    is not obvious, ``hint`` another way out than --yes. One wording, so scripts and people learn it once.
    """
    because = f" ({reason})" if reason else ""
    return DrError(f"refusing to {question}{because} without confirmation: {NO_TERMINAL}",
                   hint=hint or "Pass --yes to confirm, or run the command on a terminal to be asked.")


def declined(hint: str = "") -> DrError:
    """The person answered no: nothing was done."""
    return DrError("aborted: nothing was changed", hint=hint or None)


Say = Callable[[str], None]
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Progress]]
"""`Console.progress` alone, for jobs that only report a transfer: (description, expected total)."""


def say_on_stderr(text: str) -> None:
    """A line for the person running the command, on stderr (stdout carries results only). Jobs that
    were not handed a Console say things this way; a closed terminal (EIO after SIGHUP) must not stop
    them."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def counted(write: Callable[[bytes], None], progress: ProgressFactory | None, description: str,
            total: int | None) -> Iterator[Callable[[bytes], None]]:
    """``write``, reporting every chunk to a progress display when the caller gave one."""
    if progress is None:
        yield write
        return
    with progress(description, total) as bar:
        def counting(chunk: bytes) -> None:
            write(chunk)
            bar.advance(len(chunk))

        yield counting
