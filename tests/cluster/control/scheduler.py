"""default-scheduler: binds pods without spec.nodeName to a node that passes every filter.

Pods naming another scheduler, or already carrying nodeName, are left alone (as real). A pod that fits
nowhere gets PodScheduled=False/Unschedulable with the real FitError message and a FailedScheduling event.

Claims of a WaitForFirstConsumer class (the VolumeBinding plugin): an unbound one does not stop the pod;
once a node passes every filter, PreBind writes `volume.kubernetes.io/selected-node` on the claim and
waits for the provisioner to bind it, then the pod is bound (the PV's nodeAffinity keeps it there).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.cluster.control.base import Controller
from tests.cluster.control.layout import Layout
from tests.cluster.control.objects import Json, is_terminating, pod_active, set_condition
from tests.cluster.control.provisioner import SELECTED_NODE, waits_for_consumer
from tests.cluster.control.scheduling import Reason, filter_node, fit_error

SCHEDULER = "default-scheduler"
EVENT_REPEAT_SECONDS = 30.0


def claims_of(pod: Json) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")]


class Scheduler(Controller):
    name = SCHEDULER
    watches = ("pods", "nodes", "persistentvolumeclaims")
    resync_seconds = 2.0

    def __init__(self, store: Any, layout: Layout) -> None:
        super().__init__(store, layout)
        self._reported: dict[str, tuple[str, float]] = {}

    async def reconcile(self) -> None:
        pods, _ = await self.store.list("pods")
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName") and not is_terminating(p)
                   and (p["spec"].get("schedulerName") or SCHEDULER) == SCHEDULER
                   and (p.get("status") or {}).get("phase", "Pending") == "Pending"]
        if not pending:
            return
        nodes, _ = await self.store.list("nodes")
        claims, _ = await self.store.list("persistentvolumeclaims")
        pvs, _ = await self.store.list("persistentvolumes")
        classes_list, _ = await self.store.list("storageclasses.storage.k8s.io")
        classes = {c["metadata"]["name"]: c for c in classes_list}
        claim_index = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in claims}
        pv_index = {pv["metadata"]["name"]: pv for pv in pvs}
        load = Counter(p["spec"].get("nodeName") for p in pods if pod_active(p) and p["spec"].get("nodeName"))
        # Claims used by assigned pods, for ReadWriteOncePod (the scheduler's IsPVCUsedByPods).
        in_use = {(p["metadata"]["namespace"], c) for p in pods
                  if p["spec"].get("nodeName") and pod_active(p) for c in claims_of(p)}
        for pod in sorted(pending, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            ns = pod["metadata"]["namespace"]
            prefilter: str | None = None
            pod_pvs: list[Json] = []
            rwop = False
            delayed: list[Json] = []  # unbound WaitForFirstConsumer claims: bound in PreBind
            for name in claims_of(pod):
                claim = claim_index.get((ns, name))
                if claim is None:
                    prefilter = f'persistentvolumeclaim "{name}" not found'
                    break
                if is_terminating(claim):
                    prefilter = f'persistentvolumeclaim "{name}" is being deleted'
                    break
                volume = (claim.get("spec") or {}).get("volumeName")
                if waits_for_consumer(claim, classes):
                    delayed.append(claim)
                    continue
                if not volume or (claim.get("status") or {}).get("phase") != "Bound":
                    prefilter = "pod has unbound immediate PersistentVolumeClaims"
                    break
                if volume in pv_index:
                    pod_pvs.append(pv_index[volume])
                if "ReadWriteOncePod" in (claim["spec"].get("accessModes") or []) and (ns, name) in in_use:
                    rwop = True
            reasons: list[Reason] = []
            feasible: list[str] = []
            if prefilter is None:
                for node in nodes:
                    reason = filter_node(pod, node, pvs_of_pod=pod_pvs, rwop_conflict=rwop)
                    if reason is None:
                        feasible.append(node["metadata"]["name"])
                    else:
                        reasons.append(reason)
            if feasible and delayed:
                # PreBind: a node already chosen for a claim stays the choice; wait for the provisioner.
                chosen = [(c["metadata"].get("annotations") or {}).get(SELECTED_NODE) for c in delayed]
                target = next((n for n in chosen if n in feasible), min(feasible, key=lambda n: (load[n], n)))
                for claim in delayed:
                    await self._select_node(claim, target)
                continue
            if feasible:
                target = min(feasible, key=lambda n: (load[n], n))
                await self._bind(pod, target)
                load[target] += 1
                in_use.update((ns, c) for c in claims_of(pod))
            else:
                await self._unschedulable(pod, fit_error(len(nodes), reasons, prefilter))

    async def _select_node(self, claim: Json, node: str) -> None:
        def annotate(o: Json) -> Json | None:
            annotations = o["metadata"].setdefault("annotations", {})
            if annotations.get(SELECTED_NODE) == node:
                return None
            annotations[SELECTED_NODE] = node
            return o

        await self.store.mutate("persistentvolumeclaims", claim["metadata"]["namespace"],
                                claim["metadata"]["name"], annotate)

    async def _bind(self, pod: Json, node: str) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        # pods/binding: sets nodeName once and PodScheduled=True, refusing pods bound meanwhile.
        await self.store.bind(ns, name, node)
        self._reported.pop(pod["metadata"].get("uid", ""), None)
        await self.store.record_event(pod, "Normal", "Scheduled",
                                      f"Successfully assigned {ns}/{name} to {node}", SCHEDULER)

    async def _unschedulable(self, pod: Json, message: str) -> None:
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"].get("uid", "")
        last = self._reported.get(uid)
        if last and last[0] == message and time.monotonic() - last[1] < EVENT_REPEAT_SECONDS:
            return
        self._reported[uid] = (message, time.monotonic())

        def edit(o: Json) -> Json | None:
            st = o.setdefault("status", {})
            st.setdefault("phase", "Pending")
            set_condition(st, "PodScheduled", "False", "Unschedulable", message)
            for c in st["conditions"]:
                if c["type"] == "PodScheduled":
                    c["lastProbeTime"] = None
            return o

        await self.store.mutate("pods", ns, name, edit, subresource="status")
        await self.store.record_event(pod, "Warning", "FailedScheduling", message, SCHEDULER)
