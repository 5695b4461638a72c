"""`kubectl dr backups`: the backup repository (list, show, verify, copy, delete, prune)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubectl_dr import units
from kubectl_dr.cli import restic_backups
from kubectl_dr.cli.context import options, session
from kubectl_dr.cli.repo_options import (
    REPO_HELP,
    AzureEndpointOption,
    EncryptToOption,
    IdentityOption,
    PasswordFileOption,
    PlainRepoOption,
    RepoOption,
    S3CaBundleOption,
    S3EndpointOption,
    open_repo,
)
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.repo import Backup, EncryptedBackupError, Policy, Repository
from kubectl_dr.repo.families import APP_TYPE
from kubectl_dr.repo.manifest import format_time
from kubectl_dr.repo.repository import PruneResult, Verification
from kubectl_dr.repo.restic.location import is_restic
from kubectl_dr.repo.retention import Duration
from kubectl_dr.ui.output import count, emit, render_fields, render_table, write_bytes

if TYPE_CHECKING:
    from kubectl_dr.repo.copying import CopyRun

__all__ = ["REPO_HELP", "app", "open_repo"]

app = typer.Typer(
    help="List, inspect, verify, copy, delete and prune the backups in a backup repository (a directory or "
         "s3://BUCKET/PREFIX or azure://CONTAINER/PREFIX: --repo, KUBECTL_DR_REPO or the config file).",
    no_args_is_help=True,
)

BackupArgument = Annotated[
    str, typer.Argument(help="Backup ID, unique ID prefix, 'latest', or a backup directory.", metavar="ID")
]
# The types the commands write (volumes, etcd, control plane), and the word a user naturally types for one.
BACKUP_TYPES = ("pvc", "etcd-snapshot", "control-plane", "app", "rook-mon-quorum")
TYPE_ALIASES = {"etcd": "etcd-snapshot"}


def _backup_type(value: str | None) -> str | None:
    """A type no backup can have is a typo, not an empty result: say so, with the valid ones."""
    if value is None or value in BACKUP_TYPES:
        return value
    if value in TYPE_ALIASES:
        return TYPE_ALIASES[value]
    raise typer.BadParameter(f"{value!r} is not a backup type; use one of: {', '.join(BACKUP_TYPES)} "
                             "(etcd means etcd-snapshot)")


TypeOption = Annotated[
    str | None,
    typer.Option("--type", help="Only backups of this type: pvc, etcd-snapshot (or etcd), control-plane, app.",
                 metavar="TYPE", callback=_backup_type),
]


def age(moment: datetime, now: datetime | None = None) -> str:
    """kubectl's AGE column (45s, 12m, 5h, 3d) for a moment in the past."""
    return units.age(((now or datetime.now(timezone.utc)) - moment).total_seconds())


def source_summary(source: dict[str, Any]) -> str:
    if "pvc" in source:
        return f"{source.get('namespace', '')}/{source['pvc']}".lstrip("/")
    if isinstance(source.get("namespaces"), list):  # an application backup
        return "namespaces " + ",".join(str(n) for n in source["namespaces"])
    for key in ("member", "node", "server", "cluster"):
        if source.get(key):
            return str(source[key])
    return ",".join(f"{k}={v}" for k, v in source.items())


def _item(backup: Backup) -> dict[str, Any]:
    # `location` is the backup's directory or s3:// URL: one key says where, for every command.
    return {**backup.manifest.to_dict(), "location": backup.location}


def backup_name(backup: Backup) -> str:
    """The --name given at backup time, else what its source names (NS/PVC, member, node)."""
    return str(backup.manifest.details.get("name") or source_summary(backup.manifest.source))


def _skipped(backup: Backup) -> int | None:
    from kubectl_dr.volumes.reconcile import unreadable_count

    return unreadable_count(backup.manifest.details)


def _verified(record: Verification | None) -> str:
    """The VERIFIED cell: ok, damaged, or - for a backup never checked."""
    if record is None:
        return "-"
    return "ok" if record.ok else "damaged"


def _last_verification(record: Verification | None) -> dict[str, Any] | None:
    return None if record is None else record.to_dict()


def _warn_problems(console: Console, problems: list[tuple[Any, str]]) -> None:
    for _, why in problems:
        console.warn(f"skipped {why}")



AllClustersOption = Annotated[bool, typer.Option(
    "--all-clusters", help="List the backups of every cluster (default: those of the current cluster, when it "
                           "answers, and those that record no cluster).")]


@app.command("list", short_help="List the backups, newest first")
def list_backups(ctx: typer.Context, repo: RepoOption = None, type: TypeOption = None,
                 all_clusters: AllClustersOption = False,
                 s3_endpoint: S3EndpointOption = None, s3_ca_bundle: S3CaBundleOption = None,
                 password_file: PasswordFileOption = None, azure_endpoint: AzureEndpointOption = None) -> None:
    """List the backups, newest first (NAME: the --name given, else what the source names; ENC: encrypted with
    age; SKIPPED: entries left out as unreadable by --skip-unreadable; VERIFIED: ok, damaged, - never
    checked, or deleting (a delete that did not finish: run it again); CLUSTER: the context its backup
    recorded). -o json|yaml says of each claim's backup which application backups it belongs to (partOf):
    it is kept and deleted with them.

    By default only the backups of the current cluster (kube-system's uid, asked of the kubeconfig's
    cluster) and those that record no cluster (written by an older kubectl-dr) are listed, with a note on
    stderr saying which cluster. --cluster NAME|UID lists another cluster's (its uid, or the context name
    or server URL its backups record; here the global --cluster picks whose backups, not the kubeconfig
    cluster to talk to: use --context for that); --all-clusters every cluster's. Without a kubeconfig, or when its
    cluster does not answer, every backup is listed, with a note.

    With --repo restic:REPO, every snapshot of the restic repository (ours and restic's own); --type TYPE
    those tagged kind=TYPE (etcd snapshots with their member, revision, size and SHA-256).

    \b
    Examples:
      kubectl dr backups list
      kubectl dr backups list --type etcd --all-clusters
      kubectl dr backups list --repo s3://dr-backups/prod -o json
    """
    opts = options(ctx)
    if is_restic(repo):
        assert repo is not None
        restic_backups.list_snapshots(session(ctx).console, repo, opts.output, password_file=password_file,
                                      s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, type=type)
        return
    console = session(ctx).console
    if all_clusters and opts.cluster:
        raise UsageError("--cluster and --all-clusters exclude each other")
    from kubectl_dr import catalog

    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, s3_ca_bundle=s3_ca_bundle)
    listed = catalog.list_backups(repository, console, type=type, cluster=opts.cluster, all_clusters=all_clusters,
                                  kubeconfig=opts.overrides(), request_timeout=opts.request_timeout)
    chosen, records = listed.backups, listed.verifications
    data = {"kind": "List", "repository": repository.location,
            "items": [{**_item(b), "name": backup_name(b), "skippedUnreadable": _skipped(b),
                       "lastVerification": _last_verification(records[b.id]),
                       "partOf": listed.part_of.get(b.id, []), "deleting": b.id in listed.deleting}
                      for b in chosen]}
    now = datetime.now(timezone.utc)
    if not chosen and opts.output == "table":
        console.say(f"No backups found in {repository.location}.")
    table = render_table(
        ["ID", "NAME", "TYPE", "SOURCE", "SIZE", "ENC", "SKIPPED", "VERIFIED", "AGE", "CLUSTER"],
        [
            [
                b.id,
                backup_name(b),
                b.manifest.type,
                source_summary(b.manifest.source),
                units.size(b.manifest.size),
                "age" if b.manifest.encryption else "-",
                "-" if _skipped(b) is None else _skipped(b),
                "deleting" if b.id in listed.deleting else _verified(records[b.id]),
                age(b.manifest.created_at, now),
                b.manifest.cluster.name if b.manifest.cluster else "-",
            ]
            for b in chosen
        ],
    ) if chosen else ""
    emit(data, opts.output, table=table)


@app.command("show", short_help="Show a backup's manifest and its last check")
def show(
    ctx: typer.Context,
    backup: BackupArgument,
    repo: PlainRepoOption = None,
    type: TypeOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    s3_ca_bundle: S3CaBundleOption = None,
) -> None:
    """Show a backup: its main fields (what, where from, when, where it is, its last check), then its parts
    with sizes and SHA-256. -o json|yaml prints the whole manifest, with `location` and `lastVerification`.

    \b
    Examples:
      kubectl dr backups show latest
      kubectl dr backups show 1a2b3c4d -o yaml
    """
    opts = options(ctx)
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, s3_ca_bundle=s3_ca_bundle)
    found = repository.resolve(backup, type)
    data = _item(found)
    record = repository.verification(found)
    data["lastVerification"] = _last_verification(record)  # null when never verified, as `backups list` has it
    emit(data, opts.output, table=_show_table(found, record))


def _show_table(backup: Backup, record: Verification | None) -> str:
    """A FIELD/VALUE table of the manifest's main fields, a blank line, then one row per part."""
    m = backup.manifest
    skipped = _skipped(backup)
    fields: list[tuple[str, Any]] = [
        ("id", m.id), ("name", backup_name(backup)), ("type", m.type), ("source", source_summary(m.source)),
        ("created", format_time(m.created_at)),
        ("completed", format_time(m.completed_at) if m.completed_at else None),
        ("size", f"{units.size(m.size)} ({count(m.size, 'byte')})"),
        ("encryption", f"age, to {', '.join(m.encryption.get('recipients') or [])}" if m.encryption else None),
        ("cluster", f"{m.cluster.name} (uid {m.cluster.uid})" if m.cluster else None),
        ("location", backup.location), ("toolVersion", m.tool_version),
        *([("skippedUnreadable", skipped)] if skipped is not None else []),
        ("verified", _verification_cell(record, m.id)),
    ]
    parts = render_table(["PART", "SIZE", "SHA256", "STORED"],
                         [[p.name, units.size(p.size), p.sha256,
                           f"{p.stored_file} (age, {units.size(p.stored_size)})" if p.stored else "as is"]
                          for p in m.parts])
    return render_fields(fields) + "\n" + parts + _app_tables(m.details)


def _app_tables(details: dict[str, Any]) -> str:
    """What an application backup holds: objects by kind, and the claims with their data's backups."""
    kinds = details.get("kinds")
    if not isinstance(kinds, dict):
        return ""
    out = "\n" + render_table(["KIND", "OBJECTS"], [[k, n] for k, n in kinds.items()])
    claims = [c for c in details.get("claims") or [] if isinstance(c, dict)]
    if claims:
        out += "\n" + render_table(["CLAIM", "SIZE", "ENTRIES", "BACKUP"],
                                   [[f"{c.get('namespace')}/{c.get('name')}", units.size(int(c.get("size") or 0)),
                                     c.get("entries"), c.get("backup")] for c in claims])
    return out


def _verification_cell(record: Verification | None, backup_id: str) -> str:
    """ok/damaged, when, and what was wrong: the VERIFIED word of `backups list` with its record."""
    if record is None:
        return f"- (never verified: kubectl dr backups verify {backup_id})"
    what = "contents checked" if record.contents_checked else "stored bytes only"
    if record.ok:
        return f"ok at {record.verified_at} ({what})"
    return f"damaged at {record.verified_at}: {record.problem}"


@app.command("verify", short_help="Check every part's size and SHA-256")
def verify(
    ctx: typer.Context,
    backup: BackupArgument,
    repo: RepoOption = None,
    type: TypeOption = None,
    identity: IdentityOption = None,
    stored_only: Annotated[bool, typer.Option(
        "--stored-only", help="For an encrypted backup: check only the stored (encrypted) bytes against their size "
                              "and SHA-256, which needs no private key.")] = False,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    s3_ca_bundle: S3CaBundleOption = None,
    password_file: PasswordFileOption = None,
    read_data_subset: Annotated[str, typer.Option(
        "--read-data-subset", metavar="n/t|x%",
        help="restic:REPO only, as restic's: read group n of t of the snapshot's data blobs (1/5 … 5/5 on five "
             "runs read every blob once), or a random x% (0.1 is 10%). Every tree is read.")] = "100%",
) -> None:
    """Read every part back and compare its size and SHA-256 with the manifest.

    With --repo restic:REPO: read every tree and data blob the snapshot references and check each one
    (MAC, SHA-256 against its ID), as restic check --read-data does for the whole repository.

    An encrypted backup is decrypted with --identity and both its stored bytes and its contents are
    checked. The outcome is recorded with the backup: prune never counts a backup found damaged as the
    newest verified one of its series. A dry run checks the same and records nothing.

    \b
    Examples:
      kubectl dr backups verify latest
      kubectl dr backups verify 1a2b3c4d --identity ~/.age/dr.key
      kubectl dr backups verify 1a2b3c4d --stored-only   # encrypted, without its key
    """
    opts = options(ctx)
    if is_restic(repo):
        assert repo is not None
        restic_backups.verify(repo, backup, opts.output, password_file=password_file, s3_endpoint=s3_endpoint,
                              azure_endpoint=azure_endpoint,
                              subset=read_data_subset)
        return
    if read_data_subset != "100%":
        raise UsageError("--read-data-subset reads part of a restic snapshot (--repo restic:REPO); a backup in this "
                         "repository is checked whole, every part against its size and SHA-256")
    console = session(ctx).console
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, s3_ca_bundle=s3_ca_bundle,
                           identity=identity)
    chosen = repository.resolve(backup, type)
    encrypted = chosen.manifest.encryption is not None
    claims = repository.claims_of(chosen)[0] if chosen.manifest.type == APP_TYPE else []  # verified with it
    total = sum(p.stored_size for b in [chosen, *claims] for p in b.manifest.parts)
    unrecorded: list[str] = []
    try:
        with console.progress(f"verify {chosen.id}", total) as bar:
            # A dry run writes nothing into the repository, not even the outcome of its check.
            found = repository.verify(chosen, progress=bar.advance, stored_only=stored_only,
                                      record=opts.dry_run == "none", unrecorded=unrecorded.append)
    except EncryptedBackupError as exc:
        # Whoever holds no key can still check what is stored: say how, where the key is asked for.
        exc.hint = f"{exc.hint}\nWithout the key, --stored-only checks the stored (encrypted) bytes."
        raise
    contents = not (encrypted and stored_only)
    data = {"id": found.id, "location": found.location, "verified": True, "contentsChecked": contents,
            "size": found.manifest.size, "parts": [p.to_dict() for p in found.manifest.parts],
            "claimBackups": [c.id for c in claims], "dryRun": opts.dry_run != "none",
            "recorded": opts.dry_run == "none" and not unrecorded}
    if not contents:
        console.say(f'note: backup "{found.id}": only the stored (encrypted) bytes were checked; its contents were not '
                "decrypted (pass --identity to check them)")
    if claims:
        console.say(f"verified with it: the backups of its {count(len(claims), 'claim')} "
                    f"({', '.join(c.id for c in claims)})")
    if opts.dry_run != "none":
        console.say("note: the outcome was not recorded (dry run)")
    elif unrecorded:
        console.warn(f"warning: the outcome could not be recorded in {repository.location} ({unrecorded[0]}): "
                     "prune and backups list do not know of this check")
    checked = ("decrypted" if encrypted else "size,sha256") if contents else "stored-only"
    emit(data, opts.output, table=render_table(
        ["ID", "VERIFIED", "PARTS", "SIZE", "CHECKED", "RECORDED"],
        [[found.id, "ok", len(found.manifest.parts), units.size(found.manifest.size), checked,
          "yes" if data["recorded"] else "no"]]))


@app.command("copy", short_help="Copy backups into another repository")
def copy(
    ctx: typer.Context,
    backup: Annotated[str | None, typer.Argument(help="Backup ID, unique ID prefix or 'latest'.", metavar="ID")] = None,
    to: Annotated[str, typer.Option("--to", metavar="PATH|s3://…|azure://…",
                                    help="The repository to copy into (a directory, s3://BUCKET/PREFIX or "
                                    "azure://CONTAINER/PREFIX).")] = "",
    all_: Annotated[bool, typer.Option("--all", help="Copy every backup (of --type) the target does not have.")]
    = False,
    repo: PlainRepoOption = None,
    type: TypeOption = None,
    encrypt_to: EncryptToOption = None,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    s3_ca_bundle: S3CaBundleOption = None,
    to_s3_endpoint: Annotated[str | None, typer.Option(
        "--to-s3-endpoint", metavar="URL", help="S3 endpoint of the target, when it differs from the source's.")]
    = None,
    to_s3_ca_bundle: Annotated[str | None, typer.Option(
        "--to-s3-ca-bundle", metavar="FILE", help="CA bundle for the target's S3 endpoint.")] = None,
    to_azure_endpoint: Annotated[str | None, typer.Option(
        "--to-azure-endpoint", metavar="URL", help=(
            "Blob service URL of the target's Azure storage account, when it differs from the source's "
            "(e.g. a copy from Azurite or a sovereign cloud into public Azure)."))] = None,
) -> None:
    """Copy backups into another repository, under the same IDs, checked on the way.

    Works between any two repositories (a directory, S3 or Azure, either way). The source is checked as it is read
    and the copy as it is written (sizes and SHA-256 of every part); the copy becomes visible only when
    complete. An interrupted copy leaves nothing visible: run the same command again to finish it
    (backups already there are skipped). An application backup is copied with its claims' backups (they
    first, so the target never holds it without them). Encrypted backups are copied as they are; an unencrypted one is
    encrypted on the way with --encrypt-to (or the config file's recipients).

    \b
    Examples:
      kubectl dr backups copy latest --to s3://dr-backups/prod
      kubectl dr backups copy --all --type etcd-snapshot --to s3://dr-backups/prod --encrypt-to age1…
    """
    from kubectl_dr.repo import open_repository
    from kubectl_dr.repo.copying import copy_all
    from kubectl_dr.repo.safety import SECRETS_HELD, confirm_plaintext_secrets

    opts, console = options(ctx), session(ctx).console
    if not to:
        raise UsageError("--to is required: the repository to copy into")
    if (backup is None) == (not all_):
        raise UsageError("give one backup ID, or --all")
    source = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, s3_ca_bundle=s3_ca_bundle,
                       identity=identity)
    import os

    target = open_repository(to, os.environ, s3_endpoint=to_s3_endpoint or s3_endpoint,
                             azure_endpoint=to_azure_endpoint or azure_endpoint,
                             s3_ca_bundle=to_s3_ca_bundle or s3_ca_bundle, recipients=encrypt_to, option="--to")
    if source.place == target.place:
        raise UsageError(f"the source and the target are the same repository ({target.location})")
    # An application backup goes with its claims' backups, copied before it.
    chosen = source.with_claims(source.backups(type) if all_ else [source.resolve(backup or "", type)])
    if all_:
        _warn_problems(console, source.scan()[1])
    secret = [b for b in chosen if b.manifest.type in SECRETS_HELD and b.manifest.encryption is None]
    if secret and opts.dry_run == "none":
        kinds = sorted({b.manifest.type for b in secret})
        what = (f"backup {secret[0].id} ({kinds[0]})" if len(secret) == 1
                else f"{len(secret)} backups ({', '.join(kinds)})")
        holds = SECRETS_HELD[kinds[0]] if len(kinds) == 1 else "Secrets (" + "; ".join(
            f"{kind}: {SECRETS_HELD[kind]}" for kind in kinds) + ")"
        confirm_plaintext_secrets(target, what, console, holds=holds)
    run = copy_all(source, chosen, target, console, dry_run=opts.dry_run != "none")
    if not run.rows:
        console.say("nothing to copy")
    emit(run.to_dict(), opts.output, table=_copy_table(run))


def _copy_table(run: CopyRun) -> str:
    """ID, what happened to it (copied, copied (encrypted), present: already there; would copy), where it is."""
    return render_table(["ID", "RESULT", "LOCATION"],
                        [[r.id, r.result, r.location] for r in run.rows]) if run.rows else ""


@app.command("delete", short_help="Delete one backup (an app backup with its claims' backups)")
def delete(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help="Backup ID or unique ID prefix.")],
    repo: PlainRepoOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    s3_ca_bundle: S3CaBundleOption = None,
) -> None:
    """Delete one backup from the repository (asks for confirmation unless --yes).

    An application backup (`namespace backup`) goes with the backups of its claims' data, which are listed
    first: it is marked as being deleted, then its claims' backups go, then itself, so that an interruption
    never leaves an application backup that names data that is gone (run the delete again, or a prune, to
    finish it). A claim's backup that an application backup names is refused on its own: delete the
    application backup.

    \b
    Examples:
      kubectl dr backups delete 1a2b3c4d --dry-run=client
      kubectl dr backups delete 1a2b3c4d --yes
    """
    opts, console = options(ctx), session(ctx).console
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, s3_ca_bundle=s3_ca_bundle)
    found = repository.resolve(backup)
    if found.path is not None and found.path.parent != repository.path:
        raise DrError(f"{found.path} is not in the repository {repository.path}; delete it by hand if you mean to")
    plan = repository.deletion_plan(found)
    for claim, others in plan.shared.items():
        console.say(f'note: claim backup "{claim}" is kept: application backup(s) {", ".join(others)} name it too')
    for claim in plan.missing:
        console.say(f'note: claim backup "{claim}" that "{found.id}" names is gone already')
    total = found.manifest.size + sum(c.manifest.size for c in plan.claims)
    data = {"deleted": plan.ids, "claimBackups": [c.id for c in plan.claims], "keptShared": plan.shared,
            "missing": plan.missing, "finishing": repository.deleting(found), "dryRun": opts.dry_run != "none"}
    if opts.dry_run != "none":
        emit(data, opts.output, table="".join(f'backup "{i}" would be deleted (dry run)\n' for i in plan.ids))
        return
    what = f'backup "{found.id}"'
    if plan.claims:
        what += (f" and the {count(len(plan.claims), 'backup')} of its claims' data "
                 f"({', '.join(c.id for c in plan.claims)})")
    console.confirm(f"delete {what} ({units.size(total)})")
    repository.delete_planned(plan)
    emit(data, opts.output, table="".join(f'backup "{i}" deleted\n' for i in plan.ids))


def _keep(rule: str, help: str) -> Any:
    return typer.Option(f"--keep-{rule}", min=0, metavar="N", help=help)


@app.command("prune", short_help="Remove the backups no --keep rule keeps")
def prune(
    ctx: typer.Context,
    keep_last: Annotated[int | None, _keep("last", "Keep the N newest backups of each series.")] = None,
    keep_hourly: Annotated[int | None, _keep("hourly", "Keep the newest backup of each of the last N hours that "
                                                       "have one.")] = None,
    keep_daily: Annotated[int | None, _keep("daily", "Keep the newest backup of each of the last N days that "
                                                     "have one.")] = None,
    keep_weekly: Annotated[int | None, _keep("weekly", "Keep the newest backup of each of the last N weeks (ISO) "
                                                       "that have one.")] = None,
    keep_monthly: Annotated[int | None, _keep("monthly", "Keep the newest backup of each of the last N months that "
                                                         "have one.")] = None,
    keep_yearly: Annotated[int | None, _keep("yearly", "Keep the newest backup of each of the last N years that "
                                                       "have one.")] = None,
    keep_within: Annotated[str | None, typer.Option(
        "--keep-within", metavar="DURATION",
        help="restic repositories: keep every snapshot taken within DURATION (restic's format: 7d, 1y6m, 36h) of "
             "the newest snapshot of its group, not from now, as restic counts it).")] = None,
    keep_tag: Annotated[list[str] | None, typer.Option(
        "--keep-tag", metavar="TAG[,TAG…]",
        help="restic repositories: keep every snapshot that has all these tags. Repeat for several lists; a "
             "snapshot that matches any one is kept.")] = None,
    max_unused: Annotated[str | None, typer.Option(
        "--max-unused", metavar="LIMIT",
        help="restic repositories: restic prune's --max-unused: repack partly used packs until the unused space "
             "left is under LIMIT, a percentage of the repository's size after the prune (5%), a size (100M) or "
             "unlimited. Without it, packs more than 20 % unused are repacked. Alone, without a --keep rule, it "
             "forgets nothing and only prunes.")] = None,
    max_repack_size: Annotated[str | None, typer.Option(
        "--max-repack-size", metavar="SIZE",
        help="restic repositories: restic prune's --max-repack-size: rewrite packs only until their total size "
             "would reach SIZE (500M, 2G; 0 rewrites none), so one run's copying and extra space stay bounded; "
             "the next prune goes on.")] = None,
    repack_uncompressed: Annotated[bool, typer.Option(
        "--repack-uncompressed",
        help="restic repositories: restic prune's --repack-uncompressed: rewrite every pack holding a blob "
             "stored uncompressed with all its blobs compressed (after `restic migrate upgrade_repo_v2`, or "
             "a backup with --compression off).")] = False,
    repack_small: Annotated[bool, typer.Option(
        "--repack-small",
        help="restic repositories: restic 0.18 prune's --repack-small: packs under 80 % of the pack size "
             "(16 MiB) count as small, not only those under 1/25 of it; ten or more small packs are merged "
             "into full ones (many small backups leave many small packs).")] = False,
    repack_smaller_than: Annotated[str | None, typer.Option(
        "--repack-smaller-than", metavar="SIZE",
        help="restic repositories: restic prune's --repack-smaller-than: packs under SIZE (at most 16M) count "
             "as small, as --repack-small with your own size (0: --repack-small's own, as restic 0.18).")] = None,
    repack_cacheable_only: Annotated[bool, typer.Option(
        "--repack-cacheable-only",
        help="restic repositories: restic prune's --repack-cacheable-only: rewrite only tree packs (which "
             "clients cache); data packs stay unless nothing in them is used. For storage that charges for "
             "reads (S3 Glacier tiers, cold storage).")] = False,
    repo: RepoOption = None,
    type: TypeOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    s3_ca_bundle: S3CaBundleOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """Remove the backups no --keep rule keeps, per series, and what interrupted writes left behind.

    The rules mean what they mean in restic: a backup kept by any rule is kept; hours, days, weeks,
    months and years are counted in local time, and only those that have a backup count. A series is
    what a backup is of: a claim (namespace and name) for volumes, a cluster's member for etcd
    snapshots. The newest backup of a series that is intact (every part there, not found damaged by
    `backups verify`) is never removed. --dry-run=client removes nothing and shows, series by series as
    `restic forget --dry-run` does, what is kept with the rules that keep it, and what would go.

    \b
    Examples:
      kubectl dr backups prune --keep-last 3 --keep-daily 7 --keep-weekly 4 --dry-run=client
      kubectl dr backups prune --keep-last 5 --type etcd-snapshot --yes
      kubectl dr backups prune --keep-daily 7 --keep-weekly 4 --repo restic:/srv/restic
      kubectl dr backups prune --keep-within 14d --keep-tag kind=etcd-snapshot --repo restic:/srv/restic
      kubectl dr backups prune --max-unused 5% --repo restic:/srv/restic --yes
      kubectl dr backups prune --keep-daily 7 --max-repack-size 2G --repo restic:s3:https://s3.example/dr
      kubectl dr backups prune --repack-small --repack-uncompressed --repo restic:/srv/restic --dry-run=client

    With --repo restic:REPO it is `restic forget` and `restic prune` in one: restic's policy per claim
    (restic's default grouping by host and paths), then what no kept snapshot uses is removed and packs
    mostly unused are rewritten, under restic's exclusive lock. --keep-within and --keep-tag (restic
    repositories only) keep what restic forget keeps with the same flags. Interrupted at any step, the repository
    stays valid for `restic check`; running the prune again finishes it.

    Which partly used packs are rewritten follows restic 0.18's prune once any of its repack flags is given
    (--max-unused, default 5 %; --max-repack-size; --repack-uncompressed; --repack-small or
    --repack-smaller-than; --repack-cacheable-only): a `restic prune --dry-run` with the same flags
    afterwards finds nothing to do. Without them, packs more than a fifth unused are rewritten.
    """
    opts, console = options(ctx), session(ctx).console
    try:
        policy = Policy(last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly,
                        monthly=keep_monthly, yearly=keep_yearly,
                        within=Duration.parse(keep_within) if keep_within is not None else None,
                        tags=tuple(tuple(t.strip() for t in value.split(",")) for value in keep_tag or []))
    except ValueError as exc:
        raise UsageError(f"--keep-within: {exc}" if "duration" in str(exc) else str(exc)) from None
    repack_flags = {"--max-unused": max_unused is not None, "--max-repack-size": max_repack_size is not None,
                    "--repack-uncompressed": repack_uncompressed, "--repack-small": repack_small,
                    "--repack-smaller-than": repack_smaller_than is not None,
                    "--repack-cacheable-only": repack_cacheable_only}
    given = [flag for flag, on in repack_flags.items() if on]
    if given and not is_restic(repo):
        raise UsageError(f"{', '.join(given)} applies to restic repositories (--repo restic:REPO), which store "
                         "backups in shared packs; a kubectl-dr repository removes a backup's files whole")
    if policy.empty and not given:
        raise UsageError("give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, "
                         "--keep-monthly, --keep-yearly (or, for a restic repository, --keep-within, --keep-tag or "
                         "a repack flag such as --max-unused)")
    if (keep_within is not None or keep_tag) and not is_restic(repo):
        raise UsageError("--keep-within and --keep-tag apply to restic repositories (--repo restic:REPO), whose "
                         "snapshots carry tags; use --keep-last, --keep-daily… here")
    if is_restic(repo):
        assert repo is not None
        if type:
            raise UsageError("--type does not apply to a restic repository: every snapshot is grouped by host "
                             "and paths, as restic forget does")
        restic_backups.prune(console, repo, policy, opts.output, dry_run=opts.dry_run != "none",
                             password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint, max_unused=max_unused,
                             max_repack_size=max_repack_size, repack_uncompressed=repack_uncompressed,
                             repack_small=repack_small, repack_smaller_than=repack_smaller_than,
                             repack_cacheable_only=repack_cacheable_only)
        return
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, s3_ca_bundle=s3_ca_bundle)
    dry_run = opts.dry_run != "none"
    found, problems = repository.scan()
    _warn_problems(console, problems)
    plan = repository.prune(policy, type=type, dry_run=True)
    if not dry_run and (plan.removed or plan.leftovers):
        console.confirm(f"delete {count(len(plan.removed), 'backup')} and keep {len(plan.kept)}")
        plan = repository.prune(policy, type=type)
    _report_prune(plan, console, repository, dry_run, opts.output, {b.id: b.manifest.created_at for b in found},
                  session(ctx).command_line(default=["backups", "prune"]))


def _prune_plan_text(plan: PruneResult, created: dict[str, datetime]) -> list[str]:
    """What a dry run keeps and why, series by series, as `restic forget --dry-run` shows it (local times:
    the rules count hours and days in local time)."""
    def when(backup_id: str) -> str:
        moment = created.get(backup_id)
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"

    lines: list[str] = []
    for series in sorted(set(plan.series.values())):
        kept = [i for i in plan.kept if plan.series.get(i) == series]
        removed = [i for i in plan.removed if plan.series.get(i) == series]
        lines.append(f"series {' '.join(series.split())}: keep {len(kept)}, would delete {len(removed)} (dry run)")
        if kept:
            lines += render_table(["KEEP", "CREATED", "REASONS"],
                                  [[i, when(i), ", ".join(plan.reasons.get(i, []))] for i in kept]).splitlines()
        if removed and any(i in plan.follows or i in plan.finishing for i in removed):
            lines += render_table(["DELETE", "CREATED", "WHY"], [[i, when(i), _why_removed(plan, i)]
                                                                 for i in removed]).splitlines()
        elif removed:
            lines += render_table(["DELETE", "CREATED"], [[i, when(i)] for i in removed]).splitlines()
        lines.append("")
    lines += [f"would remove leftover {n} of an interrupted write (dry run)" for n in plan.leftovers]
    return lines[:-1] if lines and not lines[-1] else lines


def _why_removed(plan: PruneResult, backup_id: str) -> str:
    if backup_id in plan.follows:
        return f"claim of app backup {plan.follows[backup_id]}, which goes"
    if backup_id in plan.finishing:
        return "finishing an interrupted delete"
    return "no rule keeps it"


def _report_prune(plan: PruneResult, console: Console, repository: Repository, dry_run: bool, output: str,
                  created: dict[str, datetime], rerun: str) -> None:
    failed = dict(plan.failed)
    if dry_run:
        lines = _prune_plan_text(plan, created)
    else:
        lines = [f'backup "{i}" deleted' for i in plan.removed if i not in failed]
        lines += [f"removed leftover {n} of an interrupted write" for n in plan.leftovers if n not in failed]
    for backup_id, reasons in plan.reasons.items():
        if reasons == ["newest verified"] and not dry_run:  # a dry run's table says it
            lines.append(f'backup "{backup_id}" kept: the newest verified backup of {plan.series[backup_id]}')
    if not lines and not failed:
        lines = [f"nothing to prune: {count(len(plan.kept), 'backup')} kept"]
    elif not lines:  # everything it meant to remove failed: said below, with why
        lines = [f"nothing removed: {count(len(failed), 'item')} could not be, {count(len(plan.kept), 'backup')} "
                 "kept"]
    data = {"removed": [i for i in plan.removed if i not in failed], "kept": plan.kept, "keptBecause": plan.reasons,
            "series": plan.series, "removedWith": plan.follows, "finishedDeletes": plan.finishing,
            "staleTempDirs": plan.leftovers, "failed": [{"name": n, "error": e} for n, e in plan.failed],
            "dryRun": dry_run, "repository": repository.location}
    emit(data, output, table="\n".join(lines) + "\n")
    if plan.failed:
        for name, why in plan.failed:
            console.say(f"error: could not remove {name}: {why}")
        raise DrError(f"{count(len(plan.failed), 'item')} could not be removed; the rest of the prune was done",
                      hint=f"Fix the cause and run the prune again: {rerun}")


@app.command("ls", short_help="List a backup's entries like ls -l", rich_help_panel="Inspect")
def ls(ctx: typer.Context, backup: BackupArgument,
       path: Annotated[str, typer.Argument(help="A directory or file inside the backup (default: its root).")] = "",
       repo: RepoOption = None, s3_endpoint: S3EndpointOption = None, azure_endpoint: AzureEndpointOption = None,
       password_file: PasswordFileOption = None, identity: IdentityOption = None) -> None:
    """List the entries of a directory of a backup (owner, mode, size, time, link target), like ls -l.

    A volume backup of a kubectl-dr repository is checked against its manifest first (a copy in S3 or an
    encrypted one is staged under $TMPDIR and removed after).

    \b
    Examples:
      kubectl dr backups ls 1a2b3c4d etc
      kubectl dr backups ls latest etc --repo restic:/srv/restic
    """
    opts = options(ctx)
    if is_restic(repo):
        assert repo is not None
        restic_backups.ls(repo, backup, path, opts.output, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
        return
    from kubectl_dr.volumes import browse

    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, identity=identity)
    browsed = browse.open_backup(repository, backup, session(ctx).console)
    listed = browse.list_dir(browsed, path)
    items = [{"path": e.path, "type": e.kind, "mode": _mode_text(e.kind, e.mode), "uid": e.uid, "gid": e.gid,
              "size": e.size, "mtime": format_time(datetime.fromtimestamp(e.mtime, timezone.utc)),
              "target": e.target or None} for e in listed]
    table = render_table(
        ["MODE", "UID", "GID", "SIZE", "MTIME", "PATH"],
        [[_mode_text(e.kind, e.mode), e.uid, e.gid, units.size(e.size) if e.kind == "file" else "-",
          item["mtime"], (e.path or ".") + (f" -> {e.target}" if e.target else "")]
         for e, item in zip(listed, items, strict=True)])
    emit({"kind": "List", "backup": browsed.id, "items": items}, opts.output, table=table)


def _mode_text(kind: str, mode: int) -> str:
    import stat

    kinds = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO, "char": stat.S_IFCHR,
             "block": stat.S_IFBLK, "socket": stat.S_IFSOCK}
    return stat.filemode(kinds.get(kind, stat.S_IFREG) | (mode & 0o7777))


@app.command("cat", short_help="Write one file of a backup to stdout", rich_help_panel="Inspect")
def cat(ctx: typer.Context, backup: BackupArgument,
        path: Annotated[str, typer.Argument(help="The file inside the backup.")],
        repo: RepoOption = None, s3_endpoint: S3EndpointOption = None, azure_endpoint: AzureEndpointOption = None,
        password_file: PasswordFileOption = None, identity: IdentityOption = None) -> None:
    """Write one file of a backup to stdout, checked first (restic: every block against its ID; a
    kubectl-dr backup: its archive against the manifest's SHA-256).

    \b
    Examples:
      kubectl dr backups cat 1a2b3c4d etc/app.conf > app.conf
      kubectl dr backups cat 1a2b3c4d etc/app.conf --repo restic:/srv/restic > app.conf
    """
    if is_restic(repo):
        assert repo is not None
        restic_backups.cat(repo, backup, path, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
        return
    from kubectl_dr.volumes import browse

    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, identity=identity)
    browsed = browse.open_backup(repository, backup, session(ctx).console)
    write_bytes(browse.file_bytes(browsed, path))
