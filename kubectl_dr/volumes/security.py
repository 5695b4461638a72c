"""The securityContext of a rescue pod: what the namespace's Pod Security level allows, what the job needs.

Root is what a faithful restore needs: only root can give restored files their archived owners and
read every file for a backup. The baseline level allows root; the restricted level does not, and then
the pod runs as the consumer's user (so the app can use what it writes) with every restricted
requirement met. What that costs is said, never silently accepted.

The consumer's fsGroup and supplementalGroups are copied for a restore so the kubelet gives the volume
the group ownership the app expects (and the app's next start would apply anyway). A backup sets no
fsGroup: on a volume mounted read-only the kubelet must not, and need not, change anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import ApiError
from kubectl_dr.kube.client import Kube

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
UNKNOWN = "unknown"  # we may not read the namespace: plan for root, adapt if admission says otherwise
NOBODY = 65534
IDENTITY_KEYS = ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "fsGroupChangePolicy")


@dataclass
class SecurityPlan:
    pod: dict[str, Any]
    container: dict[str, Any]
    root: bool
    level: str  # the namespace's enforced Pod Security level ("privileged" when unlabelled)
    notes: list[str] = field(default_factory=list)
    # What the plan was made from, so that a rejected pod can be planned again for the level admission named.
    identity: dict[str, Any] = field(default_factory=dict)
    write: bool = False

    def describe(self) -> dict[str, Any]:
        return {"podSecurityLevel": self.level, "root": self.root, "pod": self.pod, "container": self.container}


def namespace_level(kube: Kube, namespace: str) -> str:
    try:
        obj: dict[str, Any] = kube.get(f"/api/v1/namespaces/{namespace}")
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found') from None
        if exc.status == 403:
            return UNKNOWN  # reading namespaces is not needed otherwise; admission will tell us
        raise
    labels = (obj.get("metadata") or {}).get("labels") or {}
    level = str(labels.get(ENFORCE_LABEL) or PRIVILEGED)
    # Pod Security admission enforces "restricted" for a value it does not know ("Restricted", "strict", ...).
    return level if level in LEVELS else RESTRICTED


def consumer_identity(contexts: list[dict[str, Any]]) -> dict[str, Any]:
    """runAsUser/runAsGroup/fsGroup/supplementalGroups of the first consumer that sets them."""
    merged: dict[str, Any] = {}
    for sc in contexts:
        for key in IDENTITY_KEYS:
            if key not in merged and sc.get(key) is not None:
                merged[key] = sc[key]
    return merged


def plan(level: str, identity: dict[str, Any], *, write: bool) -> SecurityPlan:
    hardening = {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}}
    groups = [int(g) for g in identity.get("supplementalGroups") or []]
    fs_group = identity.get("fsGroup")
    # The app's own policy: with OnRootMismatch the kubelet leaves a volume whose root already matches as
    # it is, where the default would chgrp (and add group write to) every entry before the restore.
    policy = {"fsGroupChangePolicy": identity["fsGroupChangePolicy"]} if identity.get("fsGroupChangePolicy") else {}
    if level != RESTRICTED:
        pod: dict[str, Any] = {"runAsUser": 0, "runAsGroup": 0}
        if write and fs_group is not None:
            pod["fsGroup"] = int(fs_group)
            pod.update(policy)
        if groups:
            pod["supplementalGroups"] = groups
        return SecurityPlan(pod, dict(hardening), True, level, identity=dict(identity), write=write)

    uid = int(identity.get("runAsUser") or 0) or NOBODY
    gid = identity.get("runAsGroup")
    gid = int(gid) if gid is not None else int(fs_group) if fs_group is not None else uid
    pod = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        if write:
            pod["fsGroup"] = int(fs_group)
            pod.update(policy)
        elif int(fs_group) not in groups:
            groups = [int(fs_group), *groups]  # read the app's group-readable files without chgrp-ing them
    if groups:
        pod["supplementalGroups"] = groups
    container = {**hardening, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
    cost = (f"namespace enforces Pod Security \"restricted\": the rescue pod runs as uid {uid}, gid {gid}, "
            "without root")
    if write:
        cost += ("; restored files belong to that uid instead of their archived owners, and setuid bits "
                 "are not restored")
    else:
        cost += "; what that uid cannot read is named, and skipped only with --skip-unreadable"
    return SecurityPlan(pod, container, False, level, [cost], identity=dict(identity), write=write)


def replan(rejected: SecurityPlan) -> SecurityPlan | None:
    """A plan Pod Security admission accepts after it rejected `rejected`; None if there is none better.

    The root plan meets "baseline", so a rejection means the namespace is effectively "restricted" even
    though we could not see it (the namespace is unreadable to this user, or a cluster-wide default level
    applies to unlabelled namespaces). The restricted plan meets every level, so it cannot be improved on:
    a second rejection is reported as the cluster words it.
    """
    if not rejected.root:
        return None
    return plan(RESTRICTED, rejected.identity, write=rejected.write)
