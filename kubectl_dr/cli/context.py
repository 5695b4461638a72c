"""Access to the global options from inside a command."""

from __future__ import annotations

import typer

from kubectl_dr.cli.globals import GlobalOptions


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):  # a command invoked without the root callback (tests)
        root.obj = GlobalOptions()
    return root.obj
