"""Talking to the target server for a restore: does an object exist, create and update it (optionally
as a server dry run), wait for a definition to be served."""

from __future__ import annotations

import time
from typing import Any

from kubectl_dr.apps.resources import ResourceType
from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.pauses import pauses

Json = dict[str, Any]
ESTABLISH_TIMEOUT = 120.0


def current(kube: Kube, rtype: ResourceType, obj: Json) -> Json | None:
    meta = obj["metadata"]
    try:
        found: Json = kube.get(rtype.object_path(meta.get("namespace"), meta["name"]))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return found


class Existing:
    """What exists in the target, one list per type and namespace (not a GET per object: a thousand
    objects are a few dozen requests)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.listed: dict[tuple[str, str | None], dict[str, Json]] = {}

    def find(self, rtype: ResourceType, obj: Json) -> Json | None:
        namespace = obj["metadata"].get("namespace") if rtype.namespaced else None
        key = (rtype.name, namespace)
        if key not in self.listed:
            items = self.kube.get(rtype.collection_path(namespace)).get("items") or []
            self.listed[key] = {i["metadata"]["name"]: i for i in items}
        return self.listed[key].get(obj["metadata"]["name"])


def create(kube: Kube, rtype: ResourceType, obj: Json, *, dry_run: bool) -> Json:
    query = {"dryRun": "All"} if dry_run else None
    created: Json = kube.request("POST", rtype.collection_path(obj["metadata"].get("namespace")), body=obj,
                                 query=query)
    return created


UPDATE_ATTEMPTS = 5  # a controller writing the object's status between our read and our PUT: read again


def update(kube: Kube, rtype: ResourceType, obj: Json, live: Json, *, dry_run: bool) -> Json:
    """PUT the backup's object over the live one. Its controller may write the live object (its status)
    between our read and the PUT, which the server answers 409 Conflict: read it again and retry, as
    kubectl apply does, since the backup's object replaces whatever the live one now holds."""
    meta = obj["metadata"]
    path = rtype.object_path(meta.get("namespace"), meta["name"])
    query = {"dryRun": "All"} if dry_run else None
    for attempt in range(1, UPDATE_ATTEMPTS + 1):
        body = dict(obj)
        body["metadata"] = {**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}
        bound = (live.get("spec") or {}).get("volumeName")
        if obj.get("kind") == "PersistentVolumeClaim" and bound and not (obj.get("spec") or {}).get("volumeName"):
            # The claim stays bound to its volume: a claim's spec is immutable but for its requests.
            body["spec"] = {**obj["spec"], "volumeName": bound}
        try:
            updated: Json = kube.request("PUT", path, body=body, query=query)
            return updated
        except ApiError as exc:
            if exc.status != 409 or exc.reason != "Conflict" or attempt == UPDATE_ATTEMPTS:
                raise
            fresh = current(kube, rtype, obj)
            if fresh is None:
                raise
            live = fresh
    raise AssertionError("unreachable")


def delete(kube: Kube, rtype: ResourceType, obj: Json) -> None:
    meta = obj["metadata"]
    try:
        kube.request("DELETE", rtype.object_path(meta.get("namespace"), meta["name"]))
    except ApiError as exc:
        if exc.status != 404:
            raise


def wait_established(kube: Kube, crd: Json, rtype: ResourceType) -> None:
    """Until the definition is Established and discovery serves its resource (Velero waits likewise)."""
    name = crd["metadata"]["name"]
    deadline = time.monotonic() + ESTABLISH_TIMEOUT
    pause = pauses(0.5)
    while time.monotonic() < deadline:
        live = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        established = any(c.get("type") == "Established" and c.get("status") == "True"
                          for c in (live.get("status") or {}).get("conditions") or [])
        if established:
            try:
                served = kube.get(f"/apis/{rtype.group}/{rtype.version}").get("resources") or []
            except ApiError as exc:
                if exc.status != 404:
                    raise
                served = []
            if any(r.get("name") == rtype.plural for r in served):
                return
        time.sleep(next(pause))
    raise DrError(f"the CustomResourceDefinition {name} was created but is not Established after "
                  f"{int(ESTABLISH_TIMEOUT)} s", hint=f"`kubectl describe crd {name}` says why (a names conflict?).")


def type_of_definition(crd: Json) -> ResourceType:
    """The resource a definition will serve, at its preferred (storage) version."""
    spec = crd["spec"]
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    version = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"] if versions else "v1")
    names = spec["names"]
    return ResourceType(spec["group"], version, names["plural"], names["kind"], spec.get("scope") == "Namespaced",
                        frozenset(("create", "get", "list", "update", "delete")), tuple(names.get("shortNames") or ()))
