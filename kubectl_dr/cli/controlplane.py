"""`kubectl dr control-plane`: back up and restore the files a rebuilt kubeadm control-plane node needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr import units
from kubectl_dr.cli.cluster_options import FromClusterOption, FromOtherClusterOption
from kubectl_dr.cli.context import options, session
from kubectl_dr.cli.copy_to import CopyToOption, copy_new, open_targets
from kubectl_dr.cli.repo_options import EncryptToOption, IdentityOption, RepoOption, S3EndpointOption
from kubectl_dr.errors import UsageError
from kubectl_dr.ui.output import emit, render_table
from kubectl_dr.units import count

if TYPE_CHECKING:
    from kubectl_dr.controlplane.backup import StoredFile
    from kubectl_dr.controlplane.restore import RestoreResult

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
    copy_to: CopyToOption = None,
    helper_image: HelperImageOption = "busybox",
) -> None:
    """Store /etc/kubernetes of a control-plane node in the repository (type control-plane).

    \b
    Kept: the shared CA and keys (pki/ca, sa, front-proxy-ca, etcd/ca), every other file of
    /etc/kubernetes/manifests, the kubeconfigs and *.yaml beside them, the encryption-at-rest config named by
    kube-apiserver's --encryption-provider-config (wherever it is), and the kubeadm-config ConfigMap.
    Read through a pod with read-only hostPath mounts; each file is listed with mode, owner and SHA-256 in
    the pod and must arrive with exactly that size and digest. Files are stored 0600, one part each.
    They are the cluster's private keys: every backup that is not encrypted (--encrypt-to) says so.

    \b
    Examples:
      kubectl dr control-plane backup --encrypt-to age1…
      kubectl dr control-plane backup --node cp-2 --repo s3://dr-backups/cp --encrypt-to ~/.ssh/id_ed25519.pub
    """
    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.controlplane import backup as cp_backup
    from kubectl_dr.repo.safety import confirm_plaintext_secrets

    opts, current = options(ctx), session(ctx)
    if opts.dry_run != "none":
        raise UsageError("control-plane backup has no dry run: it only reads (through one pod) and writes to the "
                         "repository")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, encrypt_to=encrypt_to)
    repository.preflight()
    what = "a control-plane backup (the cluster's CA and service-account private keys)"
    confirm_plaintext_secrets(repository, what, current.console)
    targets = open_targets(copy_to, repository, s3_endpoint=s3_endpoint, encrypt_to=encrypt_to, dry_run="none",
                           console=current.console, secret_what=what)
    result = cp_backup.backup(current, repository, node=node, namespace=_namespace(ctx), helper_image=helper_image)
    current.console.say(f"control-plane backup {result.manifest.id} of node {result.node} saved in "
                        f"{result.location} ({units.duration(result.seconds)})")
    data = result.to_dict()
    if targets:
        data["copies"] = copy_new(repository, result.manifest.id, targets, current.console)
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
    helper_image: HelperImageOption = "busybox",
    from_cluster: FromClusterOption = None,
    from_other_cluster: FromOtherClusterOption = False,
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
    """
    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.controlplane import restore as cp_restore

    opts, current = options(ctx), session(ctx)
    if opts.dry_run == "server":
        raise UsageError("control-plane restore has no server-side dry run (use --dry-run=client)")
    repository = open_repo(repo, s3_endpoint=s3_endpoint, identity=identity)
    result = cp_restore.restore(current, repository, from_, node=node, namespace=_namespace(ctx),
                                helper_image=helper_image, overwrite=overwrite, with_encryption=with_encryption_config,
                                from_cluster=from_cluster, from_other_cluster=from_other_cluster)
    say = current.console.say
    verb = "would write" if result.dry_run else "wrote"
    say(f"{verb} {count(len(result.written), 'file')} of backup {result.backup_id} to node {node}"
            + (f"; {len(result.unchanged)} already equal" if result.unchanged else ""))
    for aside in result.kept_aside:
        say(f"the previous file is kept as {aside}")
    for note in result.notes:
        say(f"note: {note}")
    say(result.regenerated)
    emit(result.to_dict(), opts.output, table=restore_table(result))


def restore_table(result: RestoreResult) -> str:
    """What a restore wrote (or would write) and what it found already equal, sizes as every table gives them."""
    return render_table(["PATH", "MODE", "OWNER", "SIZE", "ACTION"],
                        [[p.path, f"{p.mode:04o}", f"{p.uid}:{p.gid}", units.size(p.size),
                          ("would " if result.dry_run and p.action != "unchanged" else "") + p.action]
                         for p in result.written + result.unchanged])
