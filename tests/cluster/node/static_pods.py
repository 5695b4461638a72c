"""The kubelet's static pods: every file of the node's etc/kubernetes/manifests/ is a pod it runs itself.

The kubelet's file source rules (pkg/kubelet/config/file.go): every regular file whose name does not start
with a dot holds one pod; a file that does not parse is skipped (and logged); removing a file stops its pod,
adding one starts it, changing one stops the old pod and starts the new one. The pod is named
NAME-NODE, its UID and `kubernetes.io/config.hash` come from the file's content, so the same file always
means the same pod. Static pods need no API server: they run while it is down.

- kube-apiserver, kube-controller-manager and kube-scheduler (by their `component` label, as kubeadm labels
  them) are parts of the server process: "running" one is reporting it to the Hub (control/hub.py), which
  serves the API, runs the controllers and the scheduler accordingly;
- every other static pod (etcd, or any pod a tool writes here) runs as a real pod: a PodWorker with the
  file's image, command, hostNetwork and hostPath volumes (any image kind: busybox, debian, etcd).

While the API serves, the kubelet keeps a mirror pod for each static pod (pkg/kubelet/pod/mirror_client.go:
same name, annotations config.mirror/config.hash/config.source=file, owned by the Node), recreates one that
is missing or stale, deletes mirror pods whose static pod is gone, and writes their status.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.cluster.api import defaults
from tests.cluster.control.hub import COMPONENTS, Hub
from tests.cluster.control.objects import set_condition
from tests.cluster.control.static_pods import mirror_pod
from tests.cluster.node.pod_worker import PodWorker, now

if TYPE_CHECKING:
    from tests.cluster.node.kubelet import Kubelet

Json = dict[str, Any]
log = logging.getLogger("tests.cluster.node")
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# The kubelet's file source (pkg/kubelet/config/file_linux.go) acts on an inotify event for the manifests directory
# within moments of a change; its periodic re-list (fileCheckFrequency, 20 s) only catches what events missed.
# A scan every 0.1 s (five stats a pass) stands in for the event: a moved manifest is acted on about as soon as a
# real kubelet does, where a half-second period added ~0.25 s to every step of an etcd restore.
FILE_CHECK_SECONDS = 0.1
MIRROR_POLL_SECONDS = 0.5  # the mirror pods wait on the API: no need to ask it more often
MIRROR_RESYNC_SECONDS = 5.0  # a full mirror pass even without a change (a deleted mirror pod comes back)
STOP_GRACE_CAP = 10.0  # etcd exits within a second of SIGTERM; nothing here needs kubeadm's 30 s


@dataclass
class StaticPod:
    file: str
    digest: str           # config.hash: what the file said
    manifest: Json        # the pod as read from the file (what the mirror pod copies)
    component: str | None  # an in-process component, or None for a pod with processes
    worker: PodWorker | None = None
    started_at: str = field(default_factory=now)
    dirty: bool = True

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.manifest["metadata"].get("namespace") or "default")


class StaticPods:
    def __init__(self, kubelet: Kubelet, hub: Hub | None) -> None:
        self.kubelet = kubelet
        self.hub = hub
        self.dir = kubelet.layout.manifests(kubelet.node_name)
        self.pods: dict[str, StaticPod] = {}  # by file name
        self._files_changed = True
        self._parsed: dict[str, tuple[tuple[int, int, int], str, Any]] = {}  # name → (stat key, digest, doc)
        self._last_mirror_pass = 0.0
        self._api_generation = -1

    # ------------------------------------------------------------------------------------------ files
    def _read(self) -> dict[str, tuple[str, Json]]:
        found: dict[str, tuple[str, Json]] = {}
        names: set[str] = set()
        if not self.dir.is_dir():
            return found
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                st = path.stat()
                key_stat = (st.st_ino, st.st_mtime_ns, st.st_size)
                cached = self._parsed.get(path.name)
                if cached is not None and cached[0] == key_stat:
                    digest, doc = cached[1], cached[2]  # unchanged: no read, parse or hash every scan
                else:
                    raw = path.read_bytes()
                    doc = yaml.safe_load(raw)
                    digest = hashlib.md5(self.kubelet.node_name.encode() + b"/" + path.name.encode() + b"/" + raw,
                                         usedforsecurity=False).hexdigest()
                    self._parsed[path.name] = (key_stat, digest, doc)
            except (OSError, yaml.YAMLError) as e:
                log.warning("node %s: static pod file %s: %s", self.kubelet.node_name, path.name, e)
                continue
            if not isinstance(doc, dict) or doc.get("kind") != "Pod" or not (doc.get("metadata") or {}).get("name"):
                log.warning("node %s: static pod file %s holds no pod", self.kubelet.node_name, path.name)
                continue
            key = (doc["metadata"].get("namespace") or "default", doc["metadata"]["name"])
            if f"{key}" in names:  # two files, one pod: the kubelet keeps the first
                continue
            names.add(f"{key}")
            found[path.name] = (digest, doc)
        return found

    async def sync_files(self) -> None:
        found = await asyncio.to_thread(self._read)
        for file, pod in list(self.pods.items()):
            if file not in found or found[file][0] != pod.digest:
                del self.pods[file]
                self._files_changed = True
                await self._stop(pod)
        for file, (digest, doc) in found.items():
            if file not in self.pods:
                self._files_changed = True
                pod = StaticPod(file, digest, doc, _component(doc))
                self.pods[file] = pod
                await self._start(pod)

    async def _start(self, pod: StaticPod) -> None:
        log.info("node %s: starting static pod %s (%s)", self.kubelet.node_name, pod.name, pod.file)
        if pod.component is not None:
            if self.hub is not None:
                self.hub.report(pod.component, self.kubelet.node_name, True)
            return
        pod.worker = self.kubelet.static_worker(self._runtime_pod(pod), changed=lambda: self._mark(pod))
        pod.worker.start()

    async def _stop(self, pod: StaticPod) -> None:
        log.info("node %s: stopping static pod %s (%s)", self.kubelet.node_name, pod.name, pod.file)
        if pod.component is not None:
            if self.hub is not None:
                self.hub.report(pod.component, self.kubelet.node_name, False)
            return
        if pod.worker is not None:
            grace = float((pod.manifest.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            await pod.worker.terminate(min(grace, STOP_GRACE_CAP))
            pod.worker.cleanup()

    async def stop_all(self) -> None:
        for file, pod in list(self.pods.items()):
            del self.pods[file]
            await self._stop(pod)

    def _runtime_pod(self, pod: StaticPod) -> Json:
        """The pod the worker runs: the file's pod with the kubelet's defaults, named NAME-NODE."""
        obj = copy.deepcopy(pod.manifest)
        node = self.kubelet.node_name
        meta = obj["metadata"]
        meta["name"] = f"{meta['name']}-{node}"
        meta["namespace"] = pod.namespace
        meta["uid"] = pod.digest
        spec = obj.setdefault("spec", {})
        spec["nodeName"] = node
        # No API objects for a static pod: no service account token, no API-backed volumes.
        spec["automountServiceAccountToken"] = False
        defaults.pod_spec(spec, in_template=True)
        obj.pop("status", None)
        return obj

    def _mark(self, pod: StaticPod) -> Any:
        async def changed() -> None:
            pod.dirty = True
        return changed()

    def worker_for(self, name: str, namespace: str) -> PodWorker | None:
        for pod in self.pods.values():
            if pod.worker is not None and pod.worker.pod["metadata"]["name"] == name \
                    and pod.namespace == namespace:
                return pod.worker
        return None

    # ---------------------------------------------------------------------------------------- mirrors
    def _mirror_pass_due(self) -> bool:
        gate = self.hub.api if self.hub is not None else None
        if gate is not None and not gate.is_open:
            return False
        generation = gate.generation if gate is not None else 0
        return (self._files_changed or generation != self._api_generation
                or any(p.dirty for p in self.pods.values())
                or time.monotonic() - self._last_mirror_pass > MIRROR_RESYNC_SECONDS)

    async def sync_mirrors(self) -> None:
        """Mirror pods and their status, while the API serves and something changed (or every few seconds);
        a failed pass is retried on the next one."""
        if not self._mirror_pass_due():
            return
        # A file change seen while this pass waits on the API must survive the pass: take the flag now.
        files_changed, self._files_changed = self._files_changed, False
        generation = self.hub.api.generation if self.hub is not None else 0
        if not await self._mirror_pass():
            self._files_changed = self._files_changed or files_changed
            return
        self._api_generation = generation
        self._last_mirror_pass = time.monotonic()

    async def _mirror_pass(self) -> bool:
        store = self.kubelet.store
        node_name = self.kubelet.node_name
        try:
            node = await store.get("nodes", None, node_name)
        except Exception:
            return False  # no API, or the Node is not registered (again) yet
        try:
            existing, _ = await store.list("pods", None, field_selector=f"spec.nodeName={node_name}")
        except Exception:
            return False
        mirrors = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in existing
                   if MIRROR_ANNOTATION in (p["metadata"].get("annotations") or {})}
        wanted: set[tuple[str, str]] = set()
        for pod in list(self.pods.values()):
            key = (pod.namespace, f"{pod.name}-{node_name}")
            wanted.add(key)
            try:
                await self._sync_mirror(pod, node, mirrors.get(key))
            except Exception as e:
                pod.dirty = True  # pushed again on the next pass
                if getattr(e, "code", None) not in (404, 409) and not isinstance(e, ConnectionError):
                    log.exception("node %s: mirror pod %s", node_name, key[1])
        for key in mirrors:
            if key not in wanted:  # an orphaned mirror pod: its static pod is gone
                with contextlib.suppress(Exception):
                    await store.delete("pods", key[0], key[1], grace_period_seconds=0)
        return True

    async def _sync_mirror(self, pod: StaticPod, node: Json, current: Json | None) -> None:
        store = self.kubelet.store
        want = mirror_pod(pod.manifest, node, config_hash=pod.digest)
        name = want["metadata"]["name"]
        if current is not None and ((current["metadata"].get("annotations") or {}).get(MIRROR_ANNOTATION)
                                    != pod.digest or current["metadata"].get("deletionTimestamp")):
            # A stale mirror pod, or one being deleted (the static pod is not): replaced (kubelet syncPod).
            await store.delete("pods", pod.namespace, name, grace_period_seconds=0)
            current = None
        if current is None:
            current = await store.create("pods", want)
            pod.dirty = True
        if not pod.dirty and (current.get("status") or {}).get("phase"):
            return
        pod.dirty = False

        def edit(o: Json) -> Json | None:
            old = o.get("status") or {}
            st = self._status(pod, old)
            if st == old:
                return None
            o["status"] = st
            return o

        await store.mutate("pods", pod.namespace, name, edit, subresource="status")

    def _status(self, pod: StaticPod, old: Json) -> Json:
        if pod.worker is not None:
            st = pod.worker.status(old)
            st.setdefault("qosClass", "Burstable")
            _scheduled(st)
            return st
        # An in-process component: running for as long as its manifest is there.
        st = {"conditions": [dict(c) for c in old.get("conditions") or []]}
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"):
            set_condition(st, kind, "True", "", "")
        _scheduled(st)
        container = pod.manifest["spec"]["containers"][0]
        cid = hashlib.sha256(f"{pod.digest}/{pod.started_at}".encode()).hexdigest()
        st.update({
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": old.get("startTime") or pod.started_at, "qosClass": "Burstable",
            "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "",
                "containerID": f"containerd://{cid}", "ready": True, "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": pod.started_at}}, "lastState": {}}],
        })
        return st


def _component(doc: Json) -> str | None:
    component = ((doc.get("metadata") or {}).get("labels") or {}).get("component")
    return component if component in COMPONENTS else None


def _scheduled(st: Json) -> None:
    set_condition(st, "PodScheduled", "True", "", "")
    for c in st["conditions"]:
        c["lastProbeTime"] = None
        for k in ("reason", "message"):
            if not c.get(k):
                c.pop(k, None)


async def run(static: StaticPods) -> None:
    """Two loops, as in the kubelet: the file source never waits on the API. Without etcd's quorum every
    mirror pod request waits for the API server's timeout, and etcd's own manifest must still be acted on."""
    mirrors = asyncio.create_task(_every_poll(static, static.sync_mirrors, MIRROR_POLL_SECONDS))
    try:
        await _every_poll(static, static.sync_files, FILE_CHECK_SECONDS)
    finally:
        mirrors.cancel()
        await asyncio.gather(mirrors, return_exceptions=True)


async def _every_poll(static: StaticPods, sync: Callable[[], Awaitable[None]], period: float) -> None:
    while True:
        try:
            await sync()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("node %s: static pods", static.kubelet.node_name)
        await asyncio.sleep(period)


def manifests_dir_of(kubelet: Kubelet) -> Path:
    return kubelet.layout.manifests(kubelet.node_name)
