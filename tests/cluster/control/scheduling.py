"""The scheduler's filter plugins as pure functions, with the real plugins' reasons and codes.

Each filter answers None (fits) or (reason, resolvable): `resolvable` tells whether preemption could
help, which decides the "preemption: …" part of the FitError message as in the real scheduler
(Unschedulable vs UnschedulableAndUnresolvable).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tests.cluster.control.objects import Json, match_expression

NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}

Reason = tuple[str, bool]


def tolerates(taint: Json, toleration: Json) -> bool:
    """v1.Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(taints: Iterable[Json], tolerations: list[Json], effects: tuple[str, ...]) -> Json | None:
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(taint, t) for t in tolerations):
            return taint
    return None


def tolerates_all(taints: Iterable[Json], tolerations: list[Json], effects: tuple[str, ...]) -> bool:
    return untolerated(taints, tolerations, effects) is None


def node_ready(node: Json) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def effective_taints(node: Json) -> list[Json]:
    """spec.taints plus what the node lifecycle controller would add for a node that is not Ready."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    keys = {t.get("key") for t in taints}
    if not node_ready(node) and NOT_READY_TAINT["key"] not in keys:
        taints.append(NOT_READY_TAINT)
    return taints


def node_selector_term_matches(node: Json, term: Json) -> bool:
    labels = node["metadata"].get("labels") or {}
    for expr in term.get("matchExpressions") or []:
        if not match_expression(labels.get(expr["key"]), expr["operator"], expr.get("values") or []):
            return False
    fields = {"metadata.name": node["metadata"]["name"]}
    for expr in term.get("matchFields") or []:
        if not match_expression(fields.get(expr["key"]), expr["operator"], expr.get("values") or []):
            return False
    return bool(term.get("matchExpressions") or term.get("matchFields"))


def node_selector_matches(node: Json, selector: Json | None) -> bool:
    """v1.NodeSelector: the terms are ORed; no terms match nothing."""
    if selector is None:
        return True
    return any(node_selector_term_matches(node, t) for t in selector.get("nodeSelectorTerms") or [])


def filter_node(pod: Json, node: Json, *, pvs_of_pod: list[Json], rwop_conflict: bool) -> Reason | None:
    """The first failing filter for this node, in the default profile's plugin order."""
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    if (node.get("spec") or {}).get("unschedulable") and not any(
            tolerates(UNSCHEDULABLE_TAINT, t) for t in tolerations):
        return "node(s) were unschedulable", False
    taint = untolerated(effective_taints(node), tolerations, ("NoSchedule", "NoExecute"))
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}", False
    labels = node["metadata"].get("labels") or {}
    selector_ok = all(labels.get(k) == v for k, v in (spec.get("nodeSelector") or {}).items())
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if not selector_ok or not node_selector_matches(node, required):
        return "node(s) didn't match Pod's node affinity/selector", False
    if rwop_conflict:
        return ("node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode",
                True)
    for pv in pvs_of_pod:
        pv_affinity = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")
        if pv_affinity and not node_selector_matches(node, pv_affinity):
            return "node(s) had volume node affinity conflict", False
    return None


def fit_error(total: int, reasons: list[Reason] | None, prefilter: str | None) -> str:
    """framework.FitError.Error() followed by the default preemption plugin's message."""
    msg = f"0/{total} nodes are available:"
    preempt: Counter[str] = Counter()
    if prefilter:
        msg += f" {prefilter}."
        preempt["Preemption is not helpful for scheduling"] = total
    else:
        counts = Counter(r for r, _ in reasons or [])
        if counts:
            msg += " " + ", ".join(sorted(f"{n} {r}" for r, n in counts.items())) + "."
        for _, resolvable in reasons or []:
            preempt["No preemption victims found for incoming pod" if resolvable
                    else "Preemption is not helpful for scheduling"] += 1
    if total:
        parts = ", ".join(sorted(f"{n} {r}" for r, n in preempt.items()))
        msg += f" preemption: 0/{total} nodes are available: {parts}."
    return msg
