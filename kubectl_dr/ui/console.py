"""The CLI's console: progress and messages on stderr, confirmations on a terminal or by --yes."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass

from kubectl_dr.console import Progress, declined, refuse_without_yes
from kubectl_dr.ui.output import message
from kubectl_dr.ui.progress import Transfer


@dataclass
class TerminalConsole:
    yes: bool = False

    def say(self, text: str) -> None:
        message(text)

    def warn(self, text: str) -> None:
        message(text if text.startswith("warning: ") else f"warning: {text}")

    def confirm(self, question: str) -> None:
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise refuse_without_yes(question)
        import typer

        if not typer.confirm(f"{question[0].upper()}{question[1:]}?", default=False, err=True):
            raise declined()

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Progress]:
        return Transfer(description, total)
