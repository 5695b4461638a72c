"""`kubectl dr etcd snapshots`: the snapshots schedules left on the etcd nodes, listed and pulled off-site."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr import units
from kubectl_dr.cli.context import options
from kubectl_dr.cli.repo_options import AzureEndpointOption, EncryptToOption, PasswordFileOption, S3EndpointOption
from kubectl_dr.errors import UsageError
from kubectl_dr.ui.output import emit, render_table
from kubectl_dr.units import count

if TYPE_CHECKING:
    from kubectl_dr.cli.globals import GlobalOptions
    from kubectl_dr.console import Console
    from kubectl_dr.kube.client import Kube

app = typer.Typer(
    help=("The snapshots that `kubectl dr schedule create etcd-snapshot` leaves on the etcd nodes: list them, and "
          "pull the new ones into a repository (a directory, S3, Azure or restic), verified."),
    no_args_is_help=True,
)

NodeOption = Annotated[list[str] | None, typer.Option("--node", metavar="NODE", help=(
    "Only this etcd node (repeatable). Default: every node with an etcd member."))]
DirOption = Annotated[list[str] | None, typer.Option("--dir", metavar="PATH", help=(
    "Snapshot directory on the nodes (repeatable). Default: the directories of the schedules in the namespace, "
    "and /var/lib/kubectl-dr/snapshots."))]
ImageOption = Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
    "Image of the reader pods (needs sh, cat, stat and sha256sum: busybox or coreutils)."))]


def _namespace(opts: GlobalOptions) -> str:
    from kubectl_dr.etcd.topology import ETCD_NAMESPACE

    return opts.namespace or ETCD_NAMESPACE


def _directories(kube: Kube, namespace: str, given: list[str] | None) -> list[str]:
    from kubectl_dr.schedules import etcd_job, manage

    if given:
        for d in given:
            if not d.startswith("/"):
                raise UsageError(f"--dir {d!r}: give the absolute path of the directory on the nodes")
        return sorted({d.rstrip("/") or "/" for d in given})
    found = {s.directory for s in manage.list_schedules(kube, namespace) if s.directory}
    return sorted(found | {etcd_job.DEFAULT_DIR})


def _human(size: int | None) -> str:
    return "" if size is None else units.size(size)


def _say_missing(console: Console, missing: list[tuple[str, str]]) -> None:
    """A node without the directory has had no schedule run there yet: the first state, not a failure."""
    for n, d in missing:
        console.say(f"no schedule has written snapshots on node {n} yet (no directory {d} there)")


@app.command("list", short_help="List the snapshots on every etcd node")
def list_(
    ctx: typer.Context,
    node: NodeOption = None,
    directory: DirOption = None,
    repo: Annotated[str | None, typer.Option("--repo", metavar="PATH|s3://…|azure://…|restic:REPO", help=(
        "Also say which snapshots this repository already holds (column IN REPO). With restic:REPO, list the "
        "etcd snapshots kept in the restic repository instead (no pods)."))] = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    helper_image: ImageOption = "busybox",
    password_file: PasswordFileOption = None,
) -> None:
    """The snapshots on every etcd node, newest first: what a pull would copy.

    A short-lived read-only pod per node (busybox, the snapshot directory mounted read-only, no token) lists
    the snapshots and their sidecars; it is removed when the command ends. A snapshot shows as incomplete
    (with why) when its sidecar is missing or disagrees with the file: a pull skips those.

    \b
    Examples:
      kubectl dr etcd snapshots list
      kubectl dr etcd snapshots list --repo s3://dr-backups/prod -o json
      kubectl dr etcd snapshots list --repo restic:/srv/restic

    With --repo restic:REPO it lists the etcd snapshots the restic repository keeps (ID, time taken, node,
    member, revision, size, SHA-256; --node filters by node), read from their snapshot files and tags:
    nothing runs in the cluster.
    """
    from kubectl_dr.etcd import topology
    from kubectl_dr.repo.restic.location import is_restic
    from kubectl_dr.schedules import node_snapshots

    opts = options(ctx)
    if is_restic(repo):
        assert repo is not None
        if directory:
            raise UsageError("--dir applies to the nodes' snapshot directories; with --repo restic:REPO the "
                             "snapshots listed are the restic repository's")
        from kubectl_dr.cli import restic_backups

        restic_backups.list_etcd_snapshots(opts.session().console, repo, opts.output, password_file=password_file,
                                           s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, nodes=node)
        return
    if password_file:
        raise UsageError("--password-file applies to a restic repository (--repo restic:REPO)")
    if opts.dry_run != "none":
        raise UsageError("etcd snapshots list cannot run as a dry run: it needs its pods to look (and changes "
                         "nothing else)")
    repository = None
    if repo is not None:
        from kubectl_dr.cli.repo_options import open_repo

        repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint)
    kube = opts.kube()
    namespace = _namespace(opts)
    dirs = _directories(kube, namespace, directory)
    listing = node_snapshots.list_snapshots(opts.session(), topology.discover(kube), namespace=namespace,
                                            directories=dirs, nodes=node,
                                            image=helper_image, repo=repository)
    _say_missing(opts.session().console, listing.missing)
    if not listing.snapshots and opts.output == "table":
        opts.session().console.say("No etcd snapshots on the nodes."
                + ("" if not listing.missing else
                   " Make a schedule with `kubectl dr schedule create etcd-snapshot --cron EXPR`, or take one now "
                   "with `kubectl dr etcd snapshot`."))
        return
    headers = ["NODE", "FILE", "TAKEN", "SIZE", "REVISION", "SHA256", "SCHEDULE", "STATE"]
    if repository is not None:
        headers.append("IN REPO")
    rows = []
    for s in listing.snapshots:
        row = [s.node, s.path, s.taken_at or "", _human(s.size), s.revision if s.revision is not None else "",
               (s.sha256 or "")[:16], s.schedule or "", "ok" if s.complete else f"incomplete: {s.problem}"]
        if repository is not None:
            row.append(s.in_repository or "no")
        rows.append(row)
    emit(listing.to_dict(), opts.output, table=render_table(headers, rows))


@app.command("pull", short_help="Copy the new node snapshots into the repository")
def pull(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", "--repo", metavar="PATH|s3://…|azure://…", help=(
        "The repository to copy into: a directory, s3://BUCKET/PREFIX, azure://CONTAINER/PREFIX or restic:REPO (each "
        "snapshot a one-file restic snapshot, as etcd snapshot --repo restic:REPO stores it). Defaults to "
        "$KUBECTL_DR_REPO, else the config file's repository, else $XDG_DATA_HOME/kubectl-dr/backups."))] = None,
    node: NodeOption = None,
    directory: DirOption = None,
    encrypt_to: EncryptToOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    helper_image: ImageOption = "busybox",
    password_file: PasswordFileOption = None,
) -> None:
    """Copy the node-local snapshots the repository does not hold yet into it, each verified end to end.

    For every complete snapshot on the nodes whose SHA-256 no etcd snapshot in the repository has (so a
    second pull copies nothing), oldest first: the file is hashed in the reader pod and must still match
    its sidecar; it is streamed here, counted and hashed, and must match again; the database is checked
    (size rule, SHA-256 trailer, every bbolt page, the revision the node recorded); only then is it
    stored, as an etcd-snapshot backup with the time the node took it — `backups list/verify/prune` and
    a restore treat it like one from `kubectl dr etcd snapshot`. One pull per repository at a time (a
    Lease in the namespace). An etcd snapshot holds every Secret: an unencrypted one to a remote
    repository asks first (or --yes).

    Run it from cron or a systemd timer on a machine you control: `kubectl dr schedule print --what
    etcd-pull` prints the entries.

    \b
    Examples:
      kubectl dr etcd snapshots pull --to s3://dr-backups/prod --encrypt-to age1…
      kubectl dr etcd snapshots pull --to /srv/dr --node cp-1
      kubectl dr etcd snapshots pull --to restic:rest:https://backup:PASSWORD@backups.example:8000/etcd/
    """
    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.etcd import topology
    from kubectl_dr.repo.safety import confirm_plaintext_secrets
    from kubectl_dr.runs import Run
    from kubectl_dr.schedules import node_snapshots

    opts = options(ctx)
    from kubectl_dr.repo.restic.location import is_restic

    if is_restic(to):
        assert to is not None
        if encrypt_to:
            raise UsageError("--encrypt-to does not apply to a restic repository (restic encrypts every repository)")
        _restic_pull(opts, to, node=node, directory=directory, helper_image=helper_image,
                     password_file=password_file, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint)
        return
    if password_file:
        raise UsageError("--password-file applies to a restic repository (--to restic:REPO)")
    repository = open_repo(to, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, encrypt_to=encrypt_to)
    repository.preflight(create=opts.dry_run == "none")
    confirm_plaintext_secrets(repository, "etcd snapshots", opts.session().console)
    kube = opts.kube()
    namespace = _namespace(opts)
    topo = topology.discover(kube)
    dirs = _directories(kube, namespace, directory)
    run = Run("etcd snapshots pull")
    if opts.dry_run != "none":
        nodes = [topo.member(n).node for n in node] if node else [m.node for m in topo.members]
        if opts.dry_run == "server":
            from kubectl_dr.kube import pods

            for n in nodes:
                for d in dirs:
                    pods.create(kube, node_snapshots.reader_pod(n, d, namespace, run, helper_image),
                                what="etcd snapshots reader", dry_run="server")
        plan = {"kind": "NodeEtcdSnapshotPullPlan", "dryRun": opts.dry_run, "repository": repository.location,
                "nodes": nodes, "directories": dirs,
                "inRepository": len(repository.list(type="etcd-snapshot"))}
        emit(plan, opts.output, table=(
            f"(dry run) would read {', '.join(dirs)} on {', '.join(nodes)} through a read-only pod per node, and copy "
            f"the snapshots {repository.location} does not hold yet (it holds {plan['inRepository']} etcd "
            "snapshots)\n" + ("  the API server accepted the reader pods (nothing was persisted)\n"
                              if opts.dry_run == "server" else "")))
        return
    result = node_snapshots.pull(opts.session(), topo, repository, namespace=namespace, directories=dirs,
                                 nodes=node, image=helper_image)
    _say_missing(opts.session().console, result.missing)
    opts.session().console.say(f"pulled {count(len(result.pulled), 'snapshot')} into {result.repository}; "
                               f"{len(result.already)} already there; {len(result.incomplete)} incomplete skipped")
    rows = [[r.manifest.id, r.manifest.source.get("node", ""), r.manifest.details.get("nodeFile", ""),
             r.manifest.details.get("takenAt", ""), r.status.revision, _human(r.status.file_size),
             r.status.sha256[:16]] for r in result.pulled]
    table = render_table(["ID", "NODE", "FILE", "TAKEN", "REVISION", "SIZE", "SHA256"], rows) if rows else ""
    emit(result.to_dict(), opts.output, table=table)


def _restic_pull(opts: GlobalOptions, to: str, *, node: list[str] | None, directory: list[str] | None,
                 helper_image: str, password_file: str | None, s3_endpoint: str | None,
                 azure_endpoint: str | None = None) -> None:
    """`pull --to restic:REPO`: each new node snapshot checked as for any repository (staged here), then
    stored as a one-file restic snapshot; a snapshot whose SHA-256 the restic repository has is not copied."""
    from kubectl_dr.cli.repo_options import open_restic
    from kubectl_dr.etcd import restic_snapshot, topology
    from kubectl_dr.etcd.snapshot import SnapshotResult
    from kubectl_dr.repo.restic.location import backend_for, shown
    from kubectl_dr.schedules import node_snapshots

    console = opts.session().console
    kube = opts.kube()
    namespace = _namespace(opts)
    topo = topology.discover(kube)
    dirs = _directories(kube, namespace, directory)
    if opts.dry_run != "none":
        nodes = [topo.member(n).node for n in node] if node else [m.node for m in topo.members]
        where = shown(backend_for(to, env=os.environ).describe())
        emit({"kind": "NodeEtcdSnapshotPullPlan", "dryRun": opts.dry_run, "repository": where, "nodes": nodes,
              "directories": dirs}, opts.output,
             table=f"(dry run) would read {', '.join(dirs)} on {', '.join(nodes)} through a read-only pod per node, "
                   f"and store the snapshots the restic repository {where} does not hold yet as one-file "
                   "snapshots\n")
        return

    def create(where: str) -> bool:
        console.confirm(f"create a new restic repository at {where} (restic init)")
        return True

    restic = open_restic(to, password_file=password_file, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                         create=create)
    where = shown(restic.backend.describe())
    stored: dict[str, str] = {}

    def keep(pulled: SnapshotResult) -> str:
        snap = restic_snapshot.store_taken(restic, pulled)
        shutil.rmtree(pulled.path, ignore_errors=True)  # the staged copy: one snapshot's room at a time
        stored[pulled.manifest.id] = snap.id
        return snap.short_id

    local, remove = restic_snapshot.staging_repository()
    try:
        result = node_snapshots.pull(
            opts.session(), topo, local, namespace=namespace, directories=dirs, nodes=node, image=helper_image,
            destination=node_snapshots.Destination(where, restic_snapshot.known_sha256(restic), keep))
    finally:
        remove()
    _say_missing(opts.session().console, result.missing)
    opts.session().console.say(f"pulled {count(len(result.pulled), 'snapshot')} into {where}; "
                               f"{len(result.already)} already there; {len(result.incomplete)} incomplete skipped")
    data = result.to_dict()
    for item, r in zip(data["pulled"], result.pulled, strict=True):
        item.update(id=stored[r.manifest.id], location=where, repository=where)
    rows = [[stored[r.manifest.id][:8], r.manifest.source.get("node", ""), r.manifest.details.get("nodeFile", ""),
             r.manifest.details.get("takenAt", ""), r.status.revision, _human(r.status.file_size),
             r.status.sha256[:16]] for r in result.pulled]
    emit(data, opts.output,
         table=render_table(["ID", "NODE", "FILE", "TAKEN", "REVISION", "SIZE", "SHA256"], rows) if rows else "")

