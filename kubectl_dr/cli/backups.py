"""`kubectl dr backups`: the backup repository (list, show, delete, prune)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="List, inspect, delete and prune the backups in the backup repository (--repo or KUBECTL_DR_REPO).",
    no_args_is_help=True,
)
