"""Walking ownerReferences from a pod (or a workload) up to the object a person would scale.

Pod → ReplicaSet → Deployment, Pod → Job → CronJob, Pod → StatefulSet/DaemonSet/ReplicationController.
The walk stops at the first controller we do not know (an operator's custom resource, an Argo
Rollout owning a ReplicaSet): whatever that controller is, it would undo a scale-down behind our back,
so the caller must refuse to stop such a workload rather than scale it and hope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kubectl_dr.workloads import kinds
from kubectl_dr.workloads.specs import Json, controller_ref

# Which controller kinds may own which kinds (as the built-in controllers create them).
PARENTS: dict[str, tuple[str, ...]] = {
    "Pod": ("ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"),
    "ReplicaSet": ("Deployment",),
    "Job": ("CronJob",),
}

# (kind, name) → the object, or None when it does not exist (any other failure is raised).
Fetch = Callable[[kinds.Kind, str], "Json | None"]


@dataclass(frozen=True)
class Top:
    """Where the walk ended: the topmost object of a kind we know, and what stopped the walk."""

    kind: kinds.Kind
    obj: Json
    # The controlling ownerReference we did not follow: a kind we do not manage, or an owner that is gone.
    manager: Json | None = None
    manager_missing: bool = False

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


def climb(kind: kinds.Kind, obj: Json, fetch: Fetch) -> Top:
    current_kind, current = kind, obj
    while True:
        ref = controller_ref(current)
        if ref is None:
            return Top(current_kind, current)
        parent_kind = kinds.known(str(ref.get("kind", "")), str(ref.get("apiVersion", "")))
        if parent_kind is None or parent_kind.kind not in PARENTS.get(current_kind.kind, ()):
            return Top(current_kind, current, manager=ref)
        parent = fetch(parent_kind, str(ref.get("name", "")))
        if parent is None or (parent["metadata"].get("uid") and ref.get("uid")
                              and parent["metadata"]["uid"] != ref["uid"]):
            # The owner was deleted (the garbage collector is removing its dependents) or replaced.
            return Top(current_kind, current, manager=ref, manager_missing=True)
        current_kind, current = parent_kind, parent


def describe_ref(ref: Json) -> str:
    return f"{ref.get('kind', '?')}/{ref.get('name', '?')} ({ref.get('apiVersion', '?')})"
