"""Small helpers over plain JSON objects shared by the controllers."""

from __future__ import annotations

import copy
import datetime as dt
import json
import secrets
from typing import Any

Json = dict[str, Any]

# apimachinery's rand.String alphabet (no vowels, no ambiguous characters): generated names and
# pod-template-hash values look like the real ones.
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

# kind → the Store's resource name, for following ownerReferences.
KIND_RESOURCES = {
    ("v1", "Pod"): "pods",
    ("v1", "Node"): "nodes",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "ReplicationController"): "replicationcontrollers",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments.apps",
    ("apps/v1", "ReplicaSet"): "replicasets.apps",
    ("apps/v1", "StatefulSet"): "statefulsets.apps",
    ("apps/v1", "DaemonSet"): "daemonsets.apps",
    ("apps/v1", "ControllerRevision"): "controllerrevisions.apps",
    ("batch/v1", "Job"): "jobs.batch",
    ("batch/v1", "CronJob"): "cronjobs.batch",
}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(ALPHANUMS) for _ in range(n))


def safe_encode(value: int) -> str:
    """rand.SafeEncodeString of the decimal form, as controller.ComputeHash returns it."""
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in str(value))


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Json, collision_count: int = 0) -> str:
    # The real hash is FNV-32a over the Go struct dump; a dump of the JSON keeps the useful properties
    # (stable for equal templates, different for different ones, same alphabet and shape).
    data = json.dumps(template, sort_keys=True).encode() + str(collision_count).encode()
    return safe_encode(fnv32a(data))


def meta(obj: Json) -> Json:
    m: Json = obj.setdefault("metadata", {})
    return m


def uid(obj: Json) -> str:
    return str(obj["metadata"].get("uid", ""))


def controller_ref(owner: Json) -> Json:
    return {
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }


def controller_of(obj: Json) -> Json | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def drop_owner(obj: Json, owner_uid: str) -> bool:
    """Remove the owner reference to `owner_uid` from `obj` (the field too when none is left): whether one was
    there (an adoption released, a dependent orphaned)."""
    refs = obj["metadata"].get("ownerReferences") or []
    kept = [r for r in refs if r.get("uid") != owner_uid]
    if kept == refs:
        return False
    if kept:
        obj["metadata"]["ownerReferences"] = kept
    else:
        obj["metadata"].pop("ownerReferences", None)
    return True


def owned_by(objs: list[Json], owner: Json) -> list[Json]:
    want = uid(owner)
    return [o for o in objs if (ref := controller_of(o)) is not None and ref.get("uid") == want]


def by_namespace(objs: list[Json]) -> dict[str, list[Json]]:
    out: dict[str, list[Json]] = {}
    for o in objs:
        out.setdefault(o["metadata"].get("namespace", ""), []).append(o)
    return out


def matches_selector(labels: dict[str, str] | None, selector: Json | None) -> bool:
    """metav1.LabelSelector semantics: matchLabels AND every matchExpression; empty matches all."""
    labels = labels or {}
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        if not match_expression(labels.get(expr["key"]), expr["operator"], expr.get("values") or []):
            return False
    return True


def match_expression(value: str | None, op: str, values: list[str]) -> bool:
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def is_terminating(obj: Json) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def pod_phase(pod: Json) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_active(pod: Json) -> bool:
    """controller.IsPodActive: not terminal and not being deleted."""
    return pod_phase(pod) not in ("Succeeded", "Failed") and not is_terminating(pod)


def condition(obj: Json, type_: str) -> Json | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def pod_ready(pod: Json) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def set_condition(status: Json, type_: str, state: str, reason: str, message: str,
                  *, with_update_time: bool = False) -> None:
    """Replace a condition, keeping lastTransitionTime when the status does not change (as real)."""
    conditions: list[Json] = status.setdefault("conditions", [])
    ts = now()
    for c in conditions:
        if c.get("type") == type_:
            if c.get("status") != state:
                c["lastTransitionTime"] = ts
            if with_update_time and (c.get("reason") != reason or c.get("status") != state):
                c["lastUpdateTime"] = ts
            c.update(status=state, reason=reason, message=message)
            return
    new: Json = {"type": type_, "status": state}
    if with_update_time:
        new["lastUpdateTime"] = ts
    new.update(lastTransitionTime=ts, reason=reason, message=message)
    conditions.append(new)


def pod_from_template(owner: Json, template: Json, name: str, extra_labels: dict[str, str]) -> Json:
    tmeta = template.get("metadata") or {}
    pod_meta: Json = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": {**(tmeta.get("labels") or {}), **extra_labels},
        "ownerReferences": [controller_ref(owner)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


def scaled_int_or_percent(value: int | str | None, total: int, *, round_up: bool, default: str) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    v = default if value is None else value
    if isinstance(v, int):
        return v
    pct = int(str(v).rstrip("%"))
    scaled = total * pct / 100
    return int(-(-scaled // 1)) if round_up else int(scaled // 1)
