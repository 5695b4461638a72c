"""The identity of the cluster a Kube talks to: kube-system's UID, with its server URL and context as hints."""

from __future__ import annotations

from collections.abc import Callable

from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.errors import ApiError
from kubectl_dr.kube.client import Kube


def cluster_identity(kube: Kube) -> ClusterIdentity:
    """GET the kube-system namespace: its UID is fixed for the life of the cluster and new when it is rebuilt."""
    namespace = kube.get("/api/v1/namespaces/kube-system")
    uid = str(((namespace or {}).get("metadata") or {}).get("uid") or "")
    if not uid:
        raise ApiError(500, "InternalError", "the kube-system namespace the server returned has no metadata.uid")
    return ClusterIdentity(uid, kube.resolved.server, kube.resolved.context_name)


def try_cluster_identity(kube: Kube) -> tuple[ClusterIdentity | None, str]:
    """The identity, or None and the server's reason when this user may not read kube-system (a namespaced
    role); any other failure (the server is down) is raised."""
    try:
        return cluster_identity(kube), ""
    except ApiError as exc:
        if exc.status not in (401, 403, 404):
            raise
        return None, exc.message


def identity_for_backup(kube: Kube, warn: Callable[[str], None]) -> ClusterIdentity | None:
    """The identity a new backup records, or None (said through ``warn``) when this user may not read
    kube-system: the backup is still worth having, restored by its ID."""
    identity, why = try_cluster_identity(kube)
    if identity is None:
        warn(f"warning: cannot read the kube-system namespace ({why}): this backup records no cluster, so "
             "`--from latest` will not pick it; restore it by its ID")
    return identity
