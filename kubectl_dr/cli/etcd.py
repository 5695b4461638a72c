"""`kubectl dr etcd`: snapshots from control-plane nodes, offline verification, member health."""

from __future__ import annotations

import typer

app = typer.Typer(
    help=(
        "Snapshot etcd through pods on control-plane nodes (or directly with --endpoints), verify snapshot "
        "files offline, and show member health."
    ),
    no_args_is_help=True,
)
