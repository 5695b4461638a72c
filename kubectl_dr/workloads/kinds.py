"""The workload kinds kubectl dr meets when it walks from a pod to what controls it, and their API paths.

Only kinds whose `spec.replicas` can be set to 0 without deleting anything are scalable: a DaemonSet
has no replicas, and a Job or CronJob stopped by hand would not come back the way it was.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str
    scalable: bool

    def collection_path(self, namespace: str | None) -> str:
        """The list path, namespaced or across all namespaces (`namespace=None`)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is None:
            return f"{prefix}/{self.plural}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"

    def object_path(self, namespace: str, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"


DEPLOYMENT = Kind("Deployment", "apps/v1", "deployments", True)
STATEFULSET = Kind("StatefulSet", "apps/v1", "statefulsets", True)
REPLICASET = Kind("ReplicaSet", "apps/v1", "replicasets", True)
REPLICATIONCONTROLLER = Kind("ReplicationController", "v1", "replicationcontrollers", True)
DAEMONSET = Kind("DaemonSet", "apps/v1", "daemonsets", False)
JOB = Kind("Job", "batch/v1", "jobs", False)
CRONJOB = Kind("CronJob", "batch/v1", "cronjobs", False)
POD = Kind("Pod", "v1", "pods", False)

KINDS: dict[str, Kind] = {k.kind: k for k in (
    DEPLOYMENT, STATEFULSET, REPLICASET, REPLICATIONCONTROLLER, DAEMONSET, JOB, CRONJOB, POD)}
SCALABLE: tuple[Kind, ...] = tuple(k for k in KINDS.values() if k.scalable)

# The group of each kind we know: an ownerReference to `apps/v1 Deployment` is ours, one to
# `example.com/v1 Deployment` (a custom resource that happens to share the name) is not.
_GROUPS = {k.kind: k.api_version.rpartition("/")[0] for k in KINDS.values()}

# Short names and plurals kubectl accepts, so `scale restore deploy/web sts/db` reads as it does in kubectl.
ALIASES: dict[str, str] = {
    "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
    "statefulset": "StatefulSet", "statefulsets": "StatefulSet", "sts": "StatefulSet",
    "replicaset": "ReplicaSet", "replicasets": "ReplicaSet", "rs": "ReplicaSet",
    "replicationcontroller": "ReplicationController", "replicationcontrollers": "ReplicationController",
    "rc": "ReplicationController",
}

# Order in which consumers are listed (and whose securityContext wins, see security.py): the kinds
# that usually own data first.
ORDER = ("StatefulSet", "Deployment", "ReplicaSet", "ReplicationController", "DaemonSet", "CronJob", "Job", "Pod")


def known(kind: str, api_version: str) -> Kind | None:
    """The Kind for an ownerReference's kind/apiVersion, or None for anything we do not manage."""
    found = KINDS.get(kind)
    if found is None or _GROUPS[kind] != api_version.rpartition("/")[0]:
        return None
    return found


def order_key(kind: str, name: str) -> tuple[int, str]:
    return (ORDER.index(kind) if kind in ORDER else len(ORDER), name)
