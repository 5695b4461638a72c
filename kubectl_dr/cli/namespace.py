"""`kubectl dr namespace` (alias `ns`): an application's objects and volumes, backed up together and restored
into this cluster or another."""

from __future__ import annotations

from typing import Annotated

import typer

from kubectl_dr.cli.context import namespace_may_exist, options, session
from kubectl_dr.cli.diff_options import ExitCodeOption
from kubectl_dr.cli.repo_options import EncryptToOption, IdentityOption, PlainRepoOption, S3EndpointOption, open_repo
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.ui.output import emit
from kubectl_dr.volumes import DEFAULT_IMAGE

app = typer.Typer(
    help=(
        "Back up a namespace's objects and its claims' data as one backup, and restore it into this cluster or "
        "another: checked by a server dry run before the first object, workloads started only once their "
        "volumes are restored. Alias: ns."
    ),
    no_args_is_help=True,
)

FromOption = Annotated[str, typer.Option(
    "--from", metavar="ID|latest", help="Backup ID, unique ID prefix, or 'latest' (this cluster's newest of NS).")]
ImageOption = Annotated[str, typer.Option("--image", metavar="IMAGE",
                                          help="Image of the claims' rescue pods (as for `pvc backup`).")]


def _split(values: list[str] | None) -> list[str]:
    return [w.strip() for v in values or [] for w in v.split(",") if w.strip()]


@app.command("backup", short_help="Back up namespaces' objects and claims' data together")
def backup(
    ctx: typer.Context,
    namespaces: Annotated[list[str], typer.Argument(help="Namespaces to back up.", metavar="NS...")],
    selector: Annotated[str | None, typer.Option("-l", "--selector", help="Only objects with these labels "
                                                 "(the namespace object is always kept).")] = None,
    include: Annotated[list[str] | None, typer.Option("--include-resources", metavar="R,...",
                                                      help="Only these resource types (plural, short or qualified "
                                                           "names).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude-resources", metavar="R,...",
                                                      help="Leave these resource types out.")] = None,
    no_volumes: Annotated[bool, typer.Option("--no-volumes", help="Objects only, no claims' data.")] = False,
    quiesce: Annotated[bool, typer.Option(
        "--quiesce", help="Stop the claims' consumers for the whole backup (objects and data of one moment), "
                          "start them again after.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="A name for the backup (part of its ID).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=8, metavar="N",
                                          help="Claims backed up side by side.")] = 3,
    image: ImageOption = DEFAULT_IMAGE,
    repo: PlainRepoOption = None,
    encrypt_to: EncryptToOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Back up every listable object of the namespaces, cleaned as a restore needs them, and by default the data
    of every bound claim in them (through `pvc backup`, up to --parallel claims side by side).

    Left out, each with its reason in the backup's record: Events, objects a controller makes from another one
    in the backup (Pods of ReplicaSets, ReplicaSets of Deployments, …), service-account tokens, mirror pods,
    finished Pods and Jobs, kubectl dr's own pods. Recorded too: the namespace object and the cluster-scoped
    objects it needs (CRDs of its custom resources, statically bound PVs, storage classes, cluster roles its
    role bindings name, priority classes), restored only where missing. Secrets are in the backup: to a remote
    repository they go encrypted (--encrypt-to) or after asking.

    \b
    Examples:
      kubectl dr namespace backup shop
      kubectl dr ns backup shop billing --quiesce --name before-upgrade
      kubectl dr ns backup shop -l app=web --exclude-resources secrets --no-volumes
    """
    from kubectl_dr.apps import backup as job
    from kubectl_dr.apps.collect import Filters
    from kubectl_dr.repo.safety import confirm_plaintext_secrets
    from kubectl_dr.volumes.backup import check_name

    check_name(name)
    opts, current = options(ctx), session(ctx)
    # Before the repository is opened (and created): a mistyped namespace leaves no new empty repository.
    missing = [n for n in namespaces if not namespace_may_exist(current.kube, n)]
    if missing:
        raise DrError(f'namespaces "{missing[0]}" not found' if len(missing) == 1
                      else f"namespaces not found: {', '.join(missing)}",
                      hint="Check the names; `kubectl get namespaces` lists them.")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, encrypt_to=encrypt_to)
    repository.preflight(create=not current.dry)
    if not current.dry:
        confirm_plaintext_secrets(repository, "a namespace backup", current.console,
                                  holds="the Secrets of its namespaces")
    result = job.run(current, repository, job.BackupOptions(
        namespaces, Filters(selector, _split(include), _split(exclude)), volumes=not no_volumes, quiesce=quiesce,
        name=name, image=image, parallel=parallel))
    emit(result.to_dict(), opts.output, table=result.summary())


@app.command("restore", short_help="Restore a namespace backup, server dry run first")
def restore(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace in the backup.", metavar="NS")],
    source: FromOption,
    to: Annotated[str | None, typer.Option("--to", metavar="NEW", help="Restore under this namespace name.")] = None,
    namespace_mapping: Annotated[str | None, typer.Option("--namespace-mapping", metavar="A:B,...",
                                                          help="Namespaces to rename (also in role binding "
                                                               "subjects and volume claim references).")] = None,
    storage_class_mapping: Annotated[str | None, typer.Option("--storage-class-mapping", metavar="A:B,...",
                                                              help="Storage classes to replace in claims, claim "
                                                                   "templates and volumes.")] = None,
    existing: Annotated[str, typer.Option("--existing", metavar="fail|skip|update",
                                          help="What to do with objects that exist: fail (nothing is created, "
                                               "every collision named), skip them, or update them.")] = "fail",
    preserve_nodeports: Annotated[bool, typer.Option("--preserve-nodeports",
                                                     help="Keep Services' node ports (else the target allocates "
                                                          "new ones).")] = False,
    skip_server_dry_run: Annotated[bool, typer.Option("--skip-server-dry-run",
                                                      help="Do not send every create with dryRun=All before the "
                                                           "first real one.")] = False,
    no_volumes: Annotated[bool, typer.Option("--no-volumes", help="Objects only; claims are created empty.")] = False,
    image: ImageOption = DEFAULT_IMAGE,
    repo: PlainRepoOption = None,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Restore a namespace backup: preflight (backup checked, every object mapped and looked up), a server dry
    run of every create, the other objects in Velero's order (CRDs waited for), the claims' data through `pvc
    restore`, then the workloads, created at 0 replicas with their recorded replicas and scaled up.

    Into another cluster: the global --context (or --kubeconfig). An interrupted restore leaves the workloads
    at 0 with their records: run it again and it finishes (what it created is marked with the backup's ID),
    or `kubectl dr scale restore -n NS` starts them as they are.

    \b
    Examples:
      kubectl dr namespace restore shop --from latest --to shop-restored
      kubectl dr --context dr-site ns restore shop --from 20261206T094500Z-app-shop --yes
      kubectl dr ns restore shop --from latest --dry-run=server
      kubectl dr ns restore shop --from latest --existing skip --storage-class-mapping standard:fast
    """
    from kubectl_dr.apps import restore as job
    from kubectl_dr.apps.mapping import parse_pairs

    if existing not in job.EXISTING:
        raise UsageError(f"--existing must be one of fail, skip, update, not {existing!r}")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, identity=identity)
    opts, current = options(ctx), session(ctx)
    result = job.run(current, repository, job.RestoreOptions(
        namespace, source, to=to, namespace_mapping=parse_pairs(namespace_mapping, "namespace mapping"),
        storage_class_mapping=parse_pairs(storage_class_mapping, "storage class mapping"), existing=existing,
        preserve_node_ports=preserve_nodeports, skip_server_dry_run=skip_server_dry_run, volumes=not no_volumes,
        image=image))
    emit(result.to_dict(), opts.output, table=result.summary())


@app.command("diff", short_help="Compare a namespace backup with the live namespace")
def diff(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace in the backup.", metavar="NS")],
    source: FromOption,
    to: Annotated[str | None, typer.Option("--to", metavar="NEW", help="Compare with this namespace instead.")] = None,
    no_volumes: Annotated[bool, typer.Option("--no-volumes", help="Objects only: no pod compares the claims' "
                                                                  "contents.")] = False,
    image: ImageOption = DEFAULT_IMAGE,
    repo: PlainRepoOption = None,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
    exit_code: ExitCodeOption = False,
) -> None:
    """Compare a namespace backup with the live namespace: objects a restore would create, objects that differ
    (field by field: backup's value against the live one), and objects equal to the backup; each claim's
    contents as `pvc diff` compares them (a read-only pod per claim). Reads only. `identical` (-o json) is true
    when every object and every compared claim's contents are as the backup has them; --exit-code then exits
    0, else 1, as kubectl diff does.

    \b
    Examples:
      kubectl dr namespace diff shop --from latest
      kubectl dr ns diff shop --from latest --to shop-restored -o json
    """
    from kubectl_dr.apps import diff as job

    repository = open_repo(repo, s3_endpoint=s3_endpoint, identity=identity)
    opts, current = options(ctx), session(ctx)
    if current.dry:
        raise UsageError("namespace diff cannot run as a dry run: it only reads (and its pods only read)")
    result = job.run(current, repository, job.DiffOptions(namespace, source, to=to, volumes=not no_volumes,
                                                          image=image))
    emit(result.to_dict(), opts.output, table=result.summary())
    if exit_code and not result.identical:
        raise typer.Exit(1)
