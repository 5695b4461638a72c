"""Access to the global options from inside a command."""

from __future__ import annotations

import sys

import typer

from kubectl_dr.cli.globals import GlobalOptions
from kubectl_dr.errors import DrError


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):  # a command invoked without the root callback (tests)
        root.obj = GlobalOptions()
    return root.obj


def confirm(question: str, yes: bool) -> None:
    """Destructive steps need --yes, or a "y" typed on a terminal; never wait on a pipe."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise DrError(f"refusing to {question} without confirmation", hint="Pass --yes to confirm.")
    if not typer.confirm(f"{question[0].upper()}{question[1:]}?", default=False, err=True):
        raise DrError("aborted: nothing was changed")
