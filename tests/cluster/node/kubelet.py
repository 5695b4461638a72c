"""The kubelet of one loopback node: Node object, pods bound to the node, their status.

``Kubelet(store, layout, node_name, images=…).run()`` registers the node (without touching the labels
and taints the control plane gives it), refreshes its heartbeat, watches the pods with
``spec.nodeName`` = the node and runs each through a PodWorker. Mirror pods (annotation
``kubernetes.io/config.mirror``) belong to the control plane's static pods and are left alone.

After a server restart the processes of earlier pods are gone: pods that were not finished start
again (restartCount + 1) under restartPolicy Always/OnFailure; under Never their containers are
reported terminated with the kubelet's ContainerStatusUnknown text and the pod fails.

The kubelet talks to the API through a gate (api/gated.py): while no API server runs, its pods keep
running (nobody hears of their status) and its static pods (node/static_pods.py) run without any API.
Each time the API is reachable again it relists: the Node is registered again if the API lost it, pods
the API no longer has are killed (an etcd restore rolled them back), the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import platform
from pathlib import Path
from typing import Any

from tests.cluster.api.gated import ApiUnavailable
from tests.cluster.control.hub import Hub
from tests.cluster.control.layout import Layout
from tests.cluster.control.nodes import node_object
from tests.cluster.node import static_pods
from tests.cluster.node.images import ImageStore
from tests.cluster.node.pod_worker import PodWorker, now
from tests.cluster.node.volumes import TokenSource

Json = dict[str, Any]
log = logging.getLogger("tests.cluster.node")
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
KUBELET_VERSION = "v1.36.0"
_TERMINAL = ("Succeeded", "Failed")
_shutdown_lock: asyncio.Lock | None = None


def _static_shutdown_lock() -> asyncio.Lock:
    global _shutdown_lock
    if _shutdown_lock is None:
        _shutdown_lock = asyncio.Lock()
    return _shutdown_lock


class Kubelet:
    def __init__(self, store: Any, layout: Layout, node_name: str, *, images: ImageStore | None = None,
                 token_source: TokenSource | None = None, node_index: int | None = None,
                 backoff_base: float = 10.0, heartbeat_seconds: float = 10.0, hub: Hub | None = None,
                 control_plane: bool = False) -> None:
        self.store = store
        self.layout = layout
        self.node_name = node_name
        self.images = images or ImageStore(layout.images)
        self.token_source = token_source
        self.node_index = node_index if node_index is not None else (
            int(hashlib.sha256(node_name.encode()).hexdigest(), 16) % 250) + 1
        self.backoff_base = backoff_base
        self.heartbeat_seconds = heartbeat_seconds
        self.workers: dict[str, PodWorker] = {}
        self._deleting: set[str] = set()
        self._push_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.control_plane = control_plane
        self.static = static_pods.StaticPods(self, hub)
        self._restart = asyncio.Event()
        self._announced = False

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------ node
    async def run(self) -> None:
        """The kubelet process, started again by `restart` as often as asked; its end stops every pod."""
        try:
            while True:
                await self._run_once()
        finally:
            await self.stop()

    async def _run_once(self) -> None:
        """One kubelet process: its loops run until the watch fails for good or a restart is asked for. The
        pods are the container runtime's and outlive it; the next one finds them, as a real kubelet does."""
        self._restart = asyncio.Event()
        self._announced = False
        loops = [asyncio.create_task(static_pods.run(self.static)), asyncio.create_task(self._heartbeat()),
                 asyncio.create_task(self._watch_pods())]
        restart = asyncio.create_task(self._restart.wait())
        try:
            done, _ = await asyncio.wait([loops[2], restart], return_when=asyncio.FIRST_COMPLETED)
            if loops[2] in done:
                loops[2].result()
        finally:
            for t in (*loops, restart):
                t.cancel()
            await asyncio.gather(*loops, restart, return_exceptions=True)
        log.info("node %s: kubelet restarting", self.node_name)

    async def restart(self) -> None:
        """`systemctl restart kubelet`: returns once the new kubelet's loops run."""
        self._restart.set()
        while self._restart.is_set():
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """End every pod process of this node (server shutdown): API pods at once, static pods (etcd)
        with a short grace period."""
        for worker in list(self.workers.values()):
            await worker.terminate(0)
        self.workers.clear()
        # The nodes' static pods one node after the other: an etcd leader stopped while its peers stop too
        # waits seconds for a leadership transfer that cannot finish; in turn, each hands over at once.
        async with _static_shutdown_lock():
            await self.static.stop_all()

    def _node_status(self, previous: Json) -> Json:
        ts = now()
        old = {c["type"]: c for c in previous.get("conditions") or []}

        def cond(kind: str, status: str, reason: str, message: str) -> Json:
            prior = old.get(kind)
            since = prior["lastTransitionTime"] if prior and prior.get("status") == status else ts
            return {"type": kind, "status": status, "lastHeartbeatTime": ts, "lastTransitionTime": since,
                    "reason": reason, "message": message}

        mem_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
                    "ephemeral-storage": "104857600Ki", "hugepages-2Mi": "0"}
        uname = platform.uname()
        return {
            "capacity": capacity, "allocatable": dict(capacity),
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                     "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hashlib.md5(self.node_name.encode()).hexdigest(),
                "systemUUID": hashlib.md5(b"uuid" + self.node_name.encode()).hexdigest(),
                "bootID": hashlib.md5(b"boot" + self.node_name.encode()).hexdigest(),
                "kernelVersion": uname.release, "osImage": "Loopback cluster node",
                "containerRuntimeVersion": "bwrap://0.8.0", "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    async def register(self) -> None:
        """Register the Node unless the API has it (again after a restore that lost it), as kubeadm's
        kubelet registers: its labels, and the control-plane taint on a control-plane node."""
        try:
            await self.store.get("nodes", None, self.node_name)
        except ApiUnavailable:
            raise
        except Exception as e:
            if getattr(e, "code", None) != 404:
                raise
            node = node_object(self.node_name, control_plane=self.control_plane)
            node["spec"].update({"podCIDR": f"10.244.{self.node_index}.0/24",
                                 "podCIDRs": [f"10.244.{self.node_index}.0/24"]})
            try:
                await self.store.create("nodes", node)
            except Exception as exc:  # the control plane may have created it meanwhile
                if getattr(exc, "code", None) != 409:
                    raise
        await self._refresh_node()

    async def _announce(self) -> None:
        """pkg/kubelet: every kubelet start records a Normal "Starting" event on its Node."""
        self._announced = True
        node = await self.store.get("nodes", None, self.node_name)

        async def post() -> None:
            with contextlib.suppress(Exception):  # fire and forget, as the kubelet's event recorder
                await self.store.record_event(node, "Normal", "Starting", "Starting kubelet.", "kubelet")

        self._background(post())

    async def _refresh_node(self) -> None:
        def fn(node: Json) -> Json:
            node["status"] = {**(node.get("status") or {}), **self._node_status(node.get("status") or {})}
            return node
        await self.store.mutate("nodes", None, self.node_name, fn, subresource="status")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._refresh_node()
            except ApiUnavailable:
                pass
            except Exception as e:
                log.info("node %s: heartbeat failed: %s", self.node_name, e)

    # ------------------------------------------------------------------------------------------- pods
    async def _watch_pods(self) -> None:
        """List and watch the node's pods; every new list (first start, API back, watch expired) is a relist."""
        selector = f"spec.nodeName={self.node_name}"
        while True:
            try:
                await self.register()
                if not self._announced:
                    await self._announce()
                items, revision = await self.store.list("pods", None, field_selector=selector)
                log.info("node %s: relist at revision %s: %d pods listed, %d running here", self.node_name,
                         revision, len(items), len(self.workers))
                await self._relist(items)
                async for kind, pod in self.store.watch("pods", None, resource_version=revision,
                                                        field_selector=selector):
                    await self._handle(kind, pod)
            except asyncio.CancelledError:
                raise
            except ApiUnavailable:
                await asyncio.sleep(0.5)
            except Exception as e:
                log.info("node %s: pod list/watch ended (%s); relisting", self.node_name, e)
                await asyncio.sleep(1)

    async def _relist(self, items: list[Json]) -> None:
        """HandlePodRemoves for what the API no longer has, then every listed pod as an update."""
        listed = {p["metadata"].get("uid") for p in items}
        for uid, worker in list(self.workers.items()):
            if uid in listed or uid in self._deleting:
                continue
            log.info("node %s: pod %s is gone from the API; killing it", self.node_name,
                     worker.pod["metadata"]["name"])
            self._deleting.add(uid)
            grace = float((worker.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            self._background(self._finish(worker, min(grace, 30.0), delete=False))
        for pod in items:
            had = pod["metadata"].get("uid") in self.workers
            await self._handle("ADDED", pod)
            worker = self.workers.get(pod["metadata"].get("uid", ""))
            if had and worker is not None:
                self._background(self._push(worker))  # what happened while nobody could be told

    async def _handle(self, kind: str, pod: Json) -> None:
        meta = pod["metadata"]
        uid = meta.get("uid", "")
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            return
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None and uid not in self._deleting:
                self._deleting.add(uid)
                self._background(self._finish(worker, 0, delete=False))
            return
        if worker is not None:
            worker.pod = pod
        phase = (pod.get("status") or {}).get("phase")
        if worker is None:
            if phase in _TERMINAL:
                if meta.get("deletionTimestamp"):
                    await self._final_delete(pod)
                return
            worker = self._new_worker(pod)
            self.workers[uid] = worker
            if (pod.get("status") or {}).get("containerStatuses") and not meta.get("deletionTimestamp"):
                self._recover(worker, pod)
            if worker.phase not in _TERMINAL and not meta.get("deletionTimestamp"):
                worker.start()
                self._background(self._active_deadline(uid))
            else:
                await self._push(worker)
        if meta.get("deletionTimestamp") and uid not in self._deleting:
            self._deleting.add(uid)
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._background(self._finish(worker, float(grace), delete=True))

    async def _active_deadline(self, uid: str) -> None:
        """pkg/kubelet/active_deadline.go: a pod active on the node longer than spec.activeDeadlineSeconds
        (counted from status.startTime; the field may be lowered while the pod runs) is failed and killed."""
        while True:
            worker = self.workers.get(uid)
            if worker is None or worker.phase in _TERMINAL or uid in self._deleting:
                return
            deadline = (worker.pod.get("spec") or {}).get("activeDeadlineSeconds")
            if deadline is not None:
                started = dt.datetime.strptime(worker.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=dt.timezone.utc)
                if dt.datetime.now(dt.timezone.utc) - started >= dt.timedelta(seconds=int(deadline)):
                    message = "Pod was active on the node longer than the specified deadline"
                    await self._event(uid, "Normal", "DeadlineExceeded", message)
                    grace = (worker.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                    await worker.fail("DeadlineExceeded", message, float(grace))
                    return
            await asyncio.sleep(0.5)

    def static_worker(self, pod: Json, *, changed: Any) -> PodWorker:
        """A worker for a static pod: no API objects to read, events on the mirror pod while the API serves."""
        uid = pod["metadata"]["uid"]

        async def no_api(resource: str, namespace: str | None, name: str) -> Json:
            raise LookupError(f"static pods cannot reference API objects ({resource} {name})")

        async def no_blockers(_: Json) -> list[tuple[str, list[str]]]:
            return []

        async def post(type_: str, reason: str, message: str, component: str) -> None:
            with contextlib.suppress(Exception):
                mirror = await self.store.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                await self.store.record_event(mirror, type_, reason, message, component)

        async def event(type_: str, reason: str, message: str, component: str = "kubelet") -> None:
            # As the kubelet's event recorder: fire and forget. Without quorum each post waits for the API
            # server's timeout, and a static pod (etcd itself) must not wait for the API to start.
            self._background(post(type_, reason, message, component))

        return PodWorker(
            pod, pod_dir=self.layout.pods / f"static-{uid}", node_root=self.layout.node(self.node_name),
            images=self.images, get=no_api, event=event, changed=changed, attach_blockers=no_blockers,
            ca_file=None, token_source=None, pod_ip="127.0.0.1", backoff_base=min(self.backoff_base, 2.0))

    def _new_worker(self, pod: Json) -> PodWorker:
        meta = pod["metadata"]
        uid = meta.get("uid", "")
        status = pod.get("status") or {}
        worker = PodWorker(
            pod, pod_dir=self.layout.pods / uid, node_root=self.layout.node(self.node_name),
            images=self.images, get=self.store.get,
            event=lambda t, r, m, c="kubelet": self._event(uid, t, r, m, c),
            changed=lambda: self._push_uid(uid),
            attach_blockers=self._attach_blockers, ca_file=self.layout.pki / "ca.crt",
            token_source=self.token_source, pod_ip=status.get("podIP") or self._allocate_ip(),
            backoff_base=self.backoff_base)
        if status.get("startTime"):
            worker.start_time = status["startTime"]
        return worker

    def _recover(self, worker: PodWorker, pod: Json) -> None:
        """Carry restart counts over a server restart; under Never the lost containers fail the pod."""
        status = pod.get("status") or {}
        old = {c["name"]: c for c in [*(status.get("initContainerStatuses") or []),
                                       *(status.get("containerStatuses") or [])]}
        for record in [*worker.inits, *worker.mains]:
            prior = old.get(record.name)
            if not prior:
                continue
            record.restart_count = int(prior.get("restartCount", 0))
            was_running = "running" in (prior.get("state") or {})
            if was_running:
                lost = {"exitCode": 137, "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": prior["state"]["running"].get("startedAt"), "finishedAt": now()}
                record.last_state = {"terminated": lost}
                if worker.restart_policy == "Never":
                    record.state = {"terminated": lost}
                    worker.phase = "Failed"
                else:
                    record.restart_count += 1
            elif record.init and "terminated" in (prior.get("state") or {}) \
                    and prior["state"]["terminated"].get("exitCode") == 0:
                pass

    def _allocate_ip(self) -> str:
        used = {w.pod_ip for w in self.workers.values()}
        for host in range(2, 255):
            ip = f"10.244.{self.node_index}.{host}"
            if ip not in used:
                return ip
        return f"10.244.{self.node_index}.254"

    async def _attach_blockers(self, pod: Json) -> list[tuple[str, list[str]]]:
        """ReadWriteOnce claims whose volume is in use by a running pod on another node."""
        namespace = pod["metadata"].get("namespace", "default")
        claims = [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
                  if "persistentVolumeClaim" in v]
        out: list[tuple[str, list[str]]] = []
        if not claims:
            return out
        others, _ = await self.store.list("pods", namespace)
        for claim in claims:
            try:
                pvc = await self.store.get("persistentvolumeclaims", namespace, claim)
            except Exception:
                continue
            modes = (pvc.get("spec") or {}).get("accessModes") or []
            if "ReadWriteOnce" not in modes or "ReadWriteMany" in modes:
                continue
            users = []
            for other in others:
                ospec, ostatus = other.get("spec") or {}, other.get("status") or {}
                if other["metadata"].get("uid") == pod["metadata"].get("uid"):
                    continue
                if not ospec.get("nodeName") or ospec.get("nodeName") == self.node_name:
                    continue
                if ostatus.get("phase") in _TERMINAL:
                    continue
                # "Attached" = the other pod got past volume setup on its node (it has a sandbox).
                if not any(c.get("type") == "PodReadyToStartContainers" and c.get("status") == "True"
                           for c in ostatus.get("conditions") or []):
                    continue
                if any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim
                       for v in ospec.get("volumes") or []):
                    users.append(other["metadata"]["name"])
            if users:
                out.append(((pvc.get("spec") or {}).get("volumeName") or claim, users))
        return out

    async def _event(self, uid: str, type_: str, reason: str, message: str, component: str = "kubelet") -> None:
        worker = self.workers.get(uid)
        if worker is None:
            return
        with contextlib.suppress(Exception):
            await self.store.record_event(worker.pod, type_, reason, message, component)

    async def _push_uid(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None:
            await self._push(worker)

    async def _push(self, worker: PodWorker) -> None:
        meta = worker.pod["metadata"]
        lock = self._push_locks.setdefault(meta.get("uid", ""), asyncio.Lock())
        async with lock:
            def fn(pod: Json) -> Json | None:
                if pod["metadata"].get("uid") != meta.get("uid"):
                    return None
                new_status = worker.status(pod.get("status") or {})
                if new_status == pod.get("status"):
                    return None
                pod["status"] = new_status
                return pod
            try:
                await self.store.mutate("pods", meta.get("namespace"), meta["name"], fn, subresource="status")
            except ApiUnavailable:
                pass  # reported again after the relist
            except Exception as e:
                if getattr(e, "code", None) != 404:
                    log.exception("pod %s: status update failed", meta["name"])

    async def _finish(self, worker: PodWorker, grace: float, *, delete: bool) -> None:
        uid = worker.pod["metadata"].get("uid", "")
        try:
            await worker.terminate(grace)
            if delete:
                await self._push(worker)
                await self._final_delete(worker.pod)
        finally:
            worker.cleanup()
            self.workers.pop(uid, None)
            self._deleting.discard(uid)
            self._push_locks.pop(uid, None)

    async def _final_delete(self, pod: Json) -> None:
        meta = pod["metadata"]
        try:
            await self.store.delete("pods", meta.get("namespace"), meta["name"], grace_period_seconds=0)
        except Exception as e:
            if getattr(e, "code", None) != 404:
                log.exception("pod %s: final delete failed", meta["name"])

    # ------------------------------------------------------------------------------------ for streams
    def worker_for(self, pod: Json) -> PodWorker | None:
        meta = pod["metadata"]
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            return self.static.worker_for(meta["name"], meta.get("namespace", "default"))
        return self.workers.get(meta.get("uid", ""))


def since_time(seconds: int | None) -> dt.datetime | None:
    if seconds is None:
        return None
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)


def pod_dir(layout: Layout, uid: str) -> Path:
    return layout.pods / uid
