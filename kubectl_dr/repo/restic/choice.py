"""`--from ID|latest` in a restic repository: which snapshot of a kind a restore reads, and whether it is of
this cluster. Restic repositories record a cluster by its kube-system UID only (the `cluster=` tag)."""

from __future__ import annotations

from kubectl_dr.clusters import ClusterIdentity, latest_of, refuse_other
from kubectl_dr.errors import DrError
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot


def choose(restic: Repository, ref: str, kind: str, *, what: str, take: str, restore: str,
           current: ClusterIdentity | None, unknown_why: str = "", from_cluster: str | None = None,
           from_other_cluster: bool = False, id_needs_kind: bool = False) -> tuple[Snapshot, ClusterIdentity | None]:
    """The snapshot `ref` names and the cluster it records. `latest` is the newest snapshot tagged
    `kind=KIND` and this cluster (or --from-cluster's); an ID is any snapshot (`id_needs_kind`: only one of
    the kind). Another cluster's snapshot is refused unless `from_other_cluster`. `what` names the kind in
    messages ("etcd snapshot"), `take` the command that makes one, `restore` the restore in a refusal."""
    tag = f"kind={kind}"
    snaps = [s for s in restic.snapshots() if tag in s.tags]
    uids = sorted({u for s in snaps if (u := s.tag_value("cluster"))})
    where = restic.backend.describe()

    def pick_uid(name: str) -> str:
        if name in uids:
            return name
        raise DrError(f"no {what} of cluster {name!r} in {where}",
                      hint=f"The clusters with {what}s there: {', '.join(uids) or 'none'} (restic repositories "
                           "record a cluster by its kube-system UID only).")

    uid = latest_of(ref, current, from_cluster, pick_uid, unknown_why)
    if uid is not None:
        mine = [s for s in snaps if s.tag_value("cluster") == uid]
        if not mine:
            raise DrError(f"no {what} of cluster uid {uid} in {where}",
                          hint=f"Take one with {take}, or give a snapshot's ID.")
        snap = mine[-1]
    else:
        snap = restic.find_snapshot(ref)
        if id_needs_kind and tag not in snap.tags:
            raise DrError(f"restic snapshot {snap.short_id} is not a {what} (it has no {tag} tag)")
    tagged = snap.tag_value("cluster")
    recorded = ClusterIdentity(tagged) if tagged else None
    if current is not None and not from_other_cluster:
        refuse_other(snap.short_id, recorded, current, restore)
    return snap, recorded
