"""CustomResourceDefinitions: what apiextensions-apiserver does when one is created, and serving its resource.

A real server accepts the definition, then its controllers set ``NamesAccepted`` and ``Established`` and
discovery starts listing the resource (clients wait for ``Established``). Here both happen as the
definition is stored: the status is written with the object and the registry serves the resource from
the same request on. Schemas are not enforced (objects are stored as given, as with
``x-kubernetes-preserve-unknown-fields``); conversion between versions is none (only apiVersion changes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.cluster.api import errors
from tests.cluster.api.errors import FieldError

if TYPE_CHECKING:
    from tests.cluster.api.store import Store

Json = dict[str, Any]
KEY = "customresourcedefinitions.apiextensions.k8s.io"
GROUP = "apiextensions.k8s.io"


def validate(crd: Json) -> None:
    """The checks clients meet first (apiextensions validation.ValidateCustomResourceDefinition, in part)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = crd["metadata"]["name"]
    problems: list[FieldError] = []
    for field in ("plural", "kind"):
        if not names.get(field):
            problems.append(FieldError("FieldValueRequired", f"spec.names.{field}", ""))
    if not spec.get("group"):
        problems.append(FieldError("FieldValueRequired", "spec.group", ""))
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        problems.append(FieldError("FieldValueInvalid", "metadata.name", 'must be spec.names.plural+"."+spec.group',
                                   name))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(FieldError("FieldValueNotSupported", "spec.scope",
                                   'supported values: "Cluster", "Namespaced"', spec.get("scope") or ""))
    versions = spec.get("versions") or []
    if not versions:
        problems.append(FieldError("FieldValueInvalid", "spec.versions", "must have exactly one version marked as "
                                   "storage version", []))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        problems.append(FieldError("FieldValueInvalid", "spec.versions", "must have exactly one version marked as "
                                   "storage version", "[]"))
    if problems:
        raise errors.invalid("CustomResourceDefinition", GROUP, name, problems)


def accepted_status(crd: Json, now: str) -> Json:
    """What the naming and establishing controllers write once the names are free."""
    spec = crd["spec"]
    names = dict(spec["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    conditions = [
        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
         "message": "no conflicts found"},
        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted"},
    ]
    return {"acceptedNames": names, "conditions": conditions,
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")]}


def prepare(crd: Json, now: str) -> None:
    """Defaults and status of a definition being created."""
    spec = crd.setdefault("spec", {})
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    validate(crd)
    crd["status"] = accepted_status(crd, now)


async def serve_stored(store: Store) -> None:
    """Serve every definition etcd holds (a server start), and nothing a restore took away."""
    crds, _ = await store.list(KEY)
    present = {crd["metadata"]["name"] for crd in crds}
    for name in set(store.registry.custom_crds.values()) - present:
        store.registry.forget_crd(name)
    for crd in crds:
        store.registry.serve_crd(crd)


async def remove_objects(store: Store, crd: Json) -> None:
    """Deleting a definition deletes its objects (the customresourcecleanup finalizer's work)."""
    key = f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
    if key not in store.registry.by_key:
        return
    items, _ = await store.list(key)
    for item in items:
        try:
            await store.delete(key, item["metadata"].get("namespace"), item["metadata"]["name"],
                               grace_period_seconds=0)
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
