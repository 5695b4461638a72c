"""ReplicaSet controller: keeps spec.replicas active pods and reports their readiness."""

from __future__ import annotations

import datetime as dt

from tests.cluster.api.errors import ApiError
from tests.cluster.control.adoption import claim
from tests.cluster.control.base import Controller
from tests.cluster.control.objects import (
    Json,
    by_namespace,
    matches_selector,
    now,
    pod_active,
    pod_from_template,
    pod_ready,
)

POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
FAILURE = "ReplicaFailure"


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
        pods_in = by_namespace(pods)
        for rs in sets:
            if rs["metadata"].get("deletionTimestamp"):
                continue
            # Only active pods are claimed (FilterActivePods before claimPods): orphans that match the
            # selector are adopted, owned pods whose labels no longer match are released.
            candidates = [p for p in pods_in.get(rs["metadata"]["namespace"], []) if pod_active(p)]
            selector = rs["spec"].get("selector")
            mine = await claim(self.store, "pods", rs, candidates,
                               lambda p, s=selector: matches_selector(p["metadata"].get("labels"), s),
                               "replicasets.apps")
            await self.sync(rs, mine)

    async def sync(self, rs: Json, pods: list[Json]) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            return
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        active = [p for p in pods if pod_active(p)]
        want = int(rs["spec"].get("replicas", 1))
        failure: str | None = None
        if len(active) < want:
            template = rs["spec"].get("template") or {}
            for _ in range(want - len(active)):
                pod = pod_from_template(rs, template, "", {})
                del pod["metadata"]["name"]
                pod["metadata"]["generateName"] = f"{name}-"  # as the real controller: the server names it
                try:
                    created = await self.store.create("pods", pod)
                except ApiError as exc:
                    if exc.code >= 500:
                        raise
                    # A refusal (a missing service account, a quota, Pod Security): the Warning event and
                    # the ReplicaFailure condition the real controller reports; retried on the next pass.
                    failure = exc.message
                    await self.store.record_event(rs, "Warning", "FailedCreate", f"Error creating: {failure}",
                                                  self.name)
                    break
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
        await self.store.mutate("replicasets.apps", ns, name, lambda o: _set_status(o, status, failure),
                                subresource="status")


def _ts(pod: Json) -> float:
    raw = pod["metadata"].get("creationTimestamp")
    if not raw:
        return 0.0
    return dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def _set_status(obj: Json, status: Json, failure: str | None = None) -> Json | None:
    # A real status omits zero counts (omitempty); `kubectl get rs` then shows 0 anyway.
    new = {k: v for k, v in status.items() if v or k == "replicas"}
    old = obj.get("status") or {}
    conditions = [dict(c) for c in old.get("conditions") or [] if c.get("type") != FAILURE or failure]
    if failure:
        current = next((c for c in conditions if c.get("type") == FAILURE), None)
        if current is None or current.get("message") != failure:
            conditions = [c for c in conditions if c.get("type") != FAILURE]
            conditions.append({"type": FAILURE, "status": "True", "lastTransitionTime": now(),
                               "reason": "FailedCreate", "message": failure})
    merged = {**new, **({"conditions": conditions} if conditions else {})}
    if merged == old:
        return None
    obj["status"] = merged
    return obj
