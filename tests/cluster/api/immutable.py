"""Fields an update may not change, refused as the real validation refuses them (422 Invalid).

ValidatePersistentVolumeClaimUpdate, ValidateStatefulSetUpdate, ValidateJobUpdate and
ValidateDeploymentUpdate, for what restores run into: a claim's spec (only requests and the volume
attributes class may change), a StatefulSet's spec outside the fields it lists, a Job's selector and
template, a Deployment's selector.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.api.errors import FieldError

Json = dict[str, Any]
_STATEFULSET_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds")


def _without(spec: Json, keys: tuple[str, ...]) -> Json:
    return {k: v for k, v in spec.items() if k not in keys}


def immutable_errors(resource: str, current: Json, new: Json) -> list[FieldError]:
    old_spec = current.get("spec") or {}
    # A field the update leaves out is defaulted again by a real server before validation (volumeMode,
    # podManagementPolicy …): compare what it sets, with the rest as it was.
    new_spec = {**old_spec, **(new.get("spec") or {})}
    if resource == "persistentvolumeclaims":
        # Set once, as the real validation allows: volumeName (the binder binds a pending claim) and
        # storageClassName (a default class assigned retroactively).
        once = tuple(k for k in ("volumeName", "storageClassName") if not old_spec.get(k))

        def fixed(spec: Json) -> Json:
            out = _without(spec, ("volumeAttributesClassName", *once))
            out["resources"] = _without(spec.get("resources") or {}, ("requests",))
            return out

        if fixed(old_spec) != fixed(new_spec):
            return [FieldError("FieldValueForbidden", "spec", "spec is immutable after creation except "
                               "resources.requests and volumeAttributesClassName for bound claims")]
    if resource == "statefulsets.apps" and _without(old_spec, _STATEFULSET_MUTABLE) != _without(
            new_spec, _STATEFULSET_MUTABLE):
        return [FieldError("FieldValueForbidden", "spec", "updates to statefulset spec for fields other than "
                           "'replicas', 'ordinals', 'template', 'updateStrategy', "
                           "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")]
    problems = []
    if resource in ("jobs.batch", "deployments.apps") and new_spec.get("selector") != old_spec.get("selector"):
        problems.append(FieldError("FieldValueInvalid", "spec.selector", "field is immutable",
                                   new_spec.get("selector"), show_value=False))
    if resource == "jobs.batch" and new_spec.get("template") != old_spec.get("template"):
        problems.append(FieldError("FieldValueInvalid", "spec.template", "field is immutable",
                                   new_spec.get("template"), show_value=False))
    return problems
