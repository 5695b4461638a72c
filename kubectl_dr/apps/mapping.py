"""Objects as a restore sends them: namespaces and storage classes mapped, and the fields the target
cluster allocates itself cleared (Velero's restore item actions, DESIGN §9)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import UsageError

Json = dict[str, Any]
RESTORED_FROM = "kubectl-dr.io/restored-from"
# What the PV controller and the scheduler write on a claim they bound: a new cluster binds it afresh.
CLAIM_BIND_ANNOTATIONS = ("pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
                          "volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner",
                          "volume.kubernetes.io/selected-node")
SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController")


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """`A:B,C:D` → {A: B, C: D}; a usage error names the bad pair."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        old, sep, new = item.strip().partition(":")
        if not sep or not old or not new:
            raise UsageError(f"invalid {what} {item.strip()!r}: expected OLD:NEW (e.g. shop:shop-restored)")
        pairs[old] = new
    return pairs


@dataclass
class Mapping:
    namespaces: dict[str, str] = field(default_factory=dict)
    storage_classes: dict[str, str] = field(default_factory=dict)
    preserve_node_ports: bool = False

    def namespace(self, name: str) -> str:
        return self.namespaces.get(name, name)

    def storage_class(self, name: str | None) -> str | None:
        return self.storage_classes.get(name, name) if name else name


def _claim_spec(spec: Json, mapping: Mapping) -> None:
    if spec.get("storageClassName"):
        spec["storageClassName"] = mapping.storage_class(spec["storageClassName"])


def map_names(obj: Json, mapping: Mapping) -> Json:
    """A copy of ``obj`` with every namespace it names mapped: its own, a namespace's name (and the
    label the server keeps equal to it), binding subjects, a volume's claim reference."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    kind = out.get("kind")
    if meta.get("namespace"):
        meta["namespace"] = mapping.namespace(meta["namespace"])
    if kind == "Namespace":
        meta["name"] = mapping.namespace(meta["name"])
        if "kubernetes.io/metadata.name" in (meta.get("labels") or {}):
            meta["labels"]["kubernetes.io/metadata.name"] = meta["name"]
        out.pop("spec", None)  # finalizers: the server sets its own
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        for subject in out.get("subjects") or []:
            if subject.get("namespace"):
                subject["namespace"] = mapping.namespace(subject["namespace"])
    claim = (out.get("spec") or {}).get("claimRef") if kind == "PersistentVolume" else None
    if claim and claim.get("namespace"):
        claim["namespace"] = mapping.namespace(claim["namespace"])
    return out


def shape(obj: Json, mapping: Mapping, backup_id: str, *, static_volumes: set[str], run_id: str,
          now: str) -> Json:
    """The object to create: mapped, with the cluster-allocated fields cleared, and marked as restored
    from ``backup_id`` (a rerun recognises what an earlier run created). Workloads get replicas 0 and
    the replica record `scale restore` reads (``run_id``)."""
    from kubectl_dr.workloads import records

    out = map_names(obj, mapping)
    meta = out["metadata"]
    kind = out.get("kind")
    annotations = meta.setdefault("annotations", {})
    annotations[RESTORED_FROM] = backup_id
    spec = out.get("spec") or {}
    if kind == "Service":
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if not mapping.preserve_node_ports:
            for port in spec.get("ports") or []:
                port.pop("nodePort", None)
    elif kind == "PersistentVolumeClaim":
        _claim_spec(spec, mapping)
        if spec.get("volumeName") not in static_volumes:
            spec.pop("volumeName", None)  # dynamically provisioned: the target provisions a volume of its own
        for key in CLAIM_BIND_ANNOTATIONS:
            annotations.pop(key, None)
    elif kind == "PersistentVolume":
        claim = spec.get("claimRef") or {}
        for key in ("uid", "resourceVersion"):
            claim.pop(key, None)
        if spec.get("storageClassName"):
            spec["storageClassName"] = mapping.storage_class(spec["storageClassName"])
        for key in CLAIM_BIND_ANNOTATIONS:
            annotations.pop(key, None)
    elif kind == "Pod":
        spec.pop("nodeName", None)
    elif kind == "Job":
        # The controller labels the job and its template with its own uid; the new one gets a new uid.
        for labels in (meta.get("labels") or {}, ((spec.get("template") or {}).get("metadata") or {}).get("labels")
                       or {}):
            for key in ("controller-uid", "batch.kubernetes.io/controller-uid"):
                labels.pop(key, None)
        if spec.get("manualSelector") is not True:
            spec.pop("selector", None)
    if kind == "StatefulSet":
        for template in spec.get("volumeClaimTemplates") or []:
            _claim_spec(template.setdefault("spec", {}), mapping)
    if kind in SCALABLE:
        annotations[records.ORIGINAL_REPLICAS] = str(int(spec.get("replicas", 1)))
        annotations[records.SCALED_DOWN_BY] = run_id
        annotations[records.SCALED_DOWN_AT] = now
        annotations[records.REASON] = "namespace restore: started once its volumes are restored"
        spec["replicas"] = 0
    return out
