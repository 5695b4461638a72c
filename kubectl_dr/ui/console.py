"""The CLI's console: progress and messages on stderr, confirmations on a terminal or by --yes.

`confirm` is the one gate of every destructive step: --yes passes, a terminal asks, anything else (a pipe,
/dev/null, cron) is refused in one wording and never waits.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from kubectl_dr.console import Progress, declined, refuse_without_yes
from kubectl_dr.ui.output import message
from kubectl_dr.ui.progress import Transfer


def _ask(question: str) -> bool:
    import typer

    return bool(typer.confirm(question, default=False, err=True))


def terminal_ask() -> Callable[[str], bool] | None:
    """A yes/no question on the terminal (on stderr), or None when stdin is no terminal to ask on."""
    return _ask if sys.stdin.isatty() else None


def confirm(question: str, yes: bool) -> None:
    """Return if --yes was given or the person typed yes to `question` ("delete backup …"); raise DrError
    otherwise, without waiting when there is no terminal."""
    if yes:
        return
    ask = terminal_ask()
    if ask is None:
        raise refuse_without_yes(question)
    if not ask(f"{question[0].upper()}{question[1:]}?"):
        raise declined()


@dataclass
class TerminalConsole:
    yes: bool = False

    def say(self, text: str) -> None:
        message(text)

    def warn(self, text: str) -> None:
        message(text if text.startswith("warning: ") else f"warning: {text}")

    def confirm(self, question: str) -> None:
        confirm(question, self.yes)

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Progress]:
        return Transfer(description, total)
