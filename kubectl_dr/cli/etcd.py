"""`kubectl dr etcd`: snapshots from control-plane nodes, offline verification, member health."""

from __future__ import annotations

from typing import Annotated

import typer

from kubectl_dr.cli.context import options
from kubectl_dr.ui.output import emit, render_table

app = typer.Typer(
    help=(
        "Snapshot etcd through pods on control-plane nodes (or directly with --endpoints), verify snapshot "
        "files offline, and show member health."
    ),
    no_args_is_help=True,
)


@app.command("verify")
def verify(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="The snapshot file (as written by etcdctl snapshot save).")],
    allow_missing_trailer: Annotated[
        bool,
        typer.Option(
            "--allow-missing-trailer",
            help="Also accept a bare database without the SHA-256 trailer (a db file copied from a data dir).",
        ),
    ] = False,
) -> None:
    """Check a snapshot file offline: size, SHA-256 trailer and the bbolt database inside.

    Prints the hash, revision, total keys and total size as `etcdutl snapshot status` does. No cluster
    and no etcd binaries are needed. Exits 1 with a verdict naming what is wrong on a damaged file.
    """
    from kubectl_dr.etcd.snapshot_file import SnapshotError, verify_snapshot

    opts = options(ctx)
    try:
        status = verify_snapshot(file, require_trailer=not allow_missing_trailer)
    except SnapshotError as exc:
        if opts.output != "table":
            # Scripts get the verdict on stdout too; the error line still goes to stderr with exit 1.
            emit({"path": file, "valid": False, "reason": exc.reason, "verdict": exc.verdict}, opts.output)
        raise
    data = {"valid": True, **status.to_dict()}
    table = render_table(
        ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "SHA256"],
        [[f"{status.hash:x}", status.revision, status.total_keys, status.total_size, status.sha256[:16]]],
    )
    emit(data, opts.output, table=table)
