"""`backups list`'s question: which backups of a repository to show, and what was last found of each.

By default the current cluster's (kube-system's uid, asked of the kubeconfig's cluster with a short timeout:
a listing must not wait on a dead server) and those that record no cluster; --cluster NAME|UID another
cluster's, matched against what the backups record (no API server asked); --all-clusters every one. Which
of these a listing is, and why, comes back as a note for the person reading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubectl_dr.clusters import ClusterIdentity, describe
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.kube.kubeconfig import Overrides
from kubectl_dr.repo import Backup, Repository
from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.families import APP_TYPE, families
from kubectl_dr.repo.repository import Verification
from kubectl_dr.units import count

PROBE_SECONDS = 5.0


@dataclass
class Catalog:
    repository: str
    backups: list[Backup]
    verifications: dict[str, Verification | None] = field(default_factory=dict)
    # A claim's backup → the application backups that name it (it is kept and deleted with them).
    part_of: dict[str, list[str]] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)  # application backups whose delete did not finish


def list_backups(repository: Repository, console: Console, *, type: str | None, cluster: str | None,
                 all_clusters: bool, kubeconfig: Overrides, request_timeout: float | None) -> Catalog:
    """The backups to list, newest first, with their last verification; what was skipped and which cluster's
    they are is said on the console."""
    found, problems = repository.scan()
    for _, why in problems:
        console.warn(f"skipped {why}")
    chosen = [b for b in found if b.manifest.matches(type)]
    if not all_clusters:
        chosen = _of_cluster(repository, console, chosen, cluster, kubeconfig, request_timeout)
    owners = families(b.manifest for b in found).owners
    deleting = {b.id for b in chosen if b.manifest.type == APP_TYPE and _deleting(repository, b)}
    return Catalog(repository.location, chosen, {b.id: repository.verification(b) for b in chosen},
                   {b.id: owners[b.id] for b in chosen if b.id in owners}, deleting)


def _deleting(repository: Repository, backup: Backup) -> bool:
    """A listing goes on when one backup's deletion mark cannot be read: that backup is shown as being
    deleted (not to be restored) rather than as whole."""
    try:
        return repository.deleting(backup)
    except RepoError:
        return True


def _of_cluster(repository: Repository, console: Console, backups: list[Backup], cluster: str | None,
                kubeconfig: Overrides, request_timeout: float | None) -> list[Backup]:
    if cluster:
        # kubectl's global --cluster names a cluster; here it names whose backups to list, matched against what
        # the backups record.
        uid = repository.cluster_uid(cluster)
        return [b for b in backups if b.manifest.cluster is not None and b.manifest.cluster.uid == uid]
    current, why = current_cluster(kubeconfig, request_timeout)
    if current is None:
        if any(b.manifest.cluster is not None for b in backups):
            console.say(f"note: listing the backups of every cluster ({why}); --cluster NAME|UID lists one's")
        return backups
    mine = [b for b in backups if b.manifest.cluster is None or b.manifest.cluster.uid == current.uid]
    hidden = len(backups) - len(mine)
    console.say(f"note: listing the backups of the current cluster, {describe(current)}"
                + (f"; {count(hidden, 'backup')} of other clusters not shown (--all-clusters, or --cluster "
                   "NAME|UID)" if hidden else ""))
    return mine


def current_cluster(kubeconfig: Overrides, request_timeout: float | None) -> tuple[ClusterIdentity | None, str]:
    """The cluster the kubeconfig names, if it answers soon; else None and why."""
    from kubectl_dr.kube import kubeconfig as kubeconfigs
    from kubectl_dr.kube.client import connect
    from kubectl_dr.kube.identity import try_cluster_identity

    try:
        resolved = kubeconfigs.resolve(kubeconfig)
    except DrError:
        return None, "no cluster is configured"
    kube = connect(resolved, min(request_timeout or PROBE_SECONDS, PROBE_SECONDS))
    try:
        identity, why = try_cluster_identity(kube)
    except DrError as exc:
        return None, f"the cluster of context {resolved.context_name} does not answer: {exc.message}"
    finally:
        kube.close()
    return identity, f"cannot read its kube-system namespace: {why}"
