"""`kubectl dr pvc`: back up, restore and rescue the contents of PersistentVolumeClaims."""

from __future__ import annotations

import typer

app = typer.Typer(
    help=(
        "Back up, restore and rescue volume contents through short-lived rescue pods that mount the claim "
        "and stream tar over exec; owners are scaled down and back up safely."
    ),
    no_args_is_help=True,
)
