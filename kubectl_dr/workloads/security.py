"""The identity a consumer writes the volume with, for rescue pods that must write files it can read.

A rescue pod that restores files as root into a volume the app reads as uid 1000 leaves files the app
cannot open; one running with the app's fsGroup makes new files group-accessible the same way the
app's own do. So the rescue pod copies the pod-level fields that decide volume ownership, and the
uid/gid of the container that actually mounts the claim (a container's runAsUser/runAsGroup override
the pod's, as they do in the kubelet).
"""

from __future__ import annotations

from typing import Any

from kubectl_dr.workloads.specs import Json, claim_volume_names

POD_FIELDS = ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "fsGroupChangePolicy")
CONTAINER_FIELDS = ("runAsUser", "runAsGroup")


def mounting_container(pod_spec: Json, claim: str) -> Json | None:
    """The first container (init containers after the main ones) that mounts the claim."""
    volumes = set(claim_volume_names(pod_spec, claim))
    for container in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]:
        if any(m.get("name") in volumes for m in container.get("volumeMounts") or []):
            return dict(container)
    return None


def effective_security_context(pod_spec: Json, claim: str) -> dict[str, Any]:
    """A pod-level securityContext for a rescue pod: the pod's fields, the mounting container's uid/gid.

    Only fields that are set appear; `{}` means the consumer runs with the image's defaults.
    """
    pod_level = pod_spec.get("securityContext") or {}
    result: dict[str, Any] = {k: pod_level[k] for k in POD_FIELDS if pod_level.get(k) is not None}
    container = mounting_container(pod_spec, claim)
    if container is not None:
        container_level = container.get("securityContext") or {}
        result.update({k: container_level[k] for k in CONTAINER_FIELDS if container_level.get(k) is not None})
    return result
