"""`--from` of a restore that replaces a cluster's own state (etcd, control plane): the backup, checked to
be of this cluster, and what to say about where it came from."""

from __future__ import annotations

from kubectl_dr.clusters import ClusterIdentity, latest_of, origin_note, refuse_other
from kubectl_dr.repo.repository import Backup, Repository


def choose(repo: Repository, ref: str, type: str, *, current: ClusterIdentity | None, what: str,
           from_cluster: str | None = None, from_other_cluster: bool = False,
           unknown_why: str = "") -> tuple[Backup, str | None]:
    """The backup ``ref`` names (``latest``: of ``current``, or of ``from_cluster``), and a note on its origin.

    A backup of another cluster is refused, naming both, unless ``from_other_cluster``: a snapshot of
    another cluster's etcd restored here replaces this cluster's identity, nodes and workloads.
    """
    uid = latest_of(ref, current, from_cluster, repo.cluster_uid, unknown_why)
    backup = repo.resolve(ref, type, cluster=uid)
    recorded = backup.manifest.cluster
    if current is None:
        return backup, origin_note(backup.id, None, ClusterIdentity("")) if recorded is None else None
    if not from_other_cluster:
        refuse_other(backup.id, recorded, current, what)
    return backup, origin_note(backup.id, recorded, current)
