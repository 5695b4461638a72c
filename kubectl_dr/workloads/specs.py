"""Pure functions on plain API objects: which claim a pod spec mounts, and who controls an object.

Kept free of any API call so the rules (which pods count, how StatefulSet claims are named, which
owner reference is the controlling one) are unit-tested on dicts.
"""

from __future__ import annotations

import re
from typing import Any

Json = dict[str, Any]

# Pods in these phases have stopped all their containers: the kubelet has unmounted their volumes
# (or will, without the pod ever running again), so they no longer use the claim.
FINISHED_PHASES = ("Succeeded", "Failed")


def claim_volume_names(pod_spec: Json, claim: str) -> list[str]:
    """Names of the pod spec's volumes that are the claim (generic ephemeral volumes are out of scope)."""
    return [
        str(v.get("name", ""))
        for v in pod_spec.get("volumes") or []
        if ((v.get("persistentVolumeClaim") or {}).get("claimName")) == claim
    ]


def mounts_claim(pod_spec: Json, claim: str) -> bool:
    return bool(claim_volume_names(pod_spec, claim))


def pod_uses_claim(pod: Json, claim: str) -> bool:
    """A pod that holds the volume: it references the claim and has not finished.

    A terminating pod (deletionTimestamp set) still counts: its containers may be writing until the
    grace period ends, which is exactly what a restore must not overlap with.
    """
    phase = (pod.get("status") or {}).get("phase")
    return phase not in FINISHED_PHASES and mounts_claim(pod.get("spec") or {}, claim)


def statefulset_claim_ordinal(sts: Json, claim: str) -> int | None:
    """The ordinal whose volumeClaimTemplates claim is `claim` (TEMPLATE-STS-ORDINAL), or None."""
    name = sts["metadata"]["name"]
    for tmpl in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
        prefix = f"{(tmpl.get('metadata') or {}).get('name', '')}-{name}-"
        if claim.startswith(prefix) and re.fullmatch(r"0|[1-9][0-9]*", claim[len(prefix):]):
            return int(claim[len(prefix):])
    return None


def template_spec(workload: Json) -> Json:
    """The pod spec a workload creates pods from (CronJob: through its job template)."""
    spec = workload.get("spec") or {}
    if workload.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def consumer_pod_spec(workload: Json, claim: str) -> Json:
    """The pod spec the workload's pods run with, as far as the claim is concerned.

    A StatefulSet's template names its claim templates only in volumeMounts; the controller adds the
    volume (replacing a template volume of the same name) when it creates pod N. Do the same for the
    claim asked about, so that "which container mounts the claim" has an answer.
    """
    spec = template_spec(workload)
    if workload.get("kind") != "StatefulSet" or statefulset_claim_ordinal(workload, claim) is None:
        return spec
    name = workload["metadata"]["name"]
    for tmpl in (workload.get("spec") or {}).get("volumeClaimTemplates") or []:
        volume = str((tmpl.get("metadata") or {}).get("name", ""))
        if claim.startswith(f"{volume}-{name}-"):
            volumes = [v for v in spec.get("volumes") or [] if v.get("name") != volume]
            volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim}})
            return {**spec, "volumes": volumes}
    return spec


def template_uses_claim(workload: Json, claim: str) -> bool:
    if workload.get("kind") == "StatefulSet" and statefulset_claim_ordinal(workload, claim) is not None:
        return True
    return mounts_claim(template_spec(workload), claim)


def controller_ref(obj: Json) -> Json | None:
    """The ownerReference with `controller: true` (at most one exists), as the controllers use it."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def job_finished(job: Json) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
