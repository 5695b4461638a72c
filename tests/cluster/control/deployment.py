"""Deployment controller: one ReplicaSet per pod template (named NAME-HASH), rolled over as kubectl
rollout status expects (pkg/controller/deployment, simplified: no pause, no progress deadline)."""

from __future__ import annotations

import copy

from tests.cluster.control.adoption import claim
from tests.cluster.control.base import Controller
from tests.cluster.control.objects import (
    Json,
    by_namespace,
    controller_ref,
    matches_selector,
    scaled_int_or_percent,
    set_condition,
    template_hash,
)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX = "deployment.kubernetes.io/max-replicas"


def _without_hash(template: Json) -> Json:
    t = copy.deepcopy(template)
    (t.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    return t


def _replicas(obj: Json) -> int:
    value = obj["spec"].get("replicas")
    return 1 if value is None else int(value)


class DeploymentController(Controller):
    name = "deployment-controller"
    watches = ("deployments.apps", "replicasets.apps")

    async def reconcile(self) -> None:
        deployments, _ = await self.store.list("deployments.apps")
        sets, _ = await self.store.list("replicasets.apps")
        sets_in = by_namespace(sets)
        for d in deployments:
            if d["metadata"].get("deletionTimestamp"):
                continue
            # getReplicaSetsForDeployment: orphan ReplicaSets the selector matches are adopted, owned ones
            # whose labels stopped matching are released.
            selector = d["spec"].get("selector")
            mine = await claim(self.store, "replicasets.apps", d, sets_in.get(d["metadata"]["namespace"], []),
                               lambda rs, s=selector: matches_selector(rs["metadata"].get("labels"), s),
                               "deployments.apps")
            await self.sync(d, mine)

    async def sync(self, d: Json, sets: list[Json]) -> None:
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        template = d["spec"]["template"]
        new_rs = next((rs for rs in sets if _without_hash(rs["spec"]["template"]) == _without_hash(template)),
                      None)
        old = [rs for rs in sets if rs is not new_rs]
        want = _replicas(d)
        revisions = [int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")) for rs in sets]
        strategy = d["spec"].get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        ru = strategy.get("rollingUpdate") or {}
        surge = scaled_int_or_percent(ru.get("maxSurge"), want, round_up=True, default="25%")
        surge = surge if rolling else 0
        unavailable = scaled_int_or_percent(ru.get("maxUnavailable"), want, round_up=False, default="25%")
        if rolling and surge == 0 and unavailable == 0:
            unavailable = 1  # validation forbids both zero; the controller behaves as if 1

        if new_rs is None:
            h = template_hash(template, int((d.get("status") or {}).get("collisionCount", 0)))
            tmpl = copy.deepcopy(template)
            tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            selector = copy.deepcopy(d["spec"]["selector"])
            selector.setdefault("matchLabels", {})[HASH_LABEL] = h
            old_total = sum(_replicas(rs) for rs in old)
            first = want if not old or not rolling else 0
            if rolling and old:
                first = max(0, min(want, want + surge - old_total))
            new_rs = await self.store.create("replicasets.apps", {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{h}", "namespace": ns,
                    "labels": dict(tmpl["metadata"]["labels"]),
                    "annotations": {DESIRED: str(want), MAX: str(want + surge),
                                    REVISION: str(max(revisions, default=0) + 1)},
                    "ownerReferences": [controller_ref(d)],
                },
                "spec": {"replicas": first, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                         "selector": selector, "template": tmpl},
            })
            await self.store.record_event(d, "Normal", "ScalingReplicaSet",
                                          f"Scaled up replica set {name}-{h} from 0 to {first}", self.name)
        assert new_rs is not None
        new_name = new_rs["metadata"]["name"]

        if not rolling:  # Recreate: old pods all gone before new ones start
            for rs in old:
                await self._scale(d, rs, 0)
            if all(int((rs.get("status") or {}).get("replicas", 0)) == 0 for rs in old):
                await self._scale(d, new_rs, want)
        else:
            old_total = sum(_replicas(rs) for rs in old)
            target_new = min(want, max(_replicas(new_rs), want + surge - old_total))
            if _replicas(new_rs) > want:
                target_new = want
            await self._scale(d, new_rs, target_new)
            available = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in sets)
            removable = available - (want - unavailable)
            # Old replicas that are not available can always go: they serve nothing.
            for rs in sorted(old, key=lambda r: r["metadata"].get("creationTimestamp", "")):
                cur = _replicas(rs)
                if cur == 0:
                    continue
                unavail_old = cur - int((rs.get("status") or {}).get("availableReplicas", 0))
                cut = min(cur, max(0, removable) + max(0, unavail_old))
                if cut:
                    await self._scale(d, rs, cur - cut)
                    removable -= max(0, cut - max(0, unavail_old))

        sets_now = [await self.store.get("replicasets.apps", ns, rs["metadata"]["name"])
                    for rs in [*old, new_rs]]
        await self._status(d, sets_now, new_name, want, unavailable)

    async def _scale(self, d: Json, rs: Json, replicas: int) -> None:
        cur = _replicas(rs)
        if cur == replicas:
            return

        def edit(o: Json) -> Json | None:
            if o["spec"].get("replicas") == replicas:
                return None
            o["spec"]["replicas"] = replicas
            o["metadata"].setdefault("annotations", {})[DESIRED] = str(_replicas(d))
            return o

        rs.update(await self.store.mutate("replicasets.apps", rs["metadata"]["namespace"],
                                          rs["metadata"]["name"], edit))
        verb = "up" if replicas > cur else "down"
        await self.store.record_event(
            d, "Normal", "ScalingReplicaSet",
            f"Scaled {verb} replica set {rs['metadata']['name']} from {cur} to {replicas}", self.name)

    async def _status(self, d: Json, sets: list[Json], new_name: str, want: int,
                      max_unavailable: int) -> None:
        def count(rs: Json, key: str) -> int:
            return int((rs.get("status") or {}).get(key, 0))

        new = next(rs for rs in sets if rs["metadata"]["name"] == new_name)
        replicas = sum(count(rs, "replicas") for rs in sets)
        available = sum(count(rs, "availableReplicas") for rs in sets)
        status: Json = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": count(new, "replicas"),
            "readyReplicas": sum(count(rs, "readyReplicas") for rs in sets),
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas - available),
        }
        complete = (count(new, "replicas") == want and count(new, "availableReplicas") == want
                    and replicas == want)
        revision = (new["metadata"].get("annotations") or {}).get(REVISION, "1")

        def edit(o: Json) -> Json | None:
            old = o.get("status") or {}
            st: Json = {k: v for k, v in status.items() if v or k in ("observedGeneration", "replicas")}
            st["conditions"] = copy.deepcopy(old.get("conditions") or [])
            if available >= want - max_unavailable:
                set_condition(st, "Available", "True", "MinimumReplicasAvailable",
                              "Deployment has minimum availability.", with_update_time=True)
            else:
                set_condition(st, "Available", "False", "MinimumReplicasUnavailable",
                              "Deployment does not have minimum availability.", with_update_time=True)
            if complete:
                set_condition(st, "Progressing", "True", "NewReplicaSetAvailable",
                              f'ReplicaSet "{new_name}" has successfully progressed.', with_update_time=True)
            else:
                set_condition(st, "Progressing", "True", "ReplicaSetUpdated",
                              f'ReplicaSet "{new_name}" is progressing.', with_update_time=True)
            # Conditions keep a stable order (Available first, as real ones usually are).
            st["conditions"].sort(key=lambda c: c["type"] != "Available")
            if "collisionCount" in old:
                st["collisionCount"] = old["collisionCount"]
            if _same(st, old):
                return None
            o["status"] = st
            return o

        await self.store.mutate("deployments.apps", d["metadata"]["namespace"], d["metadata"]["name"], edit,
                                subresource="status")
        if (d["metadata"].get("annotations") or {}).get(REVISION) != revision:
            def annotate(o: Json) -> Json:
                o["metadata"].setdefault("annotations", {})[REVISION] = revision
                return o
            await self.store.mutate("deployments.apps", d["metadata"]["namespace"], d["metadata"]["name"],
                                    annotate)


def _same(new: Json, old: Json) -> bool:
    def strip(s: Json) -> Json:
        s = copy.deepcopy(s)
        for c in s.get("conditions") or []:
            c.pop("lastUpdateTime", None)
            c.pop("lastTransitionTime", None)
        return s
    return strip(new) == strip(old)
