"""What a backup leaves out (each with its reason) and how a kept object is cleaned for a restore.

Left out are the objects a restore must not create: what controllers make again from another object
in the backup (creating them too would fight the controller, or run a pod twice), records of the past
(Events, finished Pods and Jobs), credentials the cluster issues (service-account tokens), and what
kubectl dr itself runs. Cleaned are the fields the server owns: a restore that sent them would be
refused (resourceVersion), or would carry another cluster's identity (uid, ownerReferences).
"""

from __future__ import annotations

import copy
from typing import Any

Json = dict[str, Any]

# The server's fields; status is kept aside in the backup's record, never sent back.
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                 "deletionGracePeriodSeconds", "managedFields", "selfLink", "ownerReferences")
# Kinds never backed up, whatever the flags say.
NEVER = {
    ("", "Event"): "events are a record of what happened, not state to restore",
    ("events.k8s.io", "Event"): "events are a record of what happened, not state to restore",
    ("", "Binding"): "bindings are an action on a pod, not an object",
    ("authorization.k8s.io", "LocalSubjectAccessReview"): "a question to the server, not an object",
}
# Controllers that make these kinds from the named owner kinds (the owner is in the backup).
MADE_BY = {
    "Pod": ("ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"),
    "ReplicaSet": ("Deployment",),
    "Job": ("CronJob",),
    "ControllerRevision": ("StatefulSet", "DaemonSet"),
}
OWN_LABEL = ("app.kubernetes.io/managed-by", "kubectl-dr")
ROOT_CA = "kube-root-ca.crt"


def ref(obj: Json) -> str:
    """KIND/NAME, with the namespace when there is one: how the record and the summary name an object."""
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{where}{meta.get('name')}"


def _group(obj: Json) -> str:
    return str(obj.get("apiVersion", "")).rpartition("/")[0]


def _controller(obj: Json) -> Json | None:
    return next((o for o in (obj.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")), None)


def _finished(obj: Json) -> bool:
    if obj.get("kind") == "Pod":
        return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    if obj.get("kind") == "Job":
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (obj.get("status") or {}).get("conditions") or [])
    return False


def exclusion(obj: Json, uids: set[str], services_with_selector: set[str]) -> str | None:
    """Why ``obj`` stays out of the backup, or None to keep it. ``uids``: every object of the backup's
    namespaces (owners are found by uid); ``services_with_selector``: names of Services with a selector."""
    kind = str(obj.get("kind", ""))
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    never = NEVER.get((_group(obj), kind))
    if never:
        return never
    owner = _controller(obj)
    if owner and owner.get("kind") in MADE_BY.get(kind, ()) and owner.get("uid") in uids:
        return (f"made by the {owner['kind']} controller from {owner['kind']}/{owner.get('name')}, which the restore "
                "brings back (or its own owner does)")
    if kind == "Pod" and "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return "a mirror pod: the kubelet makes it for a static pod of a node"
    if _finished(obj):
        return f"a finished {kind} (a record of a past run; restoring it would not run it again)"
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        return "a service-account token: the cluster issues tokens of its own"
    if kind == "EndpointSlice" and labels.get("endpointslice.kubernetes.io/managed-by") == \
            "endpointslice-controller.k8s.io":
        return "made by the EndpointSlice controller from its Service"
    if kind == "Endpoints" and meta.get("name") in services_with_selector:
        return "made by the endpoints controller from its Service's selector"
    if kind == "ConfigMap" and meta.get("name") == ROOT_CA:
        return "published into every namespace by the cluster (its own CA)"
    if labels.get(OWN_LABEL[0]) == OWN_LABEL[1] and kind in ("Pod", "Lease"):
        return f"kubectl dr's own {kind.lower()} (a run in progress)"
    return None


def clean(obj: Json, *, in_place: bool = False) -> tuple[Json, Json | None]:
    """The object as a restore creates it (server fields removed), and its status kept aside.

    ``in_place``: ``obj`` is the caller's own (just read off a list) and is cleaned as it is, not copied
    (a namespace backup of a thousand objects spent more on the copies than on the list requests)."""
    out = obj if in_place else copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for key in SERVER_FIELDS:
        meta.pop(key, None)
    if meta.get("name"):
        meta.pop("generateName", None)
    status = out.pop("status", None)
    return out, status
