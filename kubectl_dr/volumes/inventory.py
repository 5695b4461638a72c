"""`pvc list`: the claims of a namespace (or all), each with what a backup or a restore of it would involve.

API reads and one listing of the repository only: no pod, no lease, nothing written. Per claim: its
size, class and access modes; its consumers and whether a backup or a restore would stop them (the same
rules as the access plan: a restore stops every consumer, a backup only those of a ReadWriteOncePod claim
that run); its newest backup in the repository; and the identity a backup's rescue pod would get from the
namespace's Pod Security level (root where the level allows it, else the app's own uid).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import CachedReads, Kube
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import Backup
from kubectl_dr.volumes import security
from kubectl_dr.volumes.access import consumers_of
from kubectl_dr.volumes.claims import RWOP
from kubectl_dr.volumes.security import SecurityPlan
from kubectl_dr.volumes.source import TYPE as PVC_TYPE
from kubectl_dr.workloads import Consumer

# kubectl's short names for access modes (`kubectl get pvc`).
MODE_SHORT = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}


@dataclass
class ClaimSummary:
    namespace: str
    name: str
    phase: str
    volume: str | None
    capacity: str | None
    storage_class: str | None
    access_modes: tuple[str, ...]
    consumers: list[Consumer]
    security: SecurityPlan
    last_backup: Backup | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def running(self) -> list[Consumer]:
        return [c for c in self.consumers if c.pods]

    @property
    def backup_stops(self) -> bool:
        """A backup stops the consumers only of a ReadWriteOncePod claim (one pod at a time) that is in use."""
        return RWOP in self.access_modes and bool(self.running)

    @property
    def restore_stops(self) -> bool:
        """A restore must not write under a running app: every consumer is stopped, then started again."""
        return bool(self.consumers)

    @property
    def unstoppable(self) -> list[Consumer]:
        """Consumers kubectl dr cannot stop: a restore (or a backup that must stop them) is refused."""
        return [c for c in self.consumers if not c.stoppable]

    @property
    def app_user(self) -> int | None:
        uid = self.security.identity.get("runAsUser")
        return int(uid) if uid is not None else None

    def backup_identity(self) -> dict[str, Any]:
        pod = self.security.pod
        return {"podSecurityLevel": self.security.level, "root": self.security.root,
                "runAsUser": pod.get("runAsUser"), "runAsGroup": pod.get("runAsGroup"),
                "appUser": self.app_user, "notes": list(self.security.notes)}

    def to_dict(self) -> dict[str, Any]:
        backup = self.last_backup
        return {
            "namespace": self.namespace, "name": self.name, "status": self.phase, "volume": self.volume,
            "capacity": self.capacity, "storageClass": self.storage_class, "accessModes": list(self.access_modes),
            "consumers": [{"kind": c.kind, "name": c.name, "replicas": c.replicas,
                           "pods": [p.name for p in c.pods], "stoppable": c.stoppable, "reason": c.reason}
                          for c in self.consumers],
            "stopsConsumers": {"backup": self.backup_stops, "restore": self.restore_stops},
            "lastBackup": None if backup is None else {
                "id": backup.id, "createdAt": backup.manifest.to_dict()["createdAt"], "size": backup.manifest.size},
            "backupRunsAs": self.backup_identity(),
            "notes": list(self.notes),
        }


def list_claims(kube: Kube, namespace: str | None) -> list[dict[str, Any]]:
    """The claims of `namespace`, or of every namespace (None), sorted by namespace and name."""
    path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims" if namespace else "/api/v1/persistentvolumeclaims"
    items: list[dict[str, Any]] = kube.get(path).get("items") or []
    return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def summarize(kube: Kube, claims: Iterable[dict[str, Any]], backups: list[Backup] | None) -> list[ClaimSummary]:
    """One summary per claim object; `backups` are the repository's pvc backups newest first (None: unknown)."""
    current, _why = try_cluster_identity(kube)
    server = kube.resolved.server
    kube = CachedReads.of(kube)  # each claim's consumers are found from the same namespace-wide lists
    levels: dict[str, str] = {}
    found: list[ClaimSummary] = []
    for obj in claims:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta["name"])
        if namespace not in levels:
            levels[namespace] = security.namespace_level(kube, namespace)
        try:
            consumers, _own = consumers_of(kube, namespace, name)
        except DrError:  # the claim (or its namespace) was deleted since it was listed
            continue
        identity = security.consumer_identity([c.security_context() for c in consumers])
        found.append(ClaimSummary(
            namespace=namespace, name=name, phase=str(status.get("phase") or "Pending"),
            volume=spec.get("volumeName"),
            capacity=(status.get("capacity") or {}).get("storage")
            or ((spec.get("resources") or {}).get("requests") or {}).get("storage"),
            storage_class=spec.get("storageClassName"),
            access_modes=tuple(status.get("accessModes") or spec.get("accessModes") or ()),
            consumers=consumers,
            security=security.plan(levels[namespace], identity, write=False),
            last_backup=_newest(backups or [], namespace, name, current, server),
            notes=[note for c in consumers for note in c.notes],
        ))
    return found


def _newest(backups: list[Backup], namespace: str, claim: str, current: ClusterIdentity | None,
            server: str) -> Backup | None:
    """The claim's newest backup as `pvc restore --from latest` picks it (volumes/source.py): of the claim's
    namespace and name, and of this cluster (its kube-system uid); a user who may not read kube-system gets
    the newest taken through this API server or recording no cluster, as that restore falls back to."""
    match = {"namespace": namespace, "pvc": claim}
    for b in backups:
        if not b.manifest.matches(PVC_TYPE, match):
            continue
        recorded = b.manifest.cluster
        if current is not None and recorded is not None and recorded.uid == current.uid:
            return b
        if current is None and (recorded is None or recorded.server == server):
            return b
    return None
