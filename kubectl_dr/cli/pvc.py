"""`kubectl dr pvc`: back up, restore, compare and rescue the contents of PersistentVolumeClaims."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr.cli.backups import REPO_HELP, open_repo
from kubectl_dr.cli.cluster_options import FromClusterOption
from kubectl_dr.cli.context import namespace_may_exist, options, session
from kubectl_dr.cli.copy_to import CopyToOption, copy_new, open_targets
from kubectl_dr.cli.diff_options import ExitCodeOption
from kubectl_dr.cli.repo_options import (
    AzureEndpointOption,
    EncryptToOption,
    IdentityOption,
    PasswordFileOption,
    PlainRepoOption,
    S3EndpointOption,
    open_restic,
)
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.repo.restic.location import is_restic, shown
from kubectl_dr.ui.output import count, emit, render_table, show
from kubectl_dr.ui.terminals import piped_stdin
from kubectl_dr.volumes import DEFAULT_IMAGE

if TYPE_CHECKING:
    from kubectl_dr.repo import Repository
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository
    from kubectl_dr.volumes.backup import BackupOptions
    from kubectl_dr.volumes.inventory import ClaimSummary
    from kubectl_dr.volumes.source import Source

app = typer.Typer(
    help=(
        "List claims with their consumers and newest backup; back up, restore, compare and rescue volume contents "
        "through short-lived rescue pods that mount the claim and stream tar over exec; owners are scaled down "
        "and back up safely."
    ),
    no_args_is_help=True,
)

ClaimArg = Annotated[str, typer.Argument(help="Name of the PersistentVolumeClaim.", metavar="PVC")]
RepoOption = Annotated[str | None, typer.Option("--repo", help=REPO_HELP, metavar="PATH|restic:REPO")]
ImageOption = Annotated[
    str, typer.Option("--image", metavar="IMAGE",
                      help="Image of the rescue pod: needs sh, tar, find and stat (busybox, or GNU tools: an image "
                           "with GNU tar keeps sparse files sparse).")
]
QuiesceOption = Annotated[
    bool, typer.Option("--quiesce", help="Stop the claim's consumers for the duration, and start them again after.")
]
FromOption = Annotated[
    str, typer.Option("--from", metavar="ID|latest|FILE",
                      help="Backup ID, unique ID prefix, 'latest' (of this claim, or of --from-claim's), a backup "
                           "directory, or a tar file.")
]
CompressBackupOption = Annotated[
    str, typer.Option("--compress", metavar="auto|none|gzip",
                      help="Compress the stream on its way out of the pod (busybox gzip). auto, for slow links: "
                           "when the link, timed first, is slower than gzip in the pod. The repository keeps the "
                           "tar; sizes and SHA-256 are checked on it.")
]
CompressRestoreOption = Annotated[
    str, typer.Option("--compress", metavar="auto|none|gzip|xz",
                      help="Compress the stream here, decompressed in the pod. auto, for slow links: gzip when "
                           "samples of the archive shrink and the link, timed first, is slower than gzip. Sizes "
                           "and SHA-256 are checked on the tar stream.")
]
FromClaimOption = Annotated[
    str | None, typer.Option("--from-claim", metavar="[NS/]CLAIM",
                             help="With --from latest: the newest backup of this claim instead (restoring into a "
                                  "new claim).")
]




@app.command("backup", short_help="Back up a volume's contents into the repository")
def backup(
    ctx: typer.Context,
    claim: ClaimArg,
    repo: RepoOption = None,
    name: Annotated[str | None, typer.Option("--name", help="A name for the backup (part of its ID).")] = None,
    quiesce: QuiesceOption = False,
    skip_unreadable: Annotated[
        bool, typer.Option("--skip-unreadable",
                           help="Back up what the rescue pod can read and record the rest as skipped (counted "
                                "in SKIPPED here and in `backups list`, named by `backups show -o yaml`), instead "
                                "of failing.")
    ] = False,
    image: ImageOption = DEFAULT_IMAGE,
    encrypt_to: EncryptToOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    copy_to: CopyToOption = None,
    password_file: PasswordFileOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="restic:REPO only: read every file, even those the claim's last snapshot has unchanged "
                        "(same size, mtime, ctime and inode).")] = False,
    compress: CompressBackupOption = "none",
) -> None:
    """Stream the volume's contents, and the owner, mode and time of every entry, into the repository.

    A ReadWriteOnce claim in use is read on the consumer's node while the app keeps running; a
    ReadWriteOncePod claim (after asking, or with --yes) or --quiesce stops the consumers first and
    starts them again after. lost+found at the volume's root is left out (mkfs and fsck make it again).

    \b
    Examples:
      kubectl dr pvc backup data-db-0 -n shop
      kubectl dr pvc backup data-db-0 -n shop --quiesce --name before-upgrade
      kubectl dr pvc backup data-db-0 -n shop --dry-run=client -o json
      kubectl dr pvc backup data-db-0 -n shop --copy-to s3://dr-backups/prod --encrypt-to age1…
      RESTIC_PASSWORD_FILE=~/.restic-pw kubectl dr pvc backup data-db-0 -n shop --repo restic:/srv/restic
    """
    from kubectl_dr.volumes import backup as job
    from kubectl_dr.volumes import compression

    job.check_name(name)
    compression.check(compress, compression.BACKUP_METHODS)
    opts, current = options(ctx), session(ctx)
    if is_restic(repo):
        assert repo is not None
        if compress != "none":
            raise UsageError("--compress applies to the stream of a plain repository's backup; a restic backup "
                             "sends only the changed files and compresses its blobs with zstd itself")
        _restic_backup(ctx, claim, repo, job.BackupOptions(
            "", claim, image=image, name=name, quiesce=quiesce, skip_unreadable=skip_unreadable),
            password_file=password_file, s3_endpoint=s3_endpoint, copy_to=copy_to, encrypt_to=encrypt_to,
            force=force, azure_endpoint=azure_endpoint)
        return
    if force:
        raise UsageError("--force applies to restic repositories (--repo restic:REPO): every other backup reads "
                         "every file")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, encrypt_to=encrypt_to)
    repository.preflight(create=not current.dry)  # before the cluster is touched
    targets = open_targets(copy_to, repository, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                           encrypt_to=encrypt_to, dry_run=current.dry_run, console=current.console, secret_what=None)
    result = job.run(current, repository, job.BackupOptions(current.namespace, claim, image=image, name=name,
                                                             quiesce=quiesce, skip_unreadable=skip_unreadable,
                                                             compress=compress))
    if isinstance(result, job.BackupPlan):
        emit(result.to_dict(), opts.output, table=result.summary())
        return
    data = result.to_dict()
    if targets:
        data["copies"] = copy_new(repository, result.manifest.id, targets, current.console)
    if result.unreadable:
        current.console.say(f"note: {count(result.unreadable, 'entry', 'entries')} could not be read and "
                f"{'was' if result.unreadable == 1 else 'were'} left out (--skip-unreadable): "
                f"kubectl dr backups show {result.manifest.id} -o yaml lists them")
    show(result, opts.output, data=data)


def _restic_backup(ctx: typer.Context, claim: str, repo: str, job_opts: BackupOptions, *,
                   password_file: str | None, s3_endpoint: str | None, copy_to: list[str] | None,
                   encrypt_to: list[str] | None, force: bool,
                   azure_endpoint: str | None = None) -> None:
    from kubectl_dr.volumes import restic_backup

    if copy_to or encrypt_to:
        raise DrError("--copy-to and --encrypt-to do not apply to a restic repository (restic encrypts every "
                      "repository; restic copy copies snapshots)")
    opts, current = options(ctx), session(ctx)
    job_opts.namespace = current.namespace

    def open_repo(create: Callable[[str], bool]) -> ResticRepository:
        return open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                           azure_endpoint=azure_endpoint, create=create)

    outcome = restic_backup.run(current, None if current.dry else open_repo, shown(repo), job_opts, force=force)
    if isinstance(outcome, restic_backup.ResticBackupResult):
        show(outcome, opts.output)
    else:
        emit(outcome.to_dict(), opts.output, table=outcome.summary())


def _plain_to_dir(ctx: typer.Context, repository: Repository, source: str, claim: str, from_claim: str | None,
                  include: list[str] | None, dest: Path) -> None:
    """A kubectl-dr backup (or some of its paths) into a local directory, its archive checked first."""
    from kubectl_dr.volumes import browse, restic_source
    from kubectl_dr.volumes.source import find_backup

    current = session(ctx)
    namespace = current.namespace_flag or ""
    if (source == "latest" or from_claim) and not namespace:
        namespace = current.namespace
    backup = find_backup(repository, source, namespace, claim, from_claim)
    browsed = browse.open_backup(repository, backup, current.console)
    wanted = restic_source.normalise_includes(include)
    for path in wanted:
        browse.find(browsed, path)
    if current.dry:
        current.console.say(f"(dry run) would write backup {backup.id} into {dest}")
        _to_dir_result(ctx, backup.id, dest, wanted, None)
        return
    written = browse.write_to_dir(browsed, dest, wanted)
    current.console.say(f"wrote {count(written.files, 'file')} of backup {backup.id} into {dest}")
    if written.without_setid:
        names = ", ".join(written.without_setid[:5]) + (", …" if len(written.without_setid) > 5 else "")
        current.console.say(f"note: {count(len(written.without_setid), 'file')} written here without their setuid "
                            f"or setgid bit ({names}): a backup is untrusted input on this machine; a restore "
                            "into the volume keeps them")
    _to_dir_result(ctx, backup.id, dest, wanted, written.files)


def _to_dir_result(ctx: typer.Context, source: str, dest: Path, wanted: list[str], files: int | None) -> None:
    """-o json|yaml of a restore into a directory (the table's lines went to stderr as it ran)."""
    opts = options(ctx)
    emit({"kind": "PvcRestoreToDir", "dryRun": opts.dry_run, "from": source, "directory": str(dest),
          "include": wanted or None, "files": files}, opts.output, table="")


def _restic_to_dir(ctx: typer.Context, repo: ResticRepository, source: str, claim: str, include: list[str] | None,
                   dest: Path) -> None:
    """A restic snapshot (or some of its paths) into a local directory: names checked, no write follows a link."""
    from kubectl_dr.repo.restic import archiver, localfs
    from kubectl_dr.volumes import restic_source

    current = session(ctx)
    namespace = current.namespace_flag or ""
    if source == "latest" and not namespace:
        namespace = current.namespace
    snap = restic_source.find_snapshot(repo, source, namespace, claim)
    root = archiver.volume_root(repo, snap.tree, snap.paths)
    wanted = restic_source.normalise_includes(include)
    for path in wanted:
        archiver.find(repo, root, path)
    if current.dry:
        current.console.say(f"(dry run) would write snapshot {snap.short_id} into {dest}")
        _to_dir_result(ctx, snap.id, dest, wanted, None)
        return
    files = localfs.restore_to_dir(repo, root, dest, keep=lambda p: restic_source.included(p, wanted))
    current.console.say(f"wrote {count(files, 'file')} of snapshot {snap.short_id} into {dest}")
    _to_dir_result(ctx, snap.id, dest, wanted, files)


@app.command("restore", short_help="Restore a backup into a volume, its consumers stopped")
def restore(
    ctx: typer.Context,
    claim: ClaimArg,
    source: FromOption,
    repo: RepoOption = None,
    clean: Annotated[
        bool, typer.Option("--clean", help="Also remove what is in the volume but not in the backup, and entries "
                                           "of another kind than the backup's that stand in the way.")
    ] = False,
    from_claim: FromClaimOption = None,
    from_cluster: FromClusterOption = None,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Accept a tar file with no entries (or a backup made before "
                                                 "entry records). A backup of an empty volume needs no flag: its "
                                                 "entry record says so.")
    ] = False,
    image: ImageOption = DEFAULT_IMAGE,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    password_file: PasswordFileOption = None,
    include: Annotated[list[str] | None, typer.Option(
        "--include", metavar="PATH", help="Restore only this file or directory of the backup (and "
                                          "the directories leading to it); repeatable. Not with --clean.")] = None,
    to_dir: Annotated[str | None, typer.Option(
        "--to-dir", metavar="DIR", help="Write the backup (or --include's paths) into this new "
                                        "or empty local directory instead of the volume; nothing in the cluster "
                                        "is touched.")] = None,
    compress: CompressRestoreOption = "none",
    full: Annotated[bool, typer.Option(
        "--full", help="restic:REPO only: send every file again. Without it, files the volume already holds "
                       "(same size and SHA-256, computed in the pod; or, restoring a claim's own snapshot, "
                       "the very files its backup read: same inode and change time) are not sent.")] = False,
    allow_devices: Annotated[bool, typer.Option(
        "--allow-devices", help="Make the backup's device nodes in the volume (a chroot's or an image's /dev). "
                                "Without it a backup holding any is refused: an app's volume holds none.")] = False,
) -> None:
    """Verify a backup, stop the claim's consumers, restore into the volume, check it, start them again.

    `latest` is the newest backup of this claim taken in this cluster (kube-system's uid); --from-cluster
    picks another cluster's. A backup of another cluster given by its ID is restored, and the plan and
    the result say so (restoring into a rebuilt cluster is a normal step). Without --clean nothing outside
    the backup is touched. Once the restore has begun writing, a failure
    or an interruption leaves the consumers stopped (a half-written volume is never handed to the app):
    run the same restore again to finish it, or `kubectl dr scale restore` to start them as they are.
    A new claim of a WaitForFirstConsumer class is restored into too: the rescue pod is its first
    consumer.

    \b
    Examples:
      kubectl dr pvc restore data-db-0 -n shop --from latest
      kubectl dr pvc diff data-db-0 -n shop --from latest        # what it would change, first
      kubectl dr pvc restore data-new -n shop --from latest --from-claim shop/data-db-0
      kubectl dr pvc restore data-db-0 -n shop --from ./volume.tar --clean --yes
      kubectl dr pvc restore data-db-0 -n shop --from latest --repo s3://dr-backups/prod -i ~/.config/age/dr.key

    With --repo restic:REPO, --from is a restic snapshot ID (or latest: the claim's newest, host NS/CLAIM),
    ours or one `restic backup` made of a directory; it is read and checked here, then restored the same way,
    incrementally: the volume's files of the same size are hashed in the pod, and only what differs is sent;
    a large file (64 MiB or more, one link) that differs in part gets only its differing chunks written in
    place (--full sends everything). Owners, modes and times are set and checked on every entry afterwards.

    A backup in S3 or an encrypted one is first copied (decrypted) into a private directory under
    $TMPDIR and checked there against its manifest; the copy is removed however the command ends.
    """
    import tempfile

    from kubectl_dr.volumes import compression, restic_source
    from kubectl_dr.volumes import restore as job

    compression.check(compress, compression.RESTORE_METHODS)
    opts, current = options(ctx), session(ctx)
    if include and clean:
        raise UsageError("--include and --clean exclude each other: --clean would remove everything the "
                         "included paths do not hold")
    if is_restic(repo):
        assert repo is not None
        if from_claim or from_cluster or identity:
            raise UsageError("--from-claim, --from-cluster and --identity do not apply to a restic repository: "
                             "give the snapshot's ID (restic snapshots) or latest (this claim's newest)")

        def open_it() -> ResticRepository:
            return open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                               azure_endpoint=azure_endpoint)

        if to_dir is not None:
            _restic_to_dir(ctx, open_it(), source, claim, include, Path(to_dir))
            return
        namespace = current.namespace

        def prepared(reading: job.SourceReading) -> Source:
            # In the restore's thread: the key derivation and the snapshot list run beside the cluster's side.
            restic_repo = open_it()
            snap = restic_source.find_snapshot(restic_repo, source, namespace, claim)
            reading.located()
            return restic_source.build(restic_repo, snap, Path(work), current.console, include,
                                       target=f"{namespace}/{claim}", cancelled=reading.cancelled)

        with tempfile.TemporaryDirectory(prefix="kubectl-dr-restic-") as work:
            result = job.run(current, None, job.RestoreOptions(namespace, claim, source, image=image, clean=clean,
                                                                compress=compress, full=full,
                                                                allow_devices=allow_devices),
                             prepared=prepared)
    else:
        if full:
            raise UsageError("--full applies to restic repositories (--repo restic:REPO): a restore from any "
                             "other repository sends every file")
        repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, identity=identity)
        if to_dir is not None:
            _plain_to_dir(ctx, repository, source, claim, from_claim, include, Path(to_dir))
            return
        result = job.run(current, repository,
                         job.RestoreOptions(current.namespace, claim, source, image=image, clean=clean,
                                            allow_empty=allow_empty, from_claim=from_claim,
                                            from_cluster=from_cluster, include=include,
                                            compress=compress, allow_devices=allow_devices))
    if isinstance(result, job.RestoreResult):
        show(result, opts.output)
    else:
        emit(result.to_dict(), opts.output, table=result.summary())


@app.command("diff", short_help="Compare a volume with a backup, as diff -u does")
def diff(
    ctx: typer.Context,
    claim: ClaimArg,
    source: FromOption,
    repo: PlainRepoOption = None,
    from_claim: Annotated[
        str | None, typer.Option("--from-claim", metavar="[NS/]CLAIM",
                                 help="With --from latest: compare with the newest backup of this claim instead of "
                                      "PVC's own (what restoring it into PVC would change).")
    ] = None,
    from_cluster: FromClusterOption = None,
    quiesce: QuiesceOption = False,
    image: ImageOption = DEFAULT_IMAGE,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    exit_code: ExitCodeOption = False,
) -> None:
    """Compare the volume with a backup, as `diff -u` does: what a restore would add (+) and change (~), and
    --clean remove (-).

    A read-only rescue pod lists the volume. The output labels its sides: --- the live volume (old),
    +++ the backup or tar file (new, what a restore writes); a changed entry shows each field as
    old → new (size, mode, uid, gid, mtime in RFC 3339 UTC, kind, link target). Contents are compared
    by size and mtime, as rsync's quick check does. Entries are listed in path order, every one a
    restore would add (also those inside a new directory), and the last line says what a restore would
    do. Exit code 0 whether or not they differ (1 with --exit-code, as kubectl diff); scripts also read
    `identical` and `differences` (each with path, change and per field old and new) from -o json.

    \b
    Examples:
      kubectl dr pvc diff data-db-0 -n shop --from latest
      kubectl dr pvc diff data-db-0 -n shop --from 20261202T101500Z-pvc-shop-data-db-0 -o json
      kubectl dr pvc diff data-new -n shop --from latest --from-claim shop/data-db-0
      kubectl dr pvc diff data-db-0 -n shop --from ./volume.tar
    """
    from kubectl_dr.volumes import diff as job

    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, identity=identity)
    opts, current = options(ctx), session(ctx)
    if current.dry:
        raise UsageError("pvc diff cannot run as a dry run: it needs its read-only pod to look at the volume "
                         "(and changes nothing else)")
    result = job.run(current, repository, job.DiffOptions(current.namespace, claim, source, image=image,
                                                          quiesce=quiesce, from_claim=from_claim,
                                                          from_cluster=from_cluster))
    emit(result.to_dict(), opts.output, table=result.summary())
    if exit_code and not result.identical:
        raise typer.Exit(1)


@app.command("rescue", short_help="Open a shell in a pod that mounts the claim")
def rescue(
    ctx: typer.Context,
    claim: ClaimArg,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run instead of a shell (after --).")] = None,
    image: ImageOption = DEFAULT_IMAGE,
    quiesce: QuiesceOption = False,
    read_only: Annotated[bool, typer.Option("--read-only", help="Mount the volume read-only.")] = False,
    stdin: Annotated[bool, typer.Option(
        "-i", "--stdin", help="Pass stdin to the command, as kubectl exec -i (without a command: a script for sh). "
                              "Needs an API server with exec protocol v5 (Kubernetes 1.30+).")] = False,
) -> None:
    """A shell (or COMMAND) in a pod that mounts the claim at /data; the pod is deleted on exit.

    What you type while the consumers stop and the pod starts is held, and goes to the shell once it is up.
    A command reads stdin only with -i, as with kubectl exec.

    \b
    Examples:
      kubectl dr pvc rescue data-db-0 -n shop
      kubectl dr pvc rescue data-db-0 -n shop -- ls -la /data
      kubectl dr pvc rescue data-db-0 -n shop --quiesce --read-only
      kubectl dr pvc rescue data-db-0 -n shop -i -- sh -c 'cat > /data/app.conf' < app.conf
      kubectl dr pvc rescue data-db-0 -n shop -i < fix-permissions.sh

    Options go before `--`; everything after it is the command.
    """
    from kubectl_dr.volumes import rescue as job

    argv = list(command or [])
    if argv[:1] == ["--"]:  # a second separator ("-- -- cmd") is part of nothing: drop it
        argv = argv[1:]
    opts, current = options(ctx), session(ctx)
    if not argv and stdin and not current.console.is_interactive:
        argv = ["sh"]  # a script on stdin, as `kubectl exec -i POD -- sh < script`
    interactive = not argv
    if interactive and not current.console.is_interactive:
        raise UsageError("an interactive shell needs a terminal; give a command after --, "
                         "e.g. kubectl dr pvc rescue PVC -- ls -la /data, or -i to run a script from stdin")
    if not stdin and not interactive and piped_stdin():
        current.console.warn("note: stdin is not passed to the command without -i (as with kubectl exec -i)")
    result = job.run(current, job.RescueOptions(current.namespace, claim, argv, image=image, quiesce=quiesce,
                                                read_only=read_only, stdin=stdin), interactive)
    if isinstance(result, job.RescuePlan):
        emit(result.to_dict(), opts.output, table=result.summary())
        return
    if result.exit_code is None or result.exit_code < 0:
        raise DrError(f"the command in the rescue pod: {result.describe()}")
    raise typer.Exit(result.exit_code)


@app.command("list", short_help="List claims with their consumers and last backup")
def list_(
    ctx: typer.Context,
    all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces", help="Claims in every namespace.")] = False,
    repo: PlainRepoOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
) -> None:
    """The claims, with what a backup or a restore of each would involve. Reads only: no pod is created.

    Per claim: its size, storage class and access modes; the workloads and pods that mount it, and
    whether a backup or a restore stops them (STOPPED FOR: a restore stops every consumer, a backup only
    those of a ReadWriteOncePod claim; "unstoppable": a consumer kubectl dr cannot stop, so it would
    refuse); its newest backup in the repository and that backup's age (only backups of this cluster, by its
    kube-system uid, as `pvc restore --from latest` picks them); and the user a backup's rescue pod would run as
    (BACKUP AS: root where the namespace's Pod Security level allows it, else the app's own uid, which
    reads only what the app can read).

    \b
    Examples:
      kubectl dr pvc list -n shop
      kubectl dr pvc list -A
      kubectl dr pvc list -n shop -o json
    """
    from kubectl_dr.repo import RepoError
    from kubectl_dr.volumes import inventory
    from kubectl_dr.volumes.source import TYPE

    opts, console = options(ctx), session(ctx).console
    kube = opts.kube()
    namespace = None if all_namespaces else opts.namespace or kube.namespace
    claims = inventory.list_claims(kube, namespace)
    if namespace and not claims and not namespace_may_exist(kube, namespace):
        raise DrError(f'namespaces "{namespace}" not found',
                      hint="Check the namespace (-n NAMESPACE); `kubectl get namespaces` lists them, -A lists every "
                           "namespace's claims.")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint)
    backups = None
    if claims:
        try:
            backups = repository.backups(TYPE)
        except RepoError as exc:  # the claims are still worth seeing; say what is unknown and why
            console.warn(f"cannot read the repository {repository.location}: {exc.message}; LAST BACKUP unknown")
    found = inventory.summarize(kube, claims, backups)
    data = {"kind": "ClaimList", "repository": repository.location, "repositoryRead": backups is not None,
            "items": [c.to_dict() for c in found]}
    if not found:
        if opts.output == "table":
            console.say(f"No persistentvolumeclaims found in {'any namespace' if namespace is None else namespace}.")
        emit(data, opts.output, table="")
        return
    emit(data, opts.output, table=_claims_table(found, every_namespace=namespace is None,
                                                 backups_known=backups is not None))


def _claims_table(found: list[ClaimSummary], *, every_namespace: bool, backups_known: bool) -> str:
    """kubectl get's shape: one word a cell ("<none>", "-", "?" for a repository that could not be read)."""
    from datetime import datetime, timezone

    from kubectl_dr.cli.backups import age
    from kubectl_dr.volumes.inventory import MODE_SHORT

    now = datetime.now(timezone.utc)
    rows = [[*([c.namespace] if every_namespace else []), c.name, c.phase, c.capacity or "-",
             ",".join(MODE_SHORT.get(m, m) for m in c.access_modes) or "-", c.storage_class or "-",
             ",".join(x.ref for x in c.consumers) or "<none>", _stops(c),
             "?" if not backups_known else c.last_backup.id if c.last_backup else "<none>",
             age(c.last_backup.manifest.created_at, now) if c.last_backup else "-", _runs_as(c)]
            for c in found]
    headers = [*(["NAMESPACE"] if every_namespace else []), "NAME", "STATUS", "CAPACITY", "ACCESS MODES",
               "STORAGECLASS", "CONSUMERS", "STOPPED FOR", "LAST BACKUP", "BACKUP AGE", "BACKUP AS"]
    return render_table(headers, rows)


def _stops(claim: ClaimSummary) -> str:
    if claim.unstoppable:
        return "unstoppable"
    jobs = [job for job, stops in (("backup", claim.backup_stops), ("restore", claim.restore_stops)) if stops]
    return ",".join(jobs) or "-"


def _runs_as(claim: ClaimSummary) -> str:
    """One word, so the column survives awk: root, uid=1000(app) (the app's own user), uid=65534."""
    if claim.security.root:
        return "root"
    uid = claim.security.pod.get("runAsUser")
    return f"uid={uid}(app)" if claim.app_user is not None and uid == claim.app_user else f"uid={uid}"
