"""The part of pod spec validation (pkg/apis/core/validation) that clients trip over in practice:
missing containers/images/names, duplicate names, volume mounts without a volume, restart policies.
Messages are apimachinery's field errors, so a 422 reads as it would from a real server."""

from __future__ import annotations

from typing import Any

from tests.cluster.api.errors import FieldError

Json = dict[str, Any]
_TEMPLATE_OWNERS = {"deployments.apps", "statefulsets.apps", "replicasets.apps", "daemonsets.apps",
                    "jobs.batch", "replicationcontrollers"}


def _spec_errors(spec: Json, path: str, restart_policies: tuple[str, ...],
                 extra_volumes: frozenset[str] = frozenset()) -> list[FieldError]:
    errors: list[FieldError] = []
    volumes = {v.get("name") for v in spec.get("volumes") or []} | extra_volumes
    containers = spec.get("containers") or []
    if not containers:
        errors.append(FieldError("FieldValueRequired", f"{path}.containers", ""))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            where = f"{path}.{group}[{i}]"
            name = c.get("name")
            if not name:
                errors.append(FieldError("FieldValueRequired", f"{where}.name", ""))
            elif name in seen:
                errors.append(FieldError("FieldValueDuplicate", f"{where}.name", "", name))
            else:
                seen.add(name)
            if not c.get("image"):
                errors.append(FieldError("FieldValueRequired", f"{where}.image", ""))
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    errors.append(FieldError("FieldValueNotFound", f"{where}.volumeMounts[{j}].name", "",
                                             mount.get("name")))
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in restart_policies:
        quoted = ", ".join(f'"{p}"' for p in restart_policies)
        errors.append(FieldError("FieldValueNotSupported", f"{path}.restartPolicy", f"supported values: {quoted}",
                                 policy))
    return errors


def pod_errors(resource: str, obj: Json) -> list[FieldError]:
    """Field errors of a new pod, or of a workload's pod template."""
    if resource == "pods":
        return _spec_errors(obj.get("spec") or {}, "spec", ("Always", "OnFailure", "Never"))
    if resource in _TEMPLATE_OWNERS:
        template = (obj.get("spec") or {}).get("template") or {}
        policies = ("OnFailure", "Never") if resource == "jobs.batch" else ("Always",)
        # A StatefulSet's volumeClaimTemplates become volumes of its pods.
        claims = frozenset((c.get("metadata") or {}).get("name", "")
                           for c in (obj.get("spec") or {}).get("volumeClaimTemplates") or [])
        return _spec_errors(template.get("spec") or {}, "spec.template.spec", policies, claims)
    return []
