"""`kubectl dr scale`: scale the workloads that use a claim down, and put recorded replicas back."""

from __future__ import annotations

import typer

app = typer.Typer(
    help=(
        "Scale the workloads that mount a claim down (recording their replicas on the objects), and put "
        "recorded replicas back: the way to undo an interrupted restore."
    ),
    no_args_is_help=True,
)
