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


def get_claim(kube: Kube, namespace: str, name: str) -> Claim:
    """The bound claim, or an error that says which of namespace or claim is missing, or why it waits."""
    # The workloads layer's lookup also copes with users who may not read Namespace objects.
    obj = require_claim(kube, namespace, name)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase != "Bound" or not spec.get("volumeName"):
        raise DrError(
            f'persistentvolumeclaim "{name}" in namespace {namespace} is {phase or "not bound"}: '
            "it has no volume yet, so there is nothing to back up or restore into",
            hint=f"See why with `kubectl describe pvc -n {namespace} {name}`.",
        )
    modes = tuple(status.get("accessModes") or spec.get("accessModes") or ())
    return Claim(
        namespace=namespace,
        name=name,
        volume=str(spec["volumeName"]),
        storage_class=spec.get("storageClassName"),
        capacity=(status.get("capacity") or {}).get("storage"),
        access_modes=modes,
        uid=str((obj.get("metadata") or {}).get("uid", "")),
        labels=dict((obj.get("metadata") or {}).get("labels") or {}),
    )


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
