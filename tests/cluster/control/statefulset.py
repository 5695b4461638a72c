"""StatefulSet controller: pods NAME-0..N-1 with stable PVCs TEMPLATE-NAME-ORDINAL, created in order
and removed in reverse order under OrderedReady (pkg/controller/statefulset, simplified)."""

from __future__ import annotations

import copy

from tests.cluster.control.adoption import claim
from tests.cluster.control.base import Controller
from tests.cluster.control.objects import (
    Json,
    by_namespace,
    controller_ref,
    matches_selector,
    owned_by,
    pod_from_template,
    pod_phase,
    pod_ready,
    template_hash,
)

REVISION_LABEL = "controller-revision-hash"


def ordinal(pod: Json, sts_name: str) -> int:
    suffix = pod["metadata"]["name"][len(sts_name) + 1:]
    return int(suffix) if suffix.isdigit() else -1


class StatefulSetController(Controller):
    name = "statefulset-controller"
    watches = ("statefulsets.apps", "pods")

    async def reconcile(self) -> None:
        sets, _ = await self.store.list("statefulsets.apps")
        pods, _ = await self.store.list("pods")
        pods_in = by_namespace(pods)
        for sts in sets:
            if sts["metadata"].get("deletionTimestamp"):
                continue
            # getPodsForStatefulSet: only the set's members (NAME-ORDINAL) are claimed, matched by selector.
            name, selector = sts["metadata"]["name"], sts["spec"].get("selector")
            members = [p for p in pods_in.get(sts["metadata"]["namespace"], []) if ordinal(p, name) >= 0
                       and p["metadata"]["name"] == f"{name}-{ordinal(p, name)}"]
            mine = await claim(self.store, "pods", sts, members,
                               lambda p, s=selector: matches_selector(p["metadata"].get("labels"), s),
                               "statefulsets.apps")
            await self.sync(sts, mine)

    async def _revision(self, sts: Json) -> str:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        revision = f"{name}-{template_hash(sts['spec']['template'])}"
        try:
            await self.store.get("controllerrevisions.apps", ns, revision)
        except Exception:
            revs, _ = await self.store.list("controllerrevisions.apps", ns)
            number = 1 + max((int(r.get("revision", 0)) for r in owned_by(revs, sts)), default=0)
            await self.store.create("controllerrevisions.apps", {
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": revision, "namespace": ns,
                             "labels": dict(sts["spec"]["selector"].get("matchLabels") or {}),
                             "ownerReferences": [controller_ref(sts)]},
                "data": {"spec": {"template": sts["spec"]["template"]}},
                "revision": number,
            })
        return revision

    async def _ensure_claims(self, sts: Json, index: int) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        for tmpl in sts["spec"].get("volumeClaimTemplates") or []:
            claim = f"{tmpl['metadata']['name']}-{name}-{index}"
            try:
                await self.store.get("persistentvolumeclaims", ns, claim)
                continue
            except Exception:
                pass
            labels = {**(tmpl["metadata"].get("labels") or {}),
                      **(sts["spec"]["selector"].get("matchLabels") or {})}
            await self.store.create("persistentvolumeclaims", {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": ns, "labels": labels,
                             **({"annotations": tmpl["metadata"]["annotations"]}
                                if tmpl["metadata"].get("annotations") else {})},
                "spec": copy.deepcopy(tmpl.get("spec") or {}),
            })
            await self.store.record_event(
                sts, "Normal", "SuccessfulCreate",
                f"create Claim {claim} Pod {name}-{index} in StatefulSet {name} success", self.name)

    def _pod(self, sts: Json, index: int, revision: str) -> Json:
        name = sts["metadata"]["name"]
        pod_name = f"{name}-{index}"
        pod = pod_from_template(sts, sts["spec"]["template"], pod_name, {
            REVISION_LABEL: revision,
            "statefulset.kubernetes.io/pod-name": pod_name,
            "apps.kubernetes.io/pod-index": str(index),
        })
        spec = pod["spec"]
        spec["hostname"] = pod_name
        if sts["spec"].get("serviceName"):
            spec["subdomain"] = sts["spec"]["serviceName"]
        claim_names = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []}
        volumes = [v for v in spec.get("volumes") or [] if v["name"] not in claim_names]
        for tmpl in sts["spec"].get("volumeClaimTemplates") or []:
            volumes.append({"name": tmpl["metadata"]["name"], "persistentVolumeClaim": {
                "claimName": f"{tmpl['metadata']['name']}-{name}-{index}"}})
        if volumes:
            spec["volumes"] = volumes
        return pod

    async def sync(self, sts: Json, pods: list[Json]) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        want = int(sts["spec"].get("replicas", 1) if sts["spec"].get("replicas") is not None else 1)
        parallel = sts["spec"].get("podManagementPolicy") == "Parallel"
        revision = await self._revision(sts)
        by_ordinal = {ordinal(p, name): p for p in pods}

        # Failed pods are replaced, as the real controller does.
        for i, pod in list(by_ordinal.items()):
            if pod_phase(pod) in ("Failed", "Succeeded") and not pod["metadata"].get("deletionTimestamp"):
                await self.store.delete("pods", ns, pod["metadata"]["name"])
                by_ordinal[i] = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "now"}}

        def healthy(i: int) -> bool:
            p = by_ordinal.get(i)
            return p is not None and pod_ready(p) and not p["metadata"].get("deletionTimestamp")

        for i in range(want):
            if i in by_ordinal:
                if not parallel and not healthy(i):
                    break
                continue
            await self._ensure_claims(sts, i)
            pod = await self.store.create("pods", self._pod(sts, i, revision))
            by_ordinal[i] = pod
            await self.store.record_event(
                sts, "Normal", "SuccessfulCreate",
                f"create Pod {name}-{i} in StatefulSet {name} successful", self.name)
            if not parallel:
                break

        # Scale down from the highest ordinal, one at a time when ordered and everything else is healthy.
        extra = sorted((i for i in by_ordinal if i >= want or i < 0), reverse=True)
        for i in extra:
            pod = by_ordinal[i]
            if pod["metadata"].get("deletionTimestamp"):
                if not parallel:
                    break
                continue
            if not parallel and not all(healthy(j) for j in range(want) if j in by_ordinal):
                break
            await self.store.delete("pods", ns, pod["metadata"]["name"])
            await self.store.record_event(
                sts, "Normal", "SuccessfulDelete",
                f"delete Pod {pod['metadata']['name']} in StatefulSet {name} successful", self.name)
            by_ordinal[i] = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "now"}}
            if not parallel:
                break

        # RollingUpdate: replace outdated pods from the highest ordinal once all are healthy.
        strategy = sts["spec"].get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
            in_range = [i for i in sorted(by_ordinal, reverse=True) if 0 <= i < want]
            if all(healthy(i) for i in in_range) and len(in_range) == want:
                for i in in_range:
                    pod = by_ordinal[i]
                    outdated = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) != revision
                    if i >= partition and outdated:
                        await self.store.delete("pods", ns, pod["metadata"]["name"])
                        break

        current = [p for i, p in by_ordinal.items() if i >= 0 and not p["metadata"].get("deletionTimestamp")]
        updated = [p for p in current if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision]
        ready = sum(1 for p in current if pod_ready(p))
        all_updated = len(updated) == len(current) == want
        status: Json = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(current),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": len(updated) if all_updated else len(current) - len(updated),
            "updatedReplicas": len(updated),
            "updateRevision": revision,
            "collisionCount": 0,
        }

        def edit(o: Json) -> Json | None:
            old = o.get("status") or {}
            current_revision = revision if all_updated else old.get("currentRevision", revision)
            st = {k: v for k, v in status.items()
                  if v or k in ("replicas", "observedGeneration", "availableReplicas", "collisionCount")}
            st["currentRevision"] = current_revision
            if st == old:
                return None
            o["status"] = st
            return o

        await self.store.mutate("statefulsets.apps", ns, name, edit, subresource="status")
