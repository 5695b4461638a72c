"""`kubectl dr rook status`: every mon as Kubernetes and as Ceph see it, the operator, and what Rook reads.

Each mon's ``mon_status`` comes from its own admin socket (through an exec into its pod), which answers
without quorum; a mon whose pod does not run has a row that says why (its pod's state) instead.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.rook import monexec, objects
from kubectl_dr.rook.monexec import MonStatus

MAINTENANCE_LABEL = "kubectl-dr.io/maintenance"


@dataclass
class MonInfo:
    mon: str
    deployment: str
    replicas: int
    ready: int
    node: str | None
    address: str | None
    pod: str | None
    pod_state: str
    status: MonStatus | None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.status is not None

    def to_dict(self) -> dict[str, Any]:
        return {"mon": self.mon, "deployment": self.deployment, "replicas": self.replicas, "ready": self.ready,
                "node": self.node, "address": self.address, "pod": self.pod, "podState": self.pod_state,
                "running": self.running, "monStatus": self.status.to_dict() if self.status else None,
                "error": self.error}


@dataclass
class RookStatus:
    namespace: str
    mons: list[MonInfo]
    operator: dict[str, Any] | None
    endpoints: list[objects.Endpoint]
    mon_host: list[str]
    initial_members: list[str]
    fsid: str
    notes: list[str] = field(default_factory=list)

    @property
    def quorum(self) -> list[str]:
        seen: list[tuple[str, ...]] = [m.status.quorum for m in self.mons if m.status and m.status.in_quorum]
        if not seen:
            return []
        largest: tuple[str, ...] = max(seen, key=len)
        return sorted(largest)

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "fsid": self.fsid, "quorum": self.quorum,
                "mons": [m.to_dict() for m in self.mons], "operator": self.operator,
                "endpoints": {e.mon: e.address for e in self.endpoints}, "monHost": self.mon_host,
                "monInitialMembers": self.initial_members, "notes": self.notes}


def pod_state(pod: dict[str, Any] | None) -> str:
    """One word for a pod the way `kubectl get pods` shows STATUS (Running, CrashLoopBackOff, Pending…)."""
    if pod is None:
        return "no pod"
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return str(waiting.get("reason") or "Waiting")
    return str((pod.get("status") or {}).get("phase") or "Unknown")


def _pick_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    running = [p for p in live if (p.get("status") or {}).get("phase") == "Running"]
    chosen = running or live or pods
    return chosen[0] if chosen else None


def mon_pod(objs: objects.Objects, deployment: dict[str, Any]) -> dict[str, Any] | None:
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    # A maintenance copy's pods carry the mon's labels too (its selector is a superset): not the mon's.
    return _pick_pod([p for p in objs.pods(selector) if MAINTENANCE_LABEL not in (p["metadata"].get("labels") or {})])


def ask(kube: Kube, namespace: str, pod: dict[str, Any] | None, mon: str) -> tuple[MonStatus | None, str | None]:
    if pod is None or (pod.get("status") or {}).get("phase") != "Running":
        return None, f"pod {pod_state(pod)}"
    try:
        return monexec.mon_status(kube, namespace, pod["metadata"]["name"], mon), None
    except DrError as exc:
        return None, exc.message


def gather(kube: Kube, namespace: str, operator_namespace: str | None = None) -> RookStatus:
    objs = objects.Objects(kube, namespace, operator_namespace)
    cm = objs.find("configmaps", objects.ENDPOINTS)
    if cm is None and not objs.mon_deployments():
        raise DrError(f"no Rook-Ceph mons in namespace {namespace}: neither ConfigMap {objects.ENDPOINTS} nor "
                      "Deployments labelled app=rook-ceph-mon", hint="Give the CephCluster's namespace with -n.")
    endpoints = objects.parse_endpoints(str(((cm or {}).get("data") or {}).get("data") or ""))
    config = objs.find("secrets", objects.CONFIG_SECRET) or {}
    mon_secret = objs.find("secrets", objects.MON_SECRET) or {}
    deployments = objs.mon_deployments()
    by_endpoint = {e.mon: e.address for e in endpoints}
    notes: list[str] = []
    names = sorted(set(deployments) | set(by_endpoint))
    pods = {mon: mon_pod(objs, deployments[mon]) if mon in deployments else None for mon in names}
    with ThreadPoolExecutor(max(len(names), 1)) as pool:
        asked = {mon: pool.submit(ask, kube, namespace, pods[mon], mon) for mon in names}
        answers = {mon: f.result() for mon, f in asked.items()}
    mons = []
    for mon in names:
        d = deployments.get(mon)
        pod = pods[mon]
        node = ((pod or {}).get("spec") or {}).get("nodeName") or (
            ((d or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("nodeSelector") or {}
        ).get("kubernetes.io/hostname")
        status, error = answers[mon]
        mons.append(MonInfo(mon=mon, deployment=d["metadata"]["name"] if d else "-", replicas=objects.replicas(d),
                            ready=objects.ready(d), node=node, address=by_endpoint.get(mon),
                            pod=pod["metadata"]["name"] if pod else None, pod_state=pod_state(pod),
                            status=status, error=error))
        if d is None:
            notes.append(f"mon {mon} is in {objects.ENDPOINTS} but has no Deployment")
        if mon not in by_endpoint:
            notes.append(f"mon {mon} has a Deployment but no entry in {objects.ENDPOINTS}")
    op = objs.operator()
    operator = None if op is None else {"namespace": objs.operator_namespace, "name": objects.OPERATOR,
                                        "replicas": objects.replicas(op), "ready": objects.ready(op)}
    if op is None:
        notes.append(f"no Deployment {objects.OPERATOR} in namespace {objs.operator_namespace}")
    maintenance = [m for m in names if objs.find("deployments", f"rook-ceph-mon-{m}-maintenance")]
    for m in maintenance:
        notes.append(f"mon {m} has a maintenance Deployment rook-ceph-mon-{m}-maintenance")
    return RookStatus(namespace=namespace, mons=mons, operator=operator, endpoints=endpoints,
                      mon_host=objects.split_mon_host(objects.decode(config, "mon_host")),
                      initial_members=[m for m in objects.decode(config, "mon_initial_members").split(",") if m],
                      fsid=objects.decode(mon_secret, "fsid"), notes=notes)
