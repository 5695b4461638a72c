"""Restart the kubelet of a node through the host's init system, from a pod, and see that it did restart.

After an etcd restore every kubelet may hold a cache of the old state; the kubernetes.io restore procedure
asks to restart them. Without ssh the way in is a privileged pod pinned to the node with the node's root
at /host: `chroot /host systemctl restart kubelet` (as `oc debug node/NAME -- chroot /host …` does). The
pod survives the restart (pods belong to the container runtime) and the new kubelet reports its exit. The pod
needs hostPID too: systemctl compares its root with PID 1's and, in what looks like a chroot, prints "Running
in chroot, ignoring request." and exits 0; with the host's PID 1 in view, the chroot is the host's own root.

A zero exit is not taken as proof. Every kubelet records a Normal "Starting" event ("Starting kubelet.") on its
Node when it starts; the restart counts once such an event is newer than the ones before (a new event, or a
higher count of the same one), and the Node is Ready again by a heartbeat of the new kubelet: the Ready
condition's lastHeartbeatTime no older than the event. A Ready read alone could be the old kubelet's, left in
the Node object. The new kubelet posts its status at once (pkg/kubelet/kubelet_node_status.go: its last report
time starts at zero, so the first sync reports whatever changed), then every 10 s; both times are the
kubelet's own clock.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubectl_dr import units
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.pods import pod_name
from kubectl_dr.nodes.hostpod import run_to_end
from kubectl_dr.pauses import pauses
from kubectl_dr.runs import Run
from kubectl_dr.units import count

COMMAND = ["chroot", "/host", "systemctl", "restart", "kubelet"]
PARALLEL = 8
POD_TIMEOUT = 180.0
CONFIRM_TIMEOUT = 120.0


@dataclass(frozen=True)
class Restarted:
    node: str
    result: str  # "restarted", "skipped" (a NotReady node: no kubelet runs there to hold a stale cache), "failed"
    detail: str

    @property
    def ok(self) -> bool:
        return self.result != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "result": self.result, "detail": self.detail}


def _starts(kube: Kube, node: str) -> set[tuple[str, int, str]]:
    """The node's "Starting kubelet." events as (name, count, last time): any change is a new start."""
    items = kube.get("/api/v1/namespaces/default/events",
                     fieldSelector=f"involvedObject.kind=Node,involvedObject.name={node},reason=Starting"
                     ).get("items") or []
    return {(str(e["metadata"]["name"]), int(e.get("count") or 1), str(e.get("lastTimestamp") or ""))
            for e in items if "kubelet" in str(e.get("message", "")).lower()}


def _ready(kube: Kube, node: str, started: datetime | None) -> bool:
    conditions = ((kube.get(f"/api/v1/nodes/{node}").get("status") or {}).get("conditions")) or []
    return any(ready_since(c, started) for c in conditions)


def ready_since(condition: dict[str, Any], started: datetime | None) -> bool:
    """A Ready=True condition whose heartbeat is no older than `started` (the new kubelet's Starting event;
    both to the second). Without either time, Ready alone decides."""
    if condition.get("type") != "Ready" or condition.get("status") != "True":
        return False
    beat = _when(condition.get("lastHeartbeatTime"))
    return started is None or beat is None or beat >= started


def _when(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _manifest(node: str, namespace: str, image: str, run: Run) -> dict[str, Any]:
    return pods.pod_manifest(
        pod_name("dr-kubelet-restart", node), namespace, purpose="kubelet-restart", node=node, deadline=600,
        labels=run.labels(), annotations=run.annotations(), hostPID=True, hostNetwork=True,
        volumes=[pods.host_path_volume("host", "/")],
        containers=[{"name": "restart", "image": image, "imagePullPolicy": "IfNotPresent", "command": COMMAND,
                     "securityContext": {"privileged": True},
                     "volumeMounts": [{"name": "host", "mountPath": "/host"}]}])


def restart(kube: Kube, node: str, *, namespace: str, image: str, run: Run, console: Console) -> Restarted:
    """One node: the pod runs systemctl, then the new kubelet's Starting event and a Ready Node confirm it."""
    before = _starts(kube, node)
    ended = run_to_end(kube, _manifest(node, namespace, image, run), what="kubelet restart", timeout=POD_TIMEOUT,
                       tail_lines=10)
    if ended.timed_out:
        return Restarted(node, "failed", f"`{' '.join(COMMAND)}` did not finish within {units.duration(POD_TIMEOUT)}")
    if not ended.succeeded:
        return Restarted(node, "failed", f"`{' '.join(COMMAND)}` failed: {ended.logs or ended.problem}")
    deadline = time.monotonic() + CONFIRM_TIMEOUT
    pause = pauses(1.0)  # two GETs a look; a restarted kubelet announces itself within moments, as a rule
    while time.monotonic() < deadline:
        new = _starts(kube, node) - before
        started = max((t for t in (_when(last) for _, _, last in new) if t is not None), default=None)
        if new and _ready(kube, node, started):
            return Restarted(node, "restarted", "a new kubelet started and reported the Node Ready")
        time.sleep(next(pause))
    return Restarted(node, "failed", f"systemctl succeeded, but no new \"Starting kubelet.\" event followed by a "
                                  f"Ready heartbeat within {units.duration(CONFIRM_TIMEOUT)}")


def restart_all(kube: Kube, *, namespace: str, image: str, run: Run, console: Console) -> list[Restarted]:
    """Every node, `PARALLEL` at a time: a kubelet restart leaves the pods running, so nodes need not wait for
    each other (a thousand nodes one by one would take hours)."""
    try:
        nodes = sorted(str(n["metadata"]["name"]) for n in kube.get("/api/v1/nodes").get("items") or [])
    except DrError as exc:
        return [Restarted("*", "failed", f"cannot list the nodes: {exc.message}")]
    console.say(f"restarting the kubelet on {count(len(nodes), 'node')}, {PARALLEL} at a time")
    with ThreadPoolExecutor(max_workers=min(PARALLEL, max(len(nodes), 1))) as pool:
        done = list(pool.map(lambda node: _one(kube, node, namespace, image, run, console), nodes))
    return done


def _one(kube: Kube, node: str, namespace: str, image: str, run: Run, console: Console) -> Restarted:
    try:
        if not _ready(kube, node, None):
            skipped = Restarted(node, "skipped", "the Node is not Ready: no kubelet answers there now, and the "
                                                 "one that comes back starts afresh")
            console.say(f"node {node}: {skipped.detail}")
            return skipped
        result = restart(kube, node, namespace=namespace, image=image, run=run, console=console)
    except DrError as exc:
        result = Restarted(node, "failed", exc.message)
    console.say(f"{'warning: ' if not result.ok else ''}node {node}: {result.detail}")
    return result
