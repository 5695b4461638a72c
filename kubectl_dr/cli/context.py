"""Access to the global options from inside a command."""

from __future__ import annotations

import typer

from kubectl_dr.cli.globals import GlobalOptions
from kubectl_dr.ui.console import confirm, terminal_ask

__all__ = ["confirm", "options", "terminal_ask"]


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):  # a command invoked without the root callback (tests)
        root.obj = GlobalOptions()
    return root.obj
