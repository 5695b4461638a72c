"""default-scheduler: binds pods without spec.nodeName to a node that passes every filter.

Pods naming another scheduler, or already carrying nodeName, are left alone (as real). A pod that fits
nowhere gets PodScheduled=False/Unschedulable with the real FitError message and a FailedScheduling event.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.cluster.control.base import Controller
from tests.cluster.control.layout import Layout
from tests.cluster.control.objects import Json, is_terminating, pod_active, set_condition
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
            for name in claims_of(pod):
                claim = claim_index.get((ns, name))
                if claim is None:
                    prefilter = f'persistentvolumeclaim "{name}" not found'
                    break
                if is_terminating(claim):
                    prefilter = f'persistentvolumeclaim "{name}" is being deleted'
                    break
                volume = (claim.get("spec") or {}).get("volumeName")
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
            if feasible:
                target = min(feasible, key=lambda n: (load[n], n))
                await self._bind(pod, target)
                load[target] += 1
                in_use.update((ns, c) for c in claims_of(pod))
            else:
                await self._unschedulable(pod, fit_error(len(nodes), reasons, prefilter))

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
