"""Stopping and restarting the consumers of a claim, through `kubectl_dr.workloads`.

Scaling records the original replicas on each workload (an annotation) before it changes anything, and
registers the scale-back with the cleanup stack: however the command ends, the consumers come back, and
after a SIGKILL `kubectl dr scale restore` finds the records.
"""

from __future__ import annotations

from collections.abc import Callable

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.volumes.rescue_pod import OwnPod, own_pods
from kubectl_dr.workloads import Consumer, ScaleRecord, consumer_nodes, find_consumers, scale_down
from kubectl_dr.workloads.scaling import new_run_id

__all__ = ["Consumer", "ScaleRecord", "consumer_nodes", "consumers", "find_consumers", "placed", "refuse_unstoppable",
           "run_id", "stop"]


def consumers(kube: Kube, namespace: str, claim: str) -> tuple[list[Consumer], list[OwnPod]]:
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


def run_id(job: str) -> str:
    """Recorded on every workload a run scales, so `kubectl dr scale restore` can tell runs apart."""
    return f"{job}-{new_run_id()}"


def refuse_unstoppable(consumers: list[Consumer], namespace: str, claim: str, why: str) -> None:
    blocked = [c for c in consumers if not c.stoppable]
    if blocked:
        lines = "\n".join(f"  {c.ref}: {c.reason}" for c in blocked)
        raise DrError(f"cannot {why} {namespace}/{claim}: these consumers cannot be stopped by kubectl dr:\n{lines}",
                      hint="Stop them as described, then run the command again. Nothing was changed.")


def stop(kube: Kube, consumers: list[Consumer], *, run_id: str, reason: str,
         progress: Callable[[str], None], timeout: float = 300.0) -> ScaleRecord | None:
    """Scale every consumer to 0 and wait for their pods to be gone; None when there is nothing to stop."""
    if not consumers:
        return None
    return scale_down(kube, consumers, run_id=run_id, reason=reason, timeout=timeout, progress=progress)
