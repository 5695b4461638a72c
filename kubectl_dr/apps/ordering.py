"""The order a restore creates objects in: Velero's defaultRestorePriorities (pkg/cmd/server/config),
then everything else alphabetically by resource, then the workloads, last (they are created at 0
replicas and scaled up only after their claims' data is restored)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

PRIORITIES = (
    "customresourcedefinitions.apiextensions.k8s.io", "namespaces", "storageclasses.storage.k8s.io",
    "persistentvolumes", "persistentvolumeclaims", "clusterroles.rbac.authorization.k8s.io",
    "roles.rbac.authorization.k8s.io", "serviceaccounts", "clusterrolebindings.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io", "secrets", "configmaps", "limitranges",
    "priorityclasses.scheduling.k8s.io", "resourcequotas", "endpoints", "services",
)
WORKLOADS = (
    "pods", "replicationcontrollers", "replicasets.apps", "deployments.apps", "statefulsets.apps",
    "daemonsets.apps", "jobs.batch", "cronjobs.batch",
)


def order_key(resource: str, obj: Json) -> tuple[int, str, str, str]:
    """Sort key of an object of ``resource`` (a qualified resource name, as `ResourceType.name`)."""
    meta = obj.get("metadata") or {}
    if resource in PRIORITIES:
        rank = PRIORITIES.index(resource)
    elif resource in WORKLOADS:
        rank = len(PRIORITIES) + 1 + WORKLOADS.index(resource)
    else:
        rank = len(PRIORITIES)
    return rank, resource, str(meta.get("namespace", "")), str(meta.get("name", ""))
