"""`kubectl dr backups`: the backup repository (list, show, verify, delete, prune)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from kubectl_dr.cli.context import confirm, options
from kubectl_dr.errors import DrError
from kubectl_dr.repo import Backup, Repository, resolve_repo_path
from kubectl_dr.ui.output import emit, message, render_table
from kubectl_dr.ui.progress import Transfer

app = typer.Typer(
    help="List, inspect, delete and prune the backups in the backup repository (--repo or KUBECTL_DR_REPO).",
    no_args_is_help=True,
)

REPO_HELP = (
    "Backup repository directory. Defaults to $KUBECTL_DR_REPO, else $XDG_DATA_HOME/kubectl-dr/backups "
    "(~/.local/share/kubectl-dr/backups)."
)
BackupArgument = Annotated[
    str, typer.Argument(help="Backup ID, unique ID prefix, 'latest', or a backup directory.", metavar="ID")
]
RepoOption = Annotated[str | None, typer.Option("--repo", help=REPO_HELP, metavar="PATH")]
TypeOption = Annotated[
    str | None, typer.Option("--type", help="Only backups of this type (pvc, etcd-snapshot).", metavar="TYPE")
]


def open_repo(repo: str | None) -> Repository:
    """The repository named by --repo, $KUBECTL_DR_REPO or the XDG default (shared with other nouns)."""
    return Repository(resolve_repo_path(repo, os.environ))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


def age(moment: datetime, now: datetime | None = None) -> str:
    """kubectl's AGE column: 45s, 12m, 5h, 3d."""
    seconds = int(((now or datetime.now(timezone.utc)) - moment).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def source_summary(source: dict[str, Any]) -> str:
    if "pvc" in source:
        return f"{source.get('namespace', '')}/{source['pvc']}".lstrip("/")
    for key in ("member", "node", "server", "cluster"):
        if source.get(key):
            return str(source[key])
    return ",".join(f"{k}={v}" for k, v in source.items())


def _item(backup: Backup) -> dict[str, Any]:
    return {**backup.manifest.to_dict(), "path": str(backup.path)}


def _warn_problems(problems: list[tuple[Any, str]]) -> None:
    for _, why in problems:
        message(f"warning: skipped {why}")


@app.command("list")
def list_backups(ctx: typer.Context, repo: RepoOption = None, type: TypeOption = None) -> None:
    """List the backups, newest first."""
    opts = options(ctx)
    repository = open_repo(repo)
    found, problems = repository.scan()
    _warn_problems(problems)
    chosen = [b for b in found if b.manifest.matches(type)]
    data = {"kind": "List", "repository": str(repository.path), "items": [_item(b) for b in chosen]}
    now = datetime.now(timezone.utc)
    if chosen:
        table = render_table(
            ["ID", "TYPE", "SOURCE", "SIZE", "AGE"],
            [
                [
                    b.id,
                    b.manifest.type,
                    source_summary(b.manifest.source),
                    human_size(b.manifest.size),
                    age(b.manifest.created_at, now),
                ]
                for b in chosen
            ],
        )
    else:
        table = ""
        if opts.output == "table":
            message(f"No backups found in {repository.path}.")
    emit(data, opts.output, table=table)


@app.command("show")
def show(
    ctx: typer.Context,
    backup: BackupArgument,
    repo: RepoOption = None,
    type: TypeOption = None,
) -> None:
    """Show a backup's manifest: what, where from, when, parts with sizes and SHA-256."""
    opts = options(ctx)
    found = open_repo(repo).resolve(backup, type)
    emit(_item(found), opts.output)


@app.command("verify")
def verify(
    ctx: typer.Context,
    backup: BackupArgument,
    repo: RepoOption = None,
    type: TypeOption = None,
) -> None:
    """Recompute every part's size and SHA-256 and compare them with the manifest."""
    opts = options(ctx)
    repository = open_repo(repo)
    chosen = repository.resolve(backup, type)
    with Transfer(f"verify {chosen.id}", sum(p.size for p in chosen.manifest.parts)) as bar:
        found = repository.verify(chosen, progress=bar.advance)
    parts = [p.to_dict() for p in found.manifest.parts]
    data = {"id": found.id, "path": str(found.path), "verified": True, "parts": parts}
    which = "its one part" if len(parts) == 1 else f"all {len(parts)} parts"
    emit(data, opts.output, table=f'backup "{found.id}" verified: the size and SHA-256 of {which} match the manifest\n')


@app.command("delete")
def delete(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help="Backup ID or unique ID prefix.")],
    repo: RepoOption = None,
) -> None:
    """Delete one backup from the repository (asks for confirmation unless --yes)."""
    opts = options(ctx)
    repository = open_repo(repo)
    found = repository.resolve(backup)
    if found.path.parent != repository.path:
        raise DrError(f"{found.path} is not in the repository {repository.path}; delete it by hand if you mean to")
    if opts.dry_run != "none":
        emit({"deleted": [found.id], "dryRun": True}, opts.output, table=f'backup "{found.id}" deleted (dry run)\n')
        return
    confirm(f'delete backup "{found.id}" ({human_size(found.manifest.size)})', opts.yes)
    repository.delete(found.id)
    emit({"deleted": [found.id], "dryRun": False}, opts.output, table=f'backup "{found.id}" deleted\n')


@app.command("prune")
def prune(
    ctx: typer.Context,
    keep_last: Annotated[
        int,
        typer.Option("--keep-last", min=0, help="Keep this many of the newest backups of each volume or cluster."),
    ],
    repo: RepoOption = None,
    type: TypeOption = None,
) -> None:
    """Remove all but the newest N backups of each series, and leftovers of interrupted writes."""
    opts = options(ctx)
    repository = open_repo(repo)
    dry_run = opts.dry_run != "none"
    plan = repository.prune(keep_last, type=type, dry_run=True)
    if not dry_run and (plan.removed or plan.stale_temp_dirs):
        confirm(f"delete {len(plan.removed)} backups and keep {len(plan.kept)}", opts.yes)
        plan = repository.prune(keep_last, type=type)
    suffix = " (dry run)" if dry_run else ""
    lines = [f'backup "{i}" deleted{suffix}' for i in plan.removed]
    lines += [f"removed leftover {n} of an interrupted write{suffix}" for n in plan.stale_temp_dirs]
    if not lines:
        lines = [f"nothing to prune: {len(plan.kept)} backups kept"]
    data = {"removed": plan.removed, "kept": plan.kept, "staleTempDirs": plan.stale_temp_dirs, "dryRun": dry_run}
    emit(data, opts.output, table="\n".join(lines) + "\n")
