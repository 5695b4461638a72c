"""Which workloads use a claim: every pod that mounts it, walked up to its controller, plus workloads
whose pod template mounts it but that run no pods right now (they could start one mid-restore).

Each consumer says whether kubectl dr can stop it (by setting its replicas to 0) and, if not, why and
what the user can do instead. Nothing here changes the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.workloads import kinds
from kubectl_dr.workloads.autoscalers import Autoscalers, load_autoscalers
from kubectl_dr.workloads.owners import Top, climb, describe_ref
from kubectl_dr.workloads.security import effective_security_context
from kubectl_dr.workloads.specs import (
    Json,
    consumer_pod_spec,
    controller_ref,
    job_finished,
    pod_uses_claim,
    template_uses_claim,
)


@dataclass(frozen=True)
class PodInfo:
    name: str
    node: str | None
    phase: str
    terminating: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "phase": self.phase, "terminating": self.terminating}


@dataclass
class Consumer:
    """A workload (or bare pod) that mounts the claim."""

    kind: str
    namespace: str
    name: str
    claim: str
    # spec.replicas of scalable kinds; None for kinds without replicas (DaemonSet, Job, CronJob, Pod).
    replicas: int | None
    pods: list[PodInfo] = field(default_factory=list)
    stoppable: bool = True
    # Why it cannot be stopped, and what the user can do about it (None when stoppable).
    reason: str | None = None
    # Things worth telling the user that do not block (an autoscaler that pauses at 0 replicas).
    notes: list[str] = field(default_factory=list)
    # The pod spec the consumer's pods run (the template, or the bare pod's own spec).
    pod_spec: Json = field(default_factory=dict, repr=False)

    @property
    def nodes(self) -> list[str]:
        return sorted({p.node for p in self.pods if p.node})

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def security_context(self) -> dict[str, Any]:
        """See `kubectl_dr.workloads.security.effective_security_context`."""
        return effective_security_context(self.pod_spec, self.claim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "namespace": self.namespace, "name": self.name, "claim": self.claim,
            "replicas": self.replicas, "pods": [p.to_dict() for p in self.pods], "nodes": self.nodes,
            "stoppable": self.stoppable, "reason": self.reason, "notes": list(self.notes),
            "securityContext": self.security_context(),
        }


def unstoppable_reason(top: Top, namespace: str) -> str | None:
    """Why kubectl dr must not try to stop this workload, with what the user can do; None if it can."""
    name = top.name
    if top.manager is not None:
        if top.manager_missing:
            return (f"its owner {describe_ref(top.manager)} no longer exists, so the pod is probably being "
                    f"garbage-collected; wait for it to go, or delete it: kubectl delete {top.kind.plural} "
                    f"{name} -n {namespace}")
        return (f"it is managed by {describe_ref(top.manager)}, which kubectl dr does not know how to scale and "
                f"which would undo a scale-down; stop it through that controller first")
    kind = top.kind.kind
    if kind == "DaemonSet":
        return ("kubectl dr cannot stop a DaemonSet (it has no replicas to scale); keep its pods off every node, "
                f"e.g. kubectl patch daemonset {name} -n {namespace} -p "
                "'{\"spec\":{\"template\":{\"spec\":{\"nodeSelector\":{\"kubectl-dr.io/stopped\":\"true\"}}}}}', "
                "and undo that afterwards")
    if kind == "Pod":
        return (f"it is a bare pod (no controller re-creates it), which kubectl dr cannot scale; delete it "
                f"(kubectl delete pod {name} -n {namespace}) and re-create it afterwards")
    if kind == "Job":
        return (f"kubectl dr cannot stop a Job; wait for it to finish, or suspend it: kubectl patch job {name} "
                f"-n {namespace} -p '{{\"spec\":{{\"suspend\":true}}}}'")
    if kind == "CronJob":
        return (f"kubectl dr cannot stop a CronJob; suspend it (kubectl patch cronjob {name} -n {namespace} -p "
                "'{\"spec\":{\"suspend\":true}}') and wait for its running jobs to finish")
    return None


class _Objects:
    """GETs with a cache: pods of one ReplicaSet all lead to the same objects."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._cache: dict[tuple[str, str], Json | None] = {}

    def fetch(self, kind: kinds.Kind, name: str) -> Json | None:
        key = (kind.kind, name)
        if key not in self._cache:
            try:
                obj: Json = self.kube.get(kind.object_path(self.namespace, name))
                obj.setdefault("kind", kind.kind)
                self._cache[key] = obj
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def list(self, kind: kinds.Kind) -> list[Json]:
        data = self.kube.get(kind.collection_path(self.namespace))
        items: list[Json] = data.get("items") or []
        for item in items:
            item.setdefault("kind", kind.kind)  # list items carry no kind on the wire
            self._cache[(kind.kind, item["metadata"]["name"])] = item
        return items


def require_claim(kube: Kube, namespace: str, claim: str) -> Json:
    """The claim, or an error that says whether the claim or its namespace is what does not exist."""
    try:
        pvc: Json = kube.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        return pvc
    except ApiError as exc:
        if exc.status != 404:
            raise
        try:
            namespace_exists = kube.exists(f"/api/v1/namespaces/{namespace}")
        except ApiError:  # a user who may not read namespaces still gets the claim's own message
            namespace_exists = True
        if not namespace_exists:
            raise DrError(f'namespaces "{namespace}" not found',
                          hint="Check the namespace (-n NAMESPACE); `kubectl get namespaces` lists them.") from None
        raise DrError(f'persistentvolumeclaims "{claim}" not found in namespace "{namespace}"',
                      hint=f"`kubectl get pvc -n {namespace}` lists the claims there.") from None


def find_consumers(kube: Kube, namespace: str, claim: str) -> list[Consumer]:
    """Every workload or bare pod in `namespace` that mounts `claim`, in a stable order.

    Raises DrError when the claim or the namespace does not exist.
    """
    require_claim(kube, namespace, claim)
    objects = _Objects(kube, namespace)
    found: dict[tuple[str, str], Consumer] = {}

    def add(top: Top) -> Consumer:
        key = (top.kind.kind, top.name)
        if key not in found:
            spec = top.obj.get("spec") or {}
            reason = unstoppable_reason(top, namespace)
            found[key] = Consumer(
                kind=top.kind.kind, namespace=namespace, name=top.name, claim=claim,
                replicas=int(spec.get("replicas", 1)) if top.kind.scalable else None,
                stoppable=reason is None, reason=reason,
                pod_spec=spec if top.kind is kinds.POD else consumer_pod_spec(top.obj, claim),
            )
        return found[key]

    for pod in objects.list(kinds.POD):
        if not pod_uses_claim(pod, claim):
            continue
        consumer = add(climb(kinds.POD, pod, objects.fetch))
        meta, status = pod["metadata"], pod.get("status") or {}
        consumer.pods.append(PodInfo(name=meta["name"], node=(pod.get("spec") or {}).get("nodeName"),
                                     phase=str(status.get("phase") or "Pending"),
                                     terminating=bool(meta.get("deletionTimestamp"))))

    for workload in _idle_template_users(objects, claim):
        add(climb(kinds.KINDS[workload["kind"]], workload, objects.fetch))

    consumers = sorted(found.values(), key=lambda c: kinds.order_key(c.kind, c.name))
    _apply_autoscalers(consumers, load_autoscalers(kube, namespace))
    for consumer in consumers:
        consumer.pods.sort(key=lambda p: p.name)
    return consumers


def _idle_template_users(objects: _Objects, claim: str) -> list[Json]:
    """Workloads whose template mounts the claim, including ones with no pods now.

    ReplicaSets of a Deployment and Jobs of a CronJob are covered by their parent's template; finished
    Jobs and suspended CronJobs start no pods, so they are left out.
    """
    result: list[Json] = []
    for kind in (kinds.STATEFULSET, kinds.DEPLOYMENT, kinds.REPLICASET, kinds.REPLICATIONCONTROLLER,
                 kinds.DAEMONSET, kinds.JOB, kinds.CRONJOB):
        for item in objects.list(kind):
            if not template_uses_claim(item, claim):
                continue
            parent = controller_ref(item)
            if kind is kinds.REPLICASET and parent and parent.get("kind") == "Deployment":
                continue
            if kind is kinds.JOB and (job_finished(item) or (parent and parent.get("kind") == "CronJob")):
                continue
            if kind is kinds.CRONJOB and (item.get("spec") or {}).get("suspend"):
                continue
            result.append(item)
    return result


def _apply_autoscalers(consumers: list[Consumer], autoscalers: Autoscalers) -> None:
    for consumer in consumers:
        if kinds.KINDS[consumer.kind].scalable:
            blocking, notes = autoscalers.verdict(consumer.kind, consumer.name)
            consumer.notes.extend(notes)
            if blocking and consumer.stoppable:
                consumer.stoppable, consumer.reason = False, blocking


def consumer_nodes(consumers: list[Consumer]) -> list[str]:
    """Every node a consumer's pod runs on (where an RWO volume is attached right now)."""
    return sorted({node for c in consumers for node in c.nodes})


def claim_security_context(consumers: list[Consumer]) -> dict[str, Any] | None:
    """The securityContext a rescue pod for the claim should copy; None when no consumer sets one.

    When consumers differ, the first in `find_consumers` order wins: StatefulSets, then Deployments,
    ReplicaSets, ReplicationControllers, DaemonSets, CronJobs, Jobs, bare pods, by name within a kind.
    The thinking: the long-running owner of the data decides who must be able to read it afterwards,
    and a one-off Job or a debugging pod does not. `security_context_conflicts` says when they differ.
    """
    for consumer in consumers:
        context = consumer.security_context()
        if context:
            return context
    return None


def security_context_conflicts(consumers: list[Consumer]) -> list[str]:
    """Human-readable lines, one per consumer whose securityContext differs from the chosen one."""
    chosen = claim_security_context(consumers) or {}
    return [f"{c.ref} runs with securityContext {c.security_context() or '{}'}, not {chosen}"
            for c in consumers if c.security_context() != chosen]
