"""`kubectl dr etcd`: snapshots from control-plane nodes, offline verification, member health."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr import units
from kubectl_dr.cli import etcd_snapshots
from kubectl_dr.cli.cluster_options import FromClusterOption, FromOtherClusterOption
from kubectl_dr.cli.context import options
from kubectl_dr.cli.copy_to import CopyToOption
from kubectl_dr.cli.durations import Duration
from kubectl_dr.cli.repo_options import (
    AzureEndpointOption,
    EncryptToOption,
    IdentityOption,
    PasswordFileOption,
    RepoOption,
    S3EndpointOption,
)
from kubectl_dr.errors import UsageError
from kubectl_dr.ui.output import emit, render_table, show

if TYPE_CHECKING:
    from kubectl_dr.cli.globals import GlobalOptions
    from kubectl_dr.etcd.model import ClusterStatus, EndpointInfo
    from kubectl_dr.etcd.restore.manage import NodeState
    from kubectl_dr.etcd.restore.run import Result as RestoreResult

app = typer.Typer(
    help=(
        "Snapshot etcd through pods on control-plane nodes (or directly with --endpoints), verify snapshot "
        "files offline, and show member health."
    ),
    no_args_is_help=True,
)
app.add_typer(etcd_snapshots.app, name="snapshots",
              short_help="List and pull the snapshots schedules left on the nodes")


@app.command("verify", short_help="Check a snapshot file offline")
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

    \b
    Examples:
      kubectl dr etcd verify snapshot.db
      kubectl dr etcd verify member/snap/db --allow-missing-trailer -o json
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
        [[f"{status.hash:x}", status.revision, status.total_keys, _human(status.total_size), status.sha256[:16]]],
    )
    emit(data, opts.output, table=table)


# --- status and snapshot: topology from the static pods, or given for an etcd we reach directly ------------
_DIRECT = "Direct etcd access (external etcd)"
EndpointsOption = Annotated[
    list[str] | None,
    typer.Option("--endpoints", metavar="URL[,URL…]", rich_help_panel=_DIRECT,
                 help="Talk to these etcd endpoints from this machine (etcd3 client) instead of through pods on "
                      "control-plane nodes. Repeat the flag or separate URLs with commas."),
]
CacertOption = Annotated[str | None, typer.Option("--cacert", metavar="FILE", rich_help_panel=_DIRECT,
                                                  help="CA bundle that signed the etcd server certificates.")]
CertOption = Annotated[str | None, typer.Option("--cert", metavar="FILE", rich_help_panel=_DIRECT,
                                                help="Client certificate for etcd (with --key).")]
KeyOption = Annotated[str | None, typer.Option("--key", metavar="FILE", rich_help_panel=_DIRECT,
                                               help="Private key of the client certificate.")]
NodeOption = Annotated[str | None, typer.Option("--node", metavar="NODE",
                                                help="Use the etcd member on this control-plane node.")]


def _human(size: int | None) -> str:
    return "" if size is None else units.size(size)


def _status_tables(status: ClusterStatus) -> str:
    members = render_table(
        ["ID", "NAME", "PEER URLS", "CLIENT URLS", "LEADER", "LEARNER"],
        [[m.id, m.name or "(unstarted)", ",".join(m.peer_urls), ",".join(m.client_urls),
          "true" if m.is_leader else "false", "true" if m.is_learner else "false"] for m in status.members],
    )
    active = {a.member_id: a.alarm for a in status.alarms}
    names = {m.id: m.name for m in status.members}

    def leader(e: EndpointInfo) -> str:
        # The leader as this member sees it: with quorum lost, "none" is the finding.
        if e.version is None:
            return ""
        return names.get(e.leader or "", e.leader or "") if e.leader else "none"

    endpoints = render_table(
        ["ENDPOINT", "MEMBER", "HEALTH", "VERSION", "DB SIZE", "IN USE", "REVISION", "RAFT TERM", "RAFT INDEX",
         "LEADER", "ALARMS", "ERROR"],
        [[e.endpoint, e.member or e.member_id or "", "healthy" if e.healthy else "unhealthy", e.version or "",
          _human(e.db_size), _human(e.db_size_in_use), e.revision, e.raft_term, e.raft_index, leader(e),
          ",".join(e.errors) or active.get(e.member_id or "", ""), e.error or ""] for e in status.endpoints],
    )
    return members + "\n" + endpoints


@app.command("status", short_help="Show members, health, DB size and revision")
def status(
    ctx: typer.Context,
    node: NodeOption = None,
    endpoints: EndpointsOption = None,
    cacert: CacertOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Show every etcd member (leader, learner) and per endpoint: health, version, DB size, revision, raft.

    Asks from a short-lived pod on a control-plane node with the etcd static pod's own image and etcdctl,
    or, with --endpoints, directly with the etcd3 client. A member that is down is shown as unhealthy with
    the reason. Exits 0 whenever the cluster could be asked.

    \b
    Examples:
      kubectl dr etcd status
      kubectl dr etcd status -o json
      kubectl dr etcd status --endpoints https://10.0.0.20:2379 --cacert ca.crt --cert c.crt --key c.key
    """
    from kubectl_dr.etcd import status as etcd_status

    opts = options(ctx)
    result = etcd_status.run(opts.session(), etcd_status.StatusOptions(node, endpoints, cacert, cert, key))
    emit(result.to_dict(), opts.output, table=_status_tables(result))


@app.command("snapshot", short_help="Snapshot etcd into the repository, verified")
def snapshot(
    ctx: typer.Context,
    node: NodeOption = None,
    repo: Annotated[str | None, typer.Option("--repo", metavar="PATH|s3://…|azure://…|restic:REPO", help=(
        "Backup repository: a directory, s3://BUCKET/PREFIX, azure://CONTAINER/PREFIX or restic:REPO (a restic "
        "repository as restic -r names it). Defaults to $KUBECTL_DR_REPO, else the config file's repository, "
        "else $XDG_DATA_HOME/kubectl-dr/backups."))] = None,
    helper_image: Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
        "Image of the container that serves the snapshot file from the pod (needs cat, sha256sum and wc)."))
    ] = "busybox",
    endpoints: EndpointsOption = None,
    cacert: CacertOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    encrypt_to: EncryptToOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    copy_to: CopyToOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """Snapshot etcd into the backup repository, verified end to end.

    A pod pinned to a control-plane node runs `etcdctl snapshot save` with the etcd static pod's image,
    the file is streamed back and its size and SHA-256 compared on both sides, the database is read and
    checked, and only then is it stored (type etcd-snapshot) with a manifest: member, etcd version,
    revision, keys, size, SHA-256. The pod is removed however the command ends, and ends by itself
    (removing its copy of the snapshot) minutes after a killed run stops renewing it. A Lease per member
    keeps two snapshots off one member. If a member fails and another is healthy, the next one is used.
    With --endpoints the snapshot streams through the etcd3 client instead, with no pod.

    With --repo restic:REPO the checked file is stored as a one-file restic snapshot (path /snapshot.db, host
    the member's node, tags cluster=, kind=etcd-snapshot, member=, etcd=, revision=, sha256=): `restic restore`
    gives it back, and `kubectl dr etcd restore --from ID --repo restic:REPO` restores it.

    \b
    Examples:
      kubectl dr etcd snapshot
      kubectl dr etcd snapshot --repo restic:rest:https://backup:PASSWORD@backups.example:8000/etcd/
      kubectl dr etcd snapshot --node cp-2 --dry-run=server
      kubectl dr etcd snapshot --encrypt-to age1… --copy-to s3://dr-backups/etcd
      kubectl dr etcd snapshot --endpoints https://10.0.0.10:2379 --cacert ca.crt --cert c.crt --key c.key
    """
    from kubectl_dr.etcd import snapshot_run
    from kubectl_dr.repo.ref import RepoRef

    opts = options(ctx)
    result = snapshot_run.run(opts.session(), RepoRef(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                                                      encrypt_to=_tuple(encrypt_to), password_file=password_file),
                              snapshot_run.SnapshotOptions(node=node, helper_image=helper_image, endpoints=endpoints,
                                                           cacert=cacert, cert=cert, key=key,
                                                           copy_to=tuple(copy_to or ())))
    if isinstance(result, snapshot_run.Plan):
        emit(result.to_dict(), opts.output, table=result.summary())
    else:
        show(result, opts.output)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


# --- restore ------------------------------------------------------------------------------------------------
# The callback's docstring is the group's help (the restore itself), its subcommands follow the last restore.
restore_app = typer.Typer()
app.add_typer(restore_app, name="restore",
              short_help="Restore etcd on every control-plane node from a snapshot")
HelperImageOption = Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
    "Image of the pods that stage files on the nodes and of the static pod that swaps the data dirs "
    "(needs sh, mv, wget, sha256sum: busybox)."))]
NodeReadImageOption = Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
    "Image of the pods that read the restore's records on the nodes (status) or remove its old data dirs "
    "(finalize) (needs sh: busybox)."))]


@restore_app.callback(invoke_without_command=True)
def restore(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option("--from", metavar="ID|latest|FILE", help=(
        "The snapshot: a backup ID (or unique prefix), `latest` (the newest etcd snapshot of this cluster in the "
        "repository) or a snapshot file."))] = None,
    from_cluster: FromClusterOption = None,
    from_other_cluster: FromOtherClusterOption = False,
    repo: RepoOption = None,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    password_file: PasswordFileOption = None,
    etcd_image: Annotated[str | None, typer.Option("--etcd-image", metavar="IMAGE", help=(
        "etcd image that runs `etcdctl snapshot restore` (default: the etcd static pod's own image). Must be of "
        "the cluster's etcd major.minor."))] = None,
    no_bump_revision: Annotated[bool, typer.Option("--no-bump-revision", help=(
        "Restore without moving the revision past the snapshot's (the only way with etcd 3.4 images). Watching "
        "clients then miss the change until restarted."))] = False,
    node_timeout: Annotated[float, typer.Option("--node-timeout", metavar="DURATION", click_type=Duration(10), help=(
        "How long each node waits, after starting its restored member, for the new cluster to form (a quorum "
        "and every peer) before it puts its old data dir back by itself (seconds, or 90s, 5m…)."))] = 300,
    helper_image: HelperImageOption = "busybox",
    endpoints: EndpointsOption = None,
    cacert: CacertOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    restart_kubelets: Annotated[bool, typer.Option("--restart-kubelets", help=(
        "After the restore, restart the kubelet on every node (eight at a time), as the kubernetes.io "
        "procedure asks: a privileged hostPID pod with the node's root at /host runs `chroot /host systemctl "
        "restart kubelet`; each restart counts once the node's new \"Starting kubelet.\" event is seen and the "
        "Node is Ready."))] = False,
    hold_timeout: Annotated[float, typer.Option("--hold-timeout", metavar="DURATION", click_type=Duration(10),
                                                rich_help_panel=_DIRECT, help=(
        "External etcd: how long each node holds its API server down waiting for the rewrite to begin before it "
        "starts it again by itself (seconds, or 90s, 5m…). Once the rewrite began, the nodes hold until it is "
        "finished."))] = 180,
) -> None:
    """Restore etcd on every control-plane node from one snapshot, with nothing but the kubeconfig.

    Preflight (members from the static pods, the snapshot verified, same etcd major.minor, a restore tool with
    --bump-revision in the etcd image) and staging (the snapshot copied to every control-plane node and checked
    there, then restored into a new data dir beside the old one) run while the cluster still serves. Then a
    static pod on each node stops the API server, controller-manager, scheduler and etcd, swaps the data dirs,
    starts etcd and waits until the new cluster has formed, then starts the rest; a node that cannot finish
    goes back to its old data dir by itself. The old data dirs stay until `finalize`; `rollback` puts them back.
    Pods created after the snapshot are stopped by their kubelets; Nodes and pods the snapshot lacks are listed.

    A break-glass runbook (the same restore as shell commands per node) is printed and written beside the
    backup.

    With --repo restic:REPO, --from is a one-file restic snapshot (as `etcd snapshot --repo restic:REPO` or
    `restic backup --stdin` stores one), read and checked here first; `latest` is the newest one tagged
    kind=etcd-snapshot and cluster=<this cluster's uid>.

    `latest` is the newest snapshot of this cluster (kube-system's uid). A snapshot of another cluster (by
    its ID, or --from latest --from-cluster NAME|UID) is refused, naming both, unless --from-other-cluster.

    External etcd (--endpoints, members on hosts that are not nodes): the keys are restored through etcd's client
    API from this machine. Static pods hold every API server down meanwhile; a safety snapshot of the live data
    is saved first (`--from` it to go back); only the keys under the API servers' --etcd-prefix are rewritten, to
    exactly the snapshot's (checked key by key), at a revision above the current one.

    \b
    Examples:
      kubectl dr etcd restore --from latest --dry-run=client
      kubectl dr etcd restore --from 20250101T000000Z-ab12cd --yes
      kubectl dr etcd restore --from latest --repo restic:/srv/restic --yes
      kubectl dr etcd restore status
      kubectl dr etcd restore finalize --yes
      kubectl dr etcd restore --from latest --endpoints https://10.0.0.20:2379 --cacert ca.crt --cert c.crt --key c.key
    """
    if ctx.invoked_subcommand is not None:
        _refuse_restore_options(ctx)
        return
    if source is None:
        raise UsageError("--from is required: a backup ID, `latest`, or a snapshot file",
                         hint="See `kubectl dr etcd restore --help`; `kubectl dr backups list --type etcd-snapshot` "
                              "lists the snapshots.")
    from kubectl_dr.etcd.restore import run as job
    from kubectl_dr.etcd.restore.options import RestoreOptions
    from kubectl_dr.repo.ref import RepoRef

    opts = options(ctx)
    if opts.dry_run == "server":
        raise UsageError("etcd restore has no --dry-run=server: its pods would need to run (use --dry-run=client)")
    result = job.run(
        opts.session(),
        RepoRef(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, identity=_tuple(identity),
                password_file=password_file),
        RestoreOptions(source, namespace_flag=opts.namespace, from_cluster=from_cluster,
                       from_other_cluster=from_other_cluster, etcd_image=etcd_image, no_bump=no_bump_revision,
                       node_timeout=math.ceil(node_timeout), helper_image=helper_image,
                       restart_kubelets=restart_kubelets, hold_timeout=math.ceil(hold_timeout),
                       endpoints=_tuple(endpoints), cacert=cacert, cert=cert, key=key, dry_run=opts.dry_run))
    _render_restore(opts, result)


def _refuse_restore_options(ctx: typer.Context) -> None:
    """`etcd restore --from X finalize` would run finalize and drop --from without a word: the restore's options
    belong to the restore itself, and a command that finalizes or rolls back must not look as if it took them."""
    from click.core import ParameterSource

    given = [p.opts[0] for p in ctx.command.params
             if p.name is not None and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        raise UsageError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the restore itself, not "
                         f"to `etcd restore {ctx.invoked_subcommand}`",
                         hint=f"Run `kubectl dr etcd restore {ctx.invoked_subcommand}` without "
                              f"{'it' if len(given) == 1 else 'them'}; its own options follow it "
                              f"(`kubectl dr etcd restore {ctx.invoked_subcommand} --help`).")


def _render_restore(opts: GlobalOptions, result: RestoreResult) -> None:
    """A plan or an outcome; an outcome that carries a failure (the restore stands, a kubelet restart failed) is
    shown, then fails the command."""
    from kubectl_dr.etcd.restore.common import Outcome

    emit(result.to_dict(), opts.output, table=result.summary())
    if isinstance(result, Outcome) and result.failure is not None:
        raise result.failure


RunOption = Annotated[str | None, typer.Option("--run", metavar="RUN", help=(
    "The restore to act on, by its run ID (default: every node's last restore); settles nodes that disagree "
    "about their last restore."))]


@restore_app.command("status", short_help="Show the last restore on every control-plane node")
def restore_status(ctx: typer.Context, helper_image: NodeReadImageOption = "busybox", run: RunOption = None) -> None:
    """Show the last restore on every control-plane node: its steps, and every data dir a restore set aside.

    \b
    Examples:
      kubectl dr etcd restore status
      kubectl dr etcd restore status -o json
    """
    from kubectl_dr.etcd.restore import manage

    opts = options(ctx)
    if opts.dry_run != "none":
        raise UsageError("restore status reads the nodes through a pod; it has no dry run (and changes nothing)")
    found, settle = manage.states(opts.session(), helper_image, run)
    table = render_table(
        ["NODE", "RUN", "STATE", "LAST STEP", "SET ASIDE"],
        [[s.node, s.run_id or "", s.state, (s.rollback or s.restore or [(0, "", "")])[-1][2][:60],
          _set_aside(s)] for s in found])
    table += "".join(f"{s.node}: {a.path}: {a.what}\n" for s in found for a in s.set_aside)
    if settle:
        opts.session().console.say(f"the nodes disagree about their last restore; {settle}")
    emit({"kind": "EtcdRestoreStatus", "nodes": [s.to_dict() for s in found], "settle": settle}, opts.output,
         table=table)


def _set_aside(state: NodeState) -> str:
    """The data dirs the node keeps beside the live one, by name (what each is follows the table)."""
    return ", ".join(a.path.rsplit("/", 1)[-1] for a in state.set_aside) or "none"


@restore_app.command("finalize", short_help="Delete the data dirs the restores set aside")
def restore_finalize(ctx: typer.Context, helper_image: NodeReadImageOption = "busybox", run: RunOption = None) -> None:
    """Delete every data dir the restores (and rollbacks) set aside; no rollback is possible afterwards.

    \b
    Examples:
      kubectl dr etcd restore finalize --dry-run=client
      kubectl dr etcd restore finalize --yes
    """
    from kubectl_dr.etcd.restore import manage

    opts = options(ctx)
    result = manage.finalize(opts.session(), helper_image, run)
    dry = opts.dry_run != "none"
    prefix = "(dry run) would remove" if dry else "removed"
    # Once removed, no rollback puts a data dir back: the result says what it was, not what rollback would do.
    table = "\n".join(f"{prefix} {r['path']} on node {r['node']} "
                      f"({r['what'] if dry else r['what'].removesuffix(manage.ROLLBACK_PUTS_IT_BACK)})"
                      for r in result["remove"])
    table = (table or "nothing to remove") + "".join(f"\nkept {r['path']} on node {r['node']}: {r['what']}"
                                                     for r in result["kept"])
    emit(result, opts.output, table=table + "\n")


@restore_app.command("rollback", short_help="Put back the data from before the last restore")
def restore_rollback(
    ctx: typer.Context,
    helper_image: HelperImageOption = "busybox",
    run: RunOption = None,
    no_bump_revision: Annotated[bool, typer.Option("--no-bump-revision", help=(
        "Put the old data dirs back as they are, without moving the revision past the restored cluster's (the only "
        "way with etcd 3.4 images). Watching clients then miss the change until restarted."))] = False,
    node_timeout: Annotated[float, typer.Option("--node-timeout", metavar="DURATION", click_type=Duration(10), help=(
        "How long each node waits for the cluster to form again before it goes back to the restored data (seconds, "
        "or 90s, 5m…)."))] = 300,
    restart_kubelets: Annotated[bool, typer.Option("--restart-kubelets", help=(
        "After the rollback, restart the kubelet on every node, as after a restore."))] = False,
) -> None:
    """Put back the data from before the last restore, with the same self-driving static pods.

    Like the restore, the revision moves past the restored cluster's (--bump-revision): every node starts from
    the newest of the nodes' old databases, rebuilt beside the live data dir. The old data dirs stay until
    `finalize`.

    \b
    Examples:
      kubectl dr etcd restore rollback --dry-run=client
      kubectl dr etcd restore rollback --yes --restart-kubelets
    """
    from kubectl_dr.etcd.restore import manage

    opts = options(ctx)
    result = manage.rollback(opts.session(), helper_image, run, no_bump=no_bump_revision,
                             node_timeout=math.ceil(node_timeout), restart_kubelets=restart_kubelets)
    if isinstance(result, dict):
        bump = (f", revision moved forward by at least {result['bumpRevision']:,}" if result["bumpRevision"]
                else ", WITHOUT a revision bump")
        table = "\n".join(f"(dry run) would put {n['putBack']} back on node {n['node']} (as {n['as']}{bump})"
                          for n in result["nodes"])
        emit(result, opts.output, table=table + "\n")
        return
    _render_restore(opts, result)


# --- membership ----------------------------------------------------------------------------------------------
member_app = typer.Typer(help="Change etcd's membership: replace a member whose data or node was lost.",
                         no_args_is_help=True)
app.add_typer(member_app, name="member", short_help="Change etcd's membership")


@member_app.command("replace", short_help="Replace a member whose data or node was lost")
def member_replace(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The control-plane node whose etcd member is replaced.")],
    undo: Annotated[bool, typer.Option("--undo", help=(
        "Put back what an interrupted replacement changed, as long as the member was not yet removed from etcd."))
    ] = False,
    manifests_dir: Annotated[str, typer.Option("--manifests-dir", metavar="DIR", help=(
        "The kubelet's staticPodPath on the node."))] = "/etc/kubernetes/manifests",
    timeout: Annotated[float, typer.Option("--timeout", metavar="DURATION", click_type=Duration(1), help=(
        "How long to wait for the member to start and catch up with the leader (seconds, or 90s, 5m…)."))] = 600,
    helper_image: Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
        "Image of the pod that edits files on the node (needs sh, mv, cat, stat and sha256sum)."))] = "busybox",
) -> None:
    """Replace a stacked etcd member whose data is lost or whose node was rebuilt, without ssh.

    \b
    Refuses when the other members could not keep quorum without it. Then, each step written to a
    journal on the node (/etc/kubernetes/kubectl-dr/etcd-member-replace):
      1. moves its static pod manifest out of the manifests directory (the member stops)
      2. etcdctl member remove, from a pod on a healthy member's node
      3. keeps its old data dir beside it (/var/lib/etcd.kubectl-dr-RUN) and starts from an empty one
      4. etcdctl member add --learner; the member starts with --initial-cluster-state=existing
      5. promotes it once it caught up with the leader, puts kubeadm's manifest back unchanged,
         and waits until every member is healthy.
    An interrupted run is resumed by running the command again; before step 2 it can be undone with --undo.

    \b
    Examples:
      kubectl dr etcd member replace cp-2 --dry-run=client
      kubectl dr etcd member replace cp-2 --yes
    """
    from kubectl_dr.etcd.replace import Replacement

    opts = options(ctx)
    if opts.dry_run == "server":
        raise UsageError("etcd member replace has no server-side dry run: its checks need etcdctl in a pod "
                         "(use --dry-run=client to see the plan)")
    job = Replacement.of(opts.session(), node, helper_image, manifests_dir=manifests_dir, timeout=timeout)
    if opts.dry_run == "client":
        if undo:
            raise UsageError("--undo has no dry run")
        plan = job.plan()
        emit(plan.to_dict(), opts.output, table=plan.summary())
        return
    done = job.execute(undo=undo)
    if isinstance(done, str):
        emit({"kind": "EtcdMemberReplaceUndo", "node": node, "message": done}, opts.output, table=done + "\n")
        return
    if done.aside:
        opts.session().console.say(f"the old data dir of {done.name} is kept on node {node} as {done.aside}: delete "
                                   "it once you no longer need it")
    table = render_table(
        ["NODE", "MEMBER", "OLD ID", "NEW ID", "LEARNER FIRST", "OLD DATA DIR", "DURATION"],
        [[done.node, done.name, done.old_id or "", done.new_id or "", "yes" if done.learner else "no",
          done.aside or "(none: it was gone)", units.duration(done.seconds)]])
    emit(done.to_dict(), opts.output, table=table)
