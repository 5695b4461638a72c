"""The claim a command works on: found, bound, and described (for the manifest and for placement)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.workloads.consumers import require_claim

RWO = "ReadWriteOnce"
RWOP = "ReadWriteOncePod"


@dataclass(frozen=True)
class Claim:
    namespace: str
    name: str
    volume: str
    storage_class: str | None
    capacity: str | None
    access_modes: tuple[str, ...]
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    # Pending, waiting for its first consumer (WaitForFirstConsumer): no volume until a pod is scheduled.
    pending: bool = False

    @property
    def single_pod(self) -> bool:
        """ReadWriteOncePod: one pod at a time, so even a backup must stop the consumers."""
        return RWOP in self.access_modes

    @property
    def single_node(self) -> bool:
        """ReadWriteOnce (and not shared read-only): a second pod must run on the consumer's node."""
        return RWO in self.access_modes and not self.single_pod

    def describe(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "pvc": self.name,
            "volume": self.volume,
            "storageClass": self.storage_class,
            "capacity": self.capacity,
            "accessModes": list(self.access_modes),
        }


def get_claim(kube: Kube, namespace: str, name: str, *, allow_pending: bool = False) -> Claim:
    """The bound claim, or an error that says which of namespace or claim is missing, or why it waits.

    `allow_pending`: a claim of a WaitForFirstConsumer storage class that no pod has used yet (a new
    claim, the usual target of a disaster-recovery restore) is returned too: the rescue pod will be its
    first consumer, and the scheduler picks its node and binds it as it would for the app.
    """
    # The workloads layer's lookup also copes with users who may not read Namespace objects.
    obj = require_claim(kube, namespace, name)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = status.get("phase")
    pending = phase == "Pending" and not spec.get("volumeName")
    if pending and allow_pending:
        mode = binding_mode(kube, spec.get("storageClassName"))
        if mode not in ("WaitForFirstConsumer", None):
            pending = False  # an Immediate class that did not bind: nothing a pod can change
    elif phase != "Bound" or not spec.get("volumeName"):
        pending = False
    if not pending and (phase != "Bound" or not spec.get("volumeName")):
        what = "back up" if not allow_pending else "restore into"
        raise DrError(
            f'persistentvolumeclaim "{name}" in namespace {namespace} is {phase or "not bound"}: '
            f"it has no volume yet, so there is nothing to {what}",
            hint=f"See why with `kubectl describe pvc -n {namespace} {name}`.",
        )
    modes = tuple(status.get("accessModes") or spec.get("accessModes") or ())
    capacity = (status.get("capacity") or {}).get("storage") or ((spec.get("resources") or {}).get("requests")
                                                                 or {}).get("storage")
    return Claim(
        namespace=namespace,
        name=name,
        volume=str(spec.get("volumeName") or ""),
        storage_class=spec.get("storageClassName"),
        capacity=capacity,
        access_modes=modes,
        uid=str((obj.get("metadata") or {}).get("uid", "")),
        labels=dict((obj.get("metadata") or {}).get("labels") or {}),
        pending=pending,
    )


def binding_mode(kube: Kube, storage_class: str | None) -> str | None:
    """The class's volumeBindingMode; None when it cannot be told (no class named, or not readable)."""
    if not storage_class:
        return None
    try:
        obj: dict[str, Any] = kube.get(f"/apis/storage.k8s.io/v1/storageclasses/{storage_class}")
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise
    return str(obj.get("volumeBindingMode") or "Immediate")


def node_ready(kube: Kube, node: str) -> str | None:
    """None when the node is Ready (or we may not read nodes: the pod's start will tell), else why not."""
    try:
        obj: dict[str, Any] = kube.get(f"/api/v1/nodes/{node}")
    except ApiError as exc:
        if exc.status == 404:
            return f'node "{node}" does not exist'
        if exc.status == 403:
            return None
        raise
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return None
            return f"node {node} is not ready (Ready={cond.get('status')}: {cond.get('message') or cond.get('reason')})"
    return f"node {node} reports no Ready condition"


def require_nodes_ready(kube: Kube, claim: Claim, placed: dict[str, list[str]], action: str) -> None:
    """Refuse, before anything changes, when a node the job depends on is not ready.

    `placed` maps each node to what runs there (consumers whose pods must stop, or next to which the rescue
    pod must run). On a node that is not ready, pods neither stop nor start, and a ReadWriteOnce volume
    stays attached to it: waiting would only end in a timeout with the consumers scaled down.
    """
    for node in sorted(placed):
        problem = node_ready(kube, node)
        if problem:
            raise DrError(
                f"cannot {action} {claim.namespace}/{claim.name}: {problem}; "
                f"{', '.join(placed[node])} runs there and the volume is in use on that node",
                hint=(f"Pods on a node that is not ready can neither be stopped nor reached. Wait until "
                      f"`kubectl get node {node}` shows Ready, or, if the node is gone for good, delete its pods "
                      "(kubectl delete pod --force) so the volume can be used elsewhere, then run this again. "
                      "Nothing was changed."),
            )
