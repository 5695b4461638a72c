"""How a job reaches a claim's volume, decided once, before anything changes: the access plan.

Every pod-based job (backup, restore, rescue, diff) starts here: the claim, its consumers (kubectl
dr's own pods are never consumers), whether they must be stopped for this job, the node a rescue pod
must run on, and the identity it runs with. The plan changes nothing; `exposer.Exposure` carries it
out (lease, consumers, pod) and always cleans up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.volumes import security
from kubectl_dr.volumes.claims import Claim, get_claim, require_nodes_ready
from kubectl_dr.volumes.rescue_pod import OwnPod, own_pods
from kubectl_dr.volumes.security import SecurityPlan
from kubectl_dr.workloads import Consumer, consumer_nodes, find_consumers

BACKUP, RESTORE, RESCUE, DIFF = "back up", "restore", "open a rescue shell for", "compare"


@dataclass
class AccessPlan:
    job: str
    claim: Claim
    consumers: list[Consumer]
    own: list[OwnPod]
    stop: bool  # the consumers are stopped for the job (and started again after it)
    why_stop: str
    node: str | None  # where the rescue pod must run; None lets the scheduler choose
    security: SecurityPlan
    read_only: bool
    notes: list[str] = field(default_factory=list)

    @property
    def running(self) -> list[Consumer]:
        return [c for c in self.consumers if c.pods]

    @property
    def quiet(self) -> bool:
        """Nothing but this job can write the volume while it runs (nothing runs, or it was stopped)."""
        return self.stop or not self.running

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim.describe(), "pending": self.claim.pending,
            "consumers": [c.to_dict() for c in self.consumers], "stopConsumers": self.stop,
            "why": self.why_stop or None, "node": self.node, "readOnly": self.read_only,
            "securityContext": self.security.describe(), "leftoverPods": [p.to_dict() for p in self.own],
        }


def refs(consumers: list[Consumer]) -> str:
    return ", ".join(c.ref for c in consumers)


def them(consumers: list[Consumer]) -> str:
    """The pronoun a plan's "start … again" takes: one workload is "it"."""
    return "it" if len(consumers) == 1 else "them"


def accepted(scaled: bool) -> str:
    """What a server dry run sent and the API server accepted: the pod, and scale changes only where there are."""
    return "the API server accepted the pod" + (" and the scale changes" if scaled else "")


def consumers_of(kube: Kube, namespace: str, claim: str) -> tuple[list[Consumer], list[OwnPod]]:
    """The claim's consumers, and kubectl dr's own pods that mount it (never taken for consumers).

    Our pods are recognised by their `app.kubernetes.io/managed-by=kubectl-dr` label. They are listed
    before and after the consumers, so one created or deleted in between is still recognised.
    """
    before = own_pods(kube, namespace, claim)
    found = find_consumers(kube, namespace, claim)
    own = {p.name: p for p in [*before, *own_pods(kube, namespace, claim)]}
    return [c for c in found if not (c.kind == "Pod" and c.name in own)], sorted(own.values(), key=lambda p: p.name)


def placed(running: list[Consumer]) -> dict[str, list[str]]:
    """node → the consumers with a pod there."""
    where: dict[str, list[str]] = {}
    for consumer in running:
        for node in consumer.nodes:
            where.setdefault(node, []).append(consumer.ref)
    return where


def refuse_unstoppable(consumers: list[Consumer], namespace: str, claim: str, why: str) -> None:
    blocked = [c for c in consumers if not c.stoppable]
    if blocked:
        lines = "\n".join(f"  {c.ref}: {c.reason}" for c in blocked)
        raise DrError(f"cannot {why} {namespace}/{claim}: these consumers cannot be stopped by kubectl dr:\n{lines}",
                      hint="Stop them as described, then run the command again. Nothing was changed.")


def plan_access(kube: Kube, namespace: str, claim_name: str, *, job: str, read_only: bool,
                quiesce: bool = False) -> AccessPlan:
    claim = get_claim(kube, namespace, claim_name, allow_pending=job == RESTORE)
    consumers, own = consumers_of(kube, namespace, claim_name)
    running = [c for c in consumers if c.pods]
    if job == RESTORE:
        stop, why = bool(consumers), "a restore must not write under a running app"
    elif quiesce:
        stop, why = bool(consumers), "--quiesce"
    elif running and claim.single_pod and job in (BACKUP, DIFF):
        stop, why = True, "the claim is ReadWriteOncePod: one pod at a time"
    elif running and claim.single_pod:
        raise DrError(f"{namespace}/{claim_name} is ReadWriteOncePod and in use by "
                      f"{', '.join(c.ref for c in running)}: a second pod cannot mount it",
                      hint="Pass --quiesce to stop the consumers for the duration of the session.")
    else:
        stop, why = False, ""
    notes: list[str] = []
    node = None
    if stop:
        refuse_unstoppable(consumers, namespace, claim_name, job)
        require_nodes_ready(kube, claim, placed(running), job)
    elif claim.single_node and not claim.pending:
        nodes = consumer_nodes(running)
        if len(nodes) > 1:
            notes.append(f"ReadWriteOnce claim used on several nodes ({', '.join(nodes)}); using {nodes[0]}")
        if not nodes:
            # No consumer runs, but a pod of ours may still hold the volume on its node: the new pod goes
            # there, where the volume is, instead of waiting for it to detach.
            nodes = sorted({p.node for p in own if p.node and p.phase in ("Pending", "Running")})
        node = nodes[0] if nodes else None
        if node:
            require_nodes_ready(kube, claim, {node: placed(running).get(node) or [p.name for p in own]}, job)
    identity = security.consumer_identity([c.security_context() for c in consumers])
    sec = security.plan(security.namespace_level(kube, namespace), identity, write=not read_only)
    return AccessPlan(job, claim, consumers, own, stop, why, node, sec, read_only, notes + list(sec.notes))
