"""The CLI's console: progress and messages on stderr, confirmations on a terminal or by --yes.

`confirm` is the one gate of every destructive step: --yes passes, a terminal asks, anything else (a pipe,
/dev/null, cron) is refused in one wording and never waits. Whether there is a terminal is read here and
nowhere else (`ui.terminals`), so a job or a test never guesses it differently.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from kubectl_dr.console import Progress, declined, refuse_without_yes
from kubectl_dr.ui.output import message
from kubectl_dr.ui.progress import Transfer
from kubectl_dr.ui.terminals import Terminals


def _ask(question: str) -> bool:
    import typer

    return bool(typer.confirm(question, default=False, err=True))


@dataclass
class TerminalConsole:
    yes: bool = False
    terminals: Terminals = field(default_factory=Terminals.now)
    ask: Callable[[str], bool] = _ask

    def say(self, text: str) -> None:
        message(text)

    def warn(self, text: str) -> None:
        message(text if text.startswith("warning: ") else f"warning: {text}")

    def confirm(self, question: str, *, reason: str = "", hint: str = "", prompt: str = "") -> None:
        """Return if --yes was given or the person typed yes to `question` ("delete backup …"); raise DrError
        otherwise, without waiting when there is no terminal."""
        if self.yes:
            return
        if not self.terminals.stdin:
            raise refuse_without_yes(question, reason=reason, hint=hint)
        if not self.ask(prompt or f"{question[0].upper()}{question[1:]}?"):
            raise declined(hint)

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Progress]:
        return Transfer(description, total, bar=self.terminals.stderr)

    @property
    def is_interactive(self) -> bool:
        return self.terminals.stdin and self.terminals.stdout
