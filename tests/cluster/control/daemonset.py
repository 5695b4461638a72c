"""DaemonSet controller (simple): one pod per eligible node, placed by node affinity on the node's name
as the real controller does, so the scheduler binds it."""

from __future__ import annotations

from tests.cluster.control.adoption import claim
from tests.cluster.control.base import Controller
from tests.cluster.control.objects import (
    Json,
    matches_selector,
    pod_active,
    pod_from_template,
    pod_ready,
    random_suffix,
    template_hash,
)
from tests.cluster.control.scheduling import tolerates_all

# The tolerations the real controller adds to every daemon pod (pkg/controller/daemon/util).
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def node_of(pod: Json) -> str | None:
    if pod.get("spec", {}).get("nodeName"):
        return str(pod["spec"]["nodeName"])
    terms = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("values"):
                return str(f["values"][0])
    return None


class DaemonSetController(Controller):
    name = "daemonset-controller"
    watches = ("daemonsets.apps", "pods", "nodes")

    async def reconcile(self) -> None:
        sets, _ = await self.store.list("daemonsets.apps")
        if not sets:
            return
        pods, _ = await self.store.list("pods")
        nodes, _ = await self.store.list("nodes")
        for ds in sets:
            if not ds["metadata"].get("deletionTimestamp"):
                # getDaemonPods: orphan pods the selector matches are adopted, relabelled ones released.
                candidates = [p for p in pods if p["metadata"].get("namespace") == ds["metadata"]["namespace"]]
                selector = ds["spec"].get("selector")
                mine = await claim(self.store, "pods", ds, candidates,
                                   lambda p, s=selector: matches_selector(p["metadata"].get("labels"), s),
                                   "daemonsets.apps")
                await self.sync(ds, mine, nodes)

    async def sync(self, ds: Json, pods: list[Json], nodes: list[Json]) -> None:
        ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        template = ds["spec"]["template"]
        tolerations = [*(template["spec"].get("tolerations") or []), *DAEMON_TOLERATIONS]
        selector = template["spec"].get("nodeSelector") or {}
        eligible = [n["metadata"]["name"] for n in nodes
                    if matches_selector(n["metadata"].get("labels"), {"matchLabels": selector})
                    and tolerates_all(n.get("spec", {}).get("taints") or [], tolerations, ("NoSchedule",
                                                                                             "NoExecute"))]
        active = [p for p in pods if pod_active(p)]
        placed = {node_of(p): p for p in active}
        h = template_hash(template)
        for node in eligible:
            if node in placed:
                continue
            generation = str(ds["metadata"].get("generation", 1))
            pod = pod_from_template(ds, template, f"{name}-{random_suffix()}", {
                "controller-revision-hash": h, "pod-template-generation": generation})
            pod["spec"]["tolerations"] = tolerations
            pod["spec"].setdefault("affinity", {})["nodeAffinity"] = {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}
            created = await self.store.create("pods", pod)
            placed[node] = created
        misscheduled = 0
        for node, pod in list(placed.items()):
            if node not in eligible:
                misscheduled += 1
                await self.store.delete("pods", ns, pod["metadata"]["name"])
        scheduled = [p for n, p in placed.items() if n in eligible]
        ready = sum(1 for p in scheduled if pod_ready(p))
        status: Json = {
            "currentNumberScheduled": len(scheduled),
            "desiredNumberScheduled": len(eligible),
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": len(eligible) - ready,
            "updatedNumberScheduled": len(scheduled),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        status = {k: v for k, v in status.items() if v or k in (
            "currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady")}

        def edit(o: Json) -> Json | None:
            if o.get("status") == status:
                return None
            o["status"] = status
            return o

        await self.store.mutate("daemonsets.apps", ns, name, edit, subresource="status")
