"""`kubectl dr control-plane`: back up and restore the files a rebuilt kubeadm control-plane node needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr import units
from kubectl_dr.cli.cluster_options import FromClusterOption, FromOtherClusterOption
from kubectl_dr.cli.context import options, session
from kubectl_dr.cli.copy_to import CopyToOption, copy_new, open_targets
from kubectl_dr.cli.repo_options import (
    AzureEndpointOption,
    EncryptToOption,
    IdentityOption,
    PasswordFileOption,
    RepoOption,
    S3EndpointOption,
)
from kubectl_dr.errors import UsageError
from kubectl_dr.repo.restic.location import shown
from kubectl_dr.ui.output import emit, render_table
from kubectl_dr.units import count

if TYPE_CHECKING:
    from kubectl_dr.controlplane.backup import StoredFile
    from kubectl_dr.controlplane.restore import RestoreResult
    from kubectl_dr.repo import Repository

app = typer.Typer(
    help="Back up a control-plane node's PKI, manifests, kubeconfigs and encryption config; put the shared CA "
         "and keys back on a rebuilt node.",
    no_args_is_help=True,
)
HelperImageOption = Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
    "Image of the pod that reads and writes the node's files (needs sh, cat, stat and sha256sum)."))]


def _namespace(ctx: typer.Context) -> str:
    return options(ctx).namespace or "kube-system"



@app.command("backup", short_help="Store a control-plane node's /etc/kubernetes")
def backup(
    ctx: typer.Context,
    node: Annotated[str | None, typer.Option("--node", metavar="NODE", help=(
        "The control-plane node to read (default: the first node that runs kube-apiserver)."))] = None,
    repo: RepoOption = None,
    encrypt_to: EncryptToOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    copy_to: CopyToOption = None,
    helper_image: HelperImageOption = "busybox",
    password_file: PasswordFileOption = None,
) -> None:
    """Store /etc/kubernetes of a control-plane node in the repository (type control-plane).

    \b
    Kept: the shared CA and keys (pki/ca, sa, front-proxy-ca, etcd/ca), every file of
    /etc/kubernetes/manifests, the kubeconfigs and *.yaml beside them, the encryption-at-rest config named by
    kube-apiserver's --encryption-provider-config (wherever it is), and the kubeadm-config ConfigMap.
    Read through a pod with read-only hostPath mounts; each file is listed with mode, owner and SHA-256 in
    the pod and must arrive with exactly that size and digest. Files are stored 0600, one part each.
    They are the cluster's private keys: every backup that is not encrypted (--encrypt-to) says so.

    \b
    Examples:
      kubectl dr control-plane backup --encrypt-to age1…
      kubectl dr control-plane backup --node cp-2 --repo s3://dr-backups/cp --encrypt-to ~/.ssh/id_ed25519.pub
      kubectl dr control-plane backup --repo restic:/srv/restic

    With --repo restic:REPO the checked files become one restic snapshot (host NODE, tags cluster=UID,
    kind=control-plane, node=NODE) holding them at their own paths with their modes and owners, plus
    /kubectl-dr/control-plane.json (each file's size, SHA-256 and role) and /kubectl-dr/kubeadm-config.yaml;
    every file is read back and compared before the snapshot is written. restic encrypts it.
    """
    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.controlplane import backup as cp_backup
    from kubectl_dr.repo.safety import confirm_plaintext_secrets

    opts, current = options(ctx), session(ctx)
    if opts.dry_run != "none":
        raise UsageError("control-plane backup has no dry run: it only reads (through one pod) and writes to the "
                         "repository")
    from kubectl_dr.repo.restic.location import is_restic

    if is_restic(repo):
        assert repo is not None
        if encrypt_to or copy_to:
            raise UsageError("--copy-to and --encrypt-to do not apply to a restic repository (restic encrypts every "
                             "repository; restic copy copies snapshots)")
        _restic_backup(ctx, repo, node=node, helper_image=helper_image, password_file=password_file,
                       s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint)
        return
    if password_file:
        raise UsageError("--password-file applies to a restic repository (--repo restic:REPO)")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint, encrypt_to=encrypt_to)
    repository.preflight()
    what = "a control-plane backup (the cluster's CA and service-account private keys)"
    confirm_plaintext_secrets(repository, what, current.console)
    targets = open_targets(copy_to, repository, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                           encrypt_to=encrypt_to, dry_run="none",
                           console=current.console, secret_what=what)
    result = cp_backup.backup(current, repository, node=node, namespace=_namespace(ctx), helper_image=helper_image)
    current.console.say(f"control-plane backup {result.manifest.id} of node {result.node} saved in "
                        f"{result.location} ({units.duration(result.seconds)})")
    data = result.to_dict()
    if targets:
        data["copies"] = copy_new(repository, result.manifest.id, targets, current.console)
    emit(data, opts.output, table=backup_table(result.files))


def _restic_backup(ctx: typer.Context, repo: str, *, node: str | None, helper_image: str, password_file: str | None,
                   s3_endpoint: str | None, azure_endpoint: str | None) -> None:
    from kubectl_dr.cli.repo_options import open_restic
    from kubectl_dr.controlplane import backup as cp_backup
    from kubectl_dr.controlplane import restic_store

    opts, current = options(ctx), session(ctx)

    def create(where: str) -> bool:
        current.console.confirm(f"create a new restic repository at {where} (restic init)")
        return True

    restic = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                         create=create)
    snap, result = restic_store.backup(restic, current.console, lambda staging: cp_backup.backup(
        current, staging, node=node, namespace=_namespace(ctx), helper_image=helper_image, encrypted_elsewhere=True))
    where = restic.backend.describe()
    current.console.say(f"control-plane files of node {result.node} saved as restic snapshot {snap.short_id} in "
                        f"{where} ({units.duration(result.seconds)})")
    data = {"kind": "ResticSnapshot", "id": snap.id, "shortId": snap.short_id, "repository": shown(where),
            "hostname": snap.hostname, "paths": snap.paths, "tags": snap.tags, "type": cp_backup.BACKUP_TYPE,
            "node": result.node, "files": [f.__dict__ for f in result.files],
            "size": sum(f.size for f in result.files), "seconds": round(result.seconds, 3)}
    emit(data, opts.output, table=backup_table(result.files))


def backup_table(files: list[StoredFile]) -> str:
    """The files a backup holds, sizes in the units of every other table."""
    return render_table(["PATH", "MODE", "OWNER", "SIZE", "SHA256", "RESTORED"],
                        [[f.path, f.mode, f.owner, units.size(f.size), f.sha256[:16], "yes" if f.restore else "no"]
                         for f in files])


@app.command("restore", short_help="Put the shared CA and keys back on a rebuilt node")
def restore(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", metavar="ID|latest", help="The control-plane backup.")],
    node: Annotated[str, typer.Option("--node", metavar="NODE", help="The (rebuilt) node to write to.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help=(
        "Replace files the node already has with other content (the old ones are kept beside them)."))] = False,
    with_encryption_config: Annotated[bool, typer.Option("--with-encryption-config", help=(
        "Also write back the encryption-at-rest config (its keys decrypt every Secret in etcd)."))] = False,
    repo: RepoOption = None,
    identity: IdentityOption = None,
    s3_endpoint: S3EndpointOption = None,
    azure_endpoint: AzureEndpointOption = None,
    helper_image: HelperImageOption = "busybox",
    from_cluster: FromClusterOption = None,
    from_other_cluster: FromOtherClusterOption = False,
    password_file: PasswordFileOption = None,
) -> None:
    """Write the shared CA and key set of a control-plane backup back onto a node, with kubeadm's modes.

    `latest` is the newest backup of this cluster (kube-system's uid). A backup of another cluster (by
    its ID, or --from latest --from-cluster NAME|UID) is refused, naming both, unless --from-other-cluster.

    \b
    Written: pki/ca.crt|key, pki/sa.key|pub, pki/front-proxy-ca.crt|key, pki/etcd/ca.crt|key below
    /etc/kubernetes, keys 0600 and certificates 0644, owned by root (and the encryption config with
    --with-encryption-config, where this cluster's kube-apiserver reads it). Paths, modes and owners are the
    tool's own: what else a backup's manifest says is reported and ignored. Every file is read back from
    the repository and checked before the node is touched, written atomically, and checked on the node
    afterwards. A node that already has other versions of them is refused unless --overwrite. Everything
    else is regenerated by kubeadm on the node (the command says what).

    \b
    Examples:
      kubectl dr control-plane restore --from latest --node cp-2 --dry-run=client
      kubectl dr control-plane restore --from 20260101T000000Z-control-plane-cp-1 --node cp-2 -i key.txt --yes
      kubectl dr control-plane restore --from latest --node cp-2 --repo restic:/srv/restic

    With --repo restic:REPO, --from is a restic snapshot ID or latest (the newest kind=control-plane snapshot
    of this cluster); every file is read and checked against the snapshot's list (size, SHA-256) into a
    private directory here first, then restored the same way.
    """
    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.controlplane import restore as cp_restore

    opts, current = options(ctx), session(ctx)
    if opts.dry_run == "server":
        raise UsageError("control-plane restore has no server-side dry run (use --dry-run=client)")
    from kubectl_dr.repo.restic.location import is_restic

    if is_restic(repo):
        assert repo is not None
        if identity:
            raise UsageError("--identity does not apply to a restic repository (its password opens it)")
        repository, from_, snapshot = _restic_staged(
            ctx, repo, from_, password_file=password_file, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
            from_cluster=from_cluster, from_other_cluster=from_other_cluster)
        from_cluster = None
    elif password_file:
        raise UsageError("--password-file applies to a restic repository (--repo restic:REPO)")
    else:
        repository, snapshot = open_repo(repo, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                                         identity=identity), None
    result = cp_restore.restore(current, repository, from_, node=node, namespace=_namespace(ctx),
                                helper_image=helper_image, overwrite=overwrite, with_encryption=with_encryption_config,
                                from_cluster=from_cluster, from_other_cluster=from_other_cluster, snapshot=snapshot)
    say = current.console.say
    verb = "would write" if result.dry_run else "wrote"
    what = f"restic snapshot {result.backup_id[:8]}" if snapshot else f"backup {result.backup_id}"
    say(f"{verb} {count(len(result.written), 'file')} of {what} to node {node}"
            + (f"; {len(result.unchanged)} already equal" if result.unchanged else ""))
    for aside in result.kept_aside:
        say(f"the previous file is kept as {aside}")
    for note in result.notes:
        say(f"note: {note}")
    say(result.regenerated)
    emit(result.to_dict(), opts.output, table=restore_table(result))


def _restic_staged(ctx: typer.Context, repo: str, ref: str, *, password_file: str | None, s3_endpoint: str | None,
                   azure_endpoint: str | None, from_cluster: str | None, from_other_cluster: bool
                   ) -> tuple[Repository, str, str]:
    """The restic snapshot `ref` read and checked into a private staging repository: (it, the staged backup's ID,
    the snapshot's ID)."""
    from kubectl_dr.cli.repo_options import open_restic
    from kubectl_dr.controlplane import restic_store
    from kubectl_dr.kube.identity import try_cluster_identity

    current = session(ctx)
    restic = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint)
    cluster, why = try_cluster_identity(current.kube)
    snap = restic_store.pick(restic, ref, current.console, current=cluster, unknown_why=why, from_cluster=from_cluster,
                             from_other_cluster=from_other_cluster)
    staged, backup_id = restic_store.stage(restic, snap, current.console)
    return staged, backup_id, snap.id


def restore_table(result: RestoreResult) -> str:
    """What a restore wrote (or would write) and what it found already equal, sizes as every table gives them."""
    return render_table(["PATH", "MODE", "OWNER", "SIZE", "ACTION"],
                        [[p.path, f"{p.mode:04o}", f"{p.uid}:{p.gid}", units.size(p.size),
                          ("would " if result.dry_run and p.action != "unchanged" else "") + p.action]
                         for p in result.written + result.unchanged])
