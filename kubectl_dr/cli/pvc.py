"""`kubectl dr pvc`: back up, restore and rescue the contents of PersistentVolumeClaims."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from kubectl_dr.cli.backups import REPO_HELP, human_size, open_repo
from kubectl_dr.cli.context import options
from kubectl_dr.cli.repo_options import EncryptToOption, S3EndpointOption
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.ui.output import count, emit, message
from kubectl_dr.volumes import DEFAULT_IMAGE

app = typer.Typer(
    help=(
        "Back up, restore and rescue volume contents through short-lived rescue pods that mount the claim "
        "and stream tar over exec; owners are scaled down and back up safely."
    ),
    no_args_is_help=True,
)

ClaimArg = Annotated[str, typer.Argument(help="Name of the PersistentVolumeClaim.", metavar="PVC")]
RepoOption = Annotated[str | None, typer.Option("--repo", help=REPO_HELP, metavar="PATH")]
ImageOption = Annotated[
    str, typer.Option("--image", help="Image of the rescue pod: needs sh and tar (busybox or GNU).", metavar="IMAGE")
]
QuiesceOption = Annotated[
    bool, typer.Option("--quiesce", help="Stop the claim's consumers for the duration, and start them again after.")
]


def _namespace(ctx: typer.Context) -> tuple[Any, str]:
    opts = options(ctx)
    kube = opts.kube()
    return kube, opts.namespace or kube.namespace


def _ask(question: str) -> bool:
    return bool(typer.confirm(question, default=False, err=True))


@app.command("backup")
def backup(
    ctx: typer.Context,
    claim: ClaimArg,
    repo: RepoOption = None,
    name: Annotated[str | None, typer.Option("--name", help="A name for the backup (part of its ID).")] = None,
    quiesce: QuiesceOption = False,
    image: ImageOption = DEFAULT_IMAGE,
    encrypt_to: EncryptToOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Stream the volume's contents into the backup repository, verified in the pod and locally.

    A ReadWriteOnce claim in use is read on the consumer's node while the app keeps running; a
    ReadWriteOncePod claim (or --quiesce) stops the consumers first and starts them again after.
    """
    from kubectl_dr.volumes import backup as job

    opts = options(ctx)
    job.check_name(name)
    repository = open_repo(repo, s3_endpoint=s3_endpoint, encrypt_to=encrypt_to)
    repository.preflight(create=opts.dry_run == "none")  # before the cluster is touched
    kube, namespace = _namespace(ctx)
    result = job.run(kube, repository, job.BackupOptions(namespace, claim, image=image, name=name, quiesce=quiesce),
                     message)
    archive = result["details"]["archive"]
    table = (f'backup "{result["id"]}" created: {count(archive["entries"], "entry", "entries")}, '
             f'{human_size(result["parts"][0]["size"])}, sha256 {result["parts"][0]["sha256"]}\n')
    emit(result, opts.output, table=table)


@app.command("restore")
def restore(
    ctx: typer.Context,
    claim: ClaimArg,
    source: Annotated[
        str, typer.Option("--from", help="Backup ID, unique ID prefix, 'latest' (of this claim), a backup "
                                         "directory, or a tar file.", metavar="ID|latest|FILE")
    ],
    repo: RepoOption = None,
    clean: Annotated[
        bool, typer.Option("--clean", help="Also remove what is in the volume but not in the backup "
                                           "(after the archive is restored and checked).")
    ] = False,
    image: ImageOption = DEFAULT_IMAGE,
) -> None:
    """Verify a backup, stop the claim's consumers, restore into the volume, check it, start them again.

    Without --clean nothing outside the archive is touched. An interrupted restore can be run again;
    `kubectl dr scale restore` puts replicas back after a killed run.
    """
    from kubectl_dr.volumes import restore as job

    opts = options(ctx)
    repository = open_repo(repo)
    kube, namespace = _namespace(ctx)
    ask = _ask if sys.stdin.isatty() else None
    result = job.run(kube, repository, job.RestoreOptions(namespace, claim, source, image=image, clean=clean),
                     message, yes=opts.yes, ask=ask)
    table = (f"restored {count(result['entries']['entries'], 'entry', 'entries')} ({human_size(result['size'])}) into "
             f"{namespace}/{claim}{' from backup ' + result['backup'] if result['backup'] else ''}\n")
    emit(result, opts.output, table=table)


@app.command("rescue")
def rescue(
    ctx: typer.Context,
    claim: ClaimArg,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run instead of a shell (after --).")] = None,
    image: ImageOption = DEFAULT_IMAGE,
    quiesce: QuiesceOption = False,
    read_only: Annotated[bool, typer.Option("--read-only", help="Mount the volume read-only.")] = False,
) -> None:
    """A shell (or COMMAND) in a pod that mounts the claim at /data; the pod is deleted on exit.

    \b
    Examples:
      kubectl dr pvc rescue data-db-0 -n shop
      kubectl dr pvc rescue data-db-0 -n shop -- ls -la /data
      kubectl dr pvc rescue data-db-0 -n shop --quiesce --read-only

    Options go before `--`; everything after it is the command.
    """
    from kubectl_dr.volumes import rescue as job

    argv = list(command or [])
    if argv[:1] == ["--"]:  # a second separator ("-- -- cmd") is part of nothing: drop it
        argv = argv[1:]
    interactive = not argv
    if interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("an interactive shell needs a terminal; give a command after --, "
                         "e.g. kubectl dr pvc rescue PVC -- ls -la /data")
    kube, namespace = _namespace(ctx)
    pod = job.start_pod(kube, job.RescueOptions(namespace, claim, argv, image=image, quiesce=quiesce,
                                                read_only=read_only), message)
    result = job.interactive(kube, pod, ["sh"]) if interactive else job.run_command(kube, pod, argv)
    pod.delete()
    if result.exit_code is None or result.exit_code < 0:
        raise DrError(f"the command in pod {pod.namespace}/{pod.name}: {result.describe()}")
    raise typer.Exit(result.exit_code)
