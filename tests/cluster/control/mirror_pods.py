"""Keeps the mirror pods of each control-plane node's static pods (etcd, kube-apiserver).

In the loopback cluster the etcd members are processes started by `up`, not by a kubelet; this keeper
plays the kubelet's part for them: it creates kube-system/NAME-NODE from the node's manifests and reports
the pod Running and Ready while the member answers its health check, not Ready when it does not.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.base import Controller
from tests.cluster.control.etcd_members import Member, healthy
from tests.cluster.control.layout import Layout
from tests.cluster.control.objects import Json, now, set_condition
from tests.cluster.control.static_pods import mirror_pod, read_manifests


class MirrorPods(Controller):
    name = "kubelet"
    watches = ("nodes",)
    resync_seconds = 1.0

    def __init__(self, store: Any, layout: Layout, members: list[Member]) -> None:
        super().__init__(store, layout)
        self.members = {m.name: m for m in members}
        self._started: dict[str, str] = {}

    async def reconcile(self) -> None:
        for node_name, member in self.members.items():
            try:
                node = await self.store.get("nodes", None, node_name)
            except ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            up = await asyncio.to_thread(healthy, member, 1.0)
            for manifest in await asyncio.to_thread(read_manifests, self.layout, node_name):
                pod = mirror_pod(manifest, node)
                component = manifest["metadata"]["labels"].get("component")
                ready = up if component == "etcd" else True  # kube-apiserver is this process: serving
                await self._sync(pod, ready)

    async def _sync(self, pod: Json, ready: bool) -> None:
        ns, name = "kube-system", pod["metadata"]["name"]
        try:
            current = await self.store.get("pods", ns, name)
            if (current["metadata"].get("annotations") or {}).get("kubernetes.io/config.mirror") != \
                    pod["metadata"]["annotations"]["kubernetes.io/config.mirror"]:
                await self.store.delete("pods", ns, name, grace_period_seconds=0)
                current = await self.store.create("pods", pod)
        except ApiError as exc:
            if exc.code != 404:
                raise
            current = await self.store.create("pods", pod)
        key = current["metadata"]["uid"]
        if ready and key not in self._started:
            self._started[key] = now()
        started = self._started.get(key)
        if not ready:
            self._started.pop(key, None)

        def edit(o: Json) -> Json | None:
            old = o.get("status") or {}
            st: Json = {"conditions": [dict(c) for c in old.get("conditions") or []]}
            state = "True" if ready else "False"
            set_condition(st, "PodReadyToStartContainers", "True", "", "")
            set_condition(st, "Initialized", "True", "", "")
            set_condition(st, "Ready", state, "" if ready else "ContainersNotReady",
                          "" if ready else f"containers with unready status: [{_container(o)}]")
            set_condition(st, "ContainersReady", state, "" if ready else "ContainersNotReady",
                          "" if ready else f"containers with unready status: [{_container(o)}]")
            set_condition(st, "PodScheduled", "True", "", "")
            for c in st["conditions"]:
                c["lastProbeTime"] = None
                for k in ("reason", "message"):
                    if not c.get(k):
                        c.pop(k, None)
            container = o["spec"]["containers"][0]
            cid = hashlib.sha256(f"{o['metadata']['uid']}/{started}".encode()).hexdigest()
            st.update({
                "phase": "Running",
                "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": old.get("startTime") or now(),
                "qosClass": "Burstable",
                "containerStatuses": [{
                    "name": container["name"], "image": container["image"], "imageID": "",
                    "containerID": f"containerd://{cid}", "ready": ready, "started": ready,
                    "restartCount": int(((old.get("containerStatuses") or [{}])[0]).get("restartCount", 0))
                    + (1 if ready and not _was_ready(old) and old.get("containerStatuses") else 0),
                    "state": {"running": {"startedAt": started}} if ready else
                    {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": None,
                                    "finishedAt": now()}},
                }],
            })
            if _comparable(st) == _comparable(old):
                return None
            o["status"] = st
            return o

        await self.store.mutate("pods", ns, name, edit, subresource="status")


def _container(pod: Json) -> str:
    return str(pod["spec"]["containers"][0]["name"])


def _was_ready(status: Json) -> bool:
    return any(c.get("ready") for c in status.get("containerStatuses") or [])


def _comparable(status: Json) -> Any:
    s = {k: v for k, v in status.items() if k != "conditions"}
    cs = [{k: v for k, v in c.items() if k != "state"} for c in s.get("containerStatuses") or []]
    conds = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
    return {**{k: v for k, v in s.items() if k != "containerStatuses"}, "cs": cs, "conditions": conds,
            "running": [bool((c.get("state") or {}).get("running")) for c in s.get("containerStatuses") or []]}
