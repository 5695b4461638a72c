"""ReplicaSet controller: keeps spec.replicas active pods and reports their readiness."""

from __future__ import annotations

import datetime as dt

from tests.cluster.control.base import Controller
from tests.cluster.control.objects import (
    Json,
    owned_by,
    pod_active,
    pod_from_template,
    pod_ready,
    random_suffix,
)

POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def deletion_rank(pod: Json) -> tuple[int, int, int, float]:
    """controller.ActivePods ordering, simplified: unscheduled, then pending, then not ready, then newest."""
    status = pod.get("status") or {}
    return (
        1 if pod.get("spec", {}).get("nodeName") else 0,
        0 if status.get("phase") == "Pending" else 1,
        1 if pod_ready(pod) else 0,
        -_ts(pod),
    )


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    watches = ("replicasets.apps", "pods")

    async def reconcile(self) -> None:
        sets, _ = await self.store.list("replicasets.apps")
        pods, _ = await self.store.list("pods")
        for rs in sets:
            await self.sync(rs, owned_by(pods, rs))

    async def sync(self, rs: Json, pods: list[Json]) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            return
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        active = [p for p in pods if pod_active(p)]
        want = int(rs["spec"].get("replicas", 1))
        if len(active) < want:
            template = rs["spec"].get("template") or {}
            for _ in range(want - len(active)):
                pod = pod_from_template(rs, template, f"{name}-{random_suffix()}", {})
                created = await self.store.create("pods", pod)
                active.append(created)
                await self.store.record_event(rs, "Normal", "SuccessfulCreate",
                                              f"Created pod: {created['metadata']['name']}",
                                              self.name)
        elif len(active) > want:
            victims = sorted(active, key=deletion_rank)[: len(active) - want]
            for pod in victims:
                await self.store.delete("pods", ns, pod["metadata"]["name"])
                await self.store.record_event(rs, "Normal", "SuccessfulDelete",
                                              f"Deleted pod: {pod['metadata']['name']}", self.name)
                active.remove(pod)
        ready = sum(1 for p in active if pod_ready(p))
        tmpl_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        labeled = sum(1 for p in active
                      if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in tmpl_labels.items()))
        status: Json = {
            "replicas": len(active),
            "fullyLabeledReplicas": labeled,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        await self.store.mutate("replicasets.apps", ns, name, lambda o: _set_status(o, status),
                                subresource="status")


def _ts(pod: Json) -> float:
    raw = pod["metadata"].get("creationTimestamp")
    if not raw:
        return 0.0
    return dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def _set_status(obj: Json, status: Json) -> Json | None:
    # A real status omits zero counts (omitempty); `kubectl get rs` then shows 0 anyway.
    new = {k: v for k, v in status.items() if v or k == "replicas"}
    old = obj.get("status") or {}
    merged = {**{k: v for k, v in old.items() if k == "conditions"}, **new}
    if merged == old:
        return None
    obj["status"] = merged
    return obj
