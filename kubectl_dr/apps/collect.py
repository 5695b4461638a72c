"""Reading a namespace's objects for a backup: every listable namespaced type, the exclusions with
their reasons, and the cluster-scoped objects the namespace needs (recorded, restored where missing)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.apps.cleaning import clean, exclusion, ref
from kubectl_dr.apps.resources import Catalog, ResourceType
from kubectl_dr.errors import ApiError, DrError, UsageError
from kubectl_dr.kube.client import Kube

Json = dict[str, Any]
BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
                  "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
                  "events.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io", "node.k8s.io",
                  "certificates.k8s.io", "flowcontrol.apiserver.k8s.io", "resource.k8s.io",
                  "authorization.k8s.io", "authentication.k8s.io", "apiregistration.k8s.io",
                  "storagemigration.k8s.io", "internal.apiserver.k8s.io"}
LISTS_AT_ONCE = 4  # list requests side by side: enough to hide the round trips, not enough to load a server
# Kinds whose objects are always read (they decide what a restore needs), whatever -l says.
NAMESPACE_OBJECT = "namespaces"
# The only cluster-scoped kinds a namespace backup records (_dependencies: what its objects name), and so the
# only ones its restore creates: the repository cannot add another (a ClusterRoleBinding, a webhook).
RECORDED_CLUSTER_RESOURCES = frozenset({
    "customresourcedefinitions.apiextensions.k8s.io", "storageclasses.storage.k8s.io",
    "clusterroles.rbac.authorization.k8s.io", "priorityclasses.scheduling.k8s.io", "persistentvolumes"})


@dataclass
class Filters:
    selector: str | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def wants(self, rtype: ResourceType) -> bool:
        if self.include and not any(rtype.matches(w) for w in self.include):
            return False
        return not any(rtype.matches(w) for w in self.exclude)


@dataclass
class Collected:
    """What one namespace backup holds, before its claims' data."""

    objects: list[Json] = field(default_factory=list)  # cleaned, namespaced and cluster-scoped
    status: dict[str, Json] = field(default_factory=dict)  # ref → status, kept aside for the record
    excluded: list[Json] = field(default_factory=list)  # {"object": ref, "reason": ...}
    cluster_scoped: list[str] = field(default_factory=list)  # refs of the cluster-scoped objects recorded
    claims: list[Json] = field(default_factory=list)  # bound claims: {"namespace", "name", "storageClass"}


def check_filters(catalog: Catalog, filters: Filters) -> None:
    for word in [*filters.include, *filters.exclude]:
        if not any(t.matches(word) for t in catalog.types):
            raise UsageError(f'the server doesn\'t have a resource type "{word}"',
                             hint="`kubectl api-resources` lists them (plural, short or qualified names).")


def _listable(catalog: Catalog) -> list[ResourceType]:
    return [t for t in catalog.types if t.namespaced and {"list", "create"} <= t.verbs]


def collect(kube: Kube, catalog: Catalog, namespaces: list[str], filters: Filters) -> Collected:
    out = Collected()
    for namespace in namespaces:
        try:
            ns_obj = kube.get(f"/api/v1/namespaces/{namespace}")
        except ApiError as exc:
            if exc.status == 404:
                raise DrError(f'namespaces "{namespace}" not found',
                              hint="`kubectl get namespaces` lists them.") from None
            raise
        _keep(out, ns_obj, "Namespace", "v1")
        _collect_namespace(kube, catalog, namespace, filters, out)
    _dependencies(kube, catalog, out)
    return out


def _keep(out: Collected, obj: Json, kind: str, api_version: str) -> None:
    """Record an object just read from the server (ours alone: cleaned where it is)."""
    obj.setdefault("kind", kind)
    obj.setdefault("apiVersion", api_version)
    cleaned, status = clean(obj, in_place=True)
    if status:
        out.status[ref(cleaned)] = status
    out.objects.append(cleaned)


def _collect_namespace(kube: Kube, catalog: Catalog, namespace: str, filters: Filters, out: Collected) -> None:
    def read(rtype: ResourceType) -> list[Json] | ApiError:
        try:
            return list(kube.get(rtype.collection_path(namespace), labelSelector=filters.selector).get("items") or [])
        except ApiError as exc:
            if exc.status in (403, 404, 405):  # not ours to read, or gone since discovery: said in the record
                return exc
            raise

    wanted = [t for t in _listable(catalog) if filters.wants(t)]
    # A server lists dozens of namespaced types, most of them empty: each list is a round trip, so a few
    # go side by side (in discovery's order in the result, whatever order they answer in).
    with ThreadPoolExecutor(LISTS_AT_ONCE, "list") as pool:
        answers = list(pool.map(read, wanted))
    listed: list[tuple[ResourceType, Json]] = []
    for rtype, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, ApiError):
            out.excluded.append({"object": f"{rtype.name} in {namespace}",
                                 "reason": f"could not be listed: {answer.message}"})
            continue
        listed.extend((rtype, item) for item in answer)
    uids = {str(o["metadata"].get("uid")) for _, o in listed}
    with_selector = {o["metadata"]["name"] for t, o in listed if t.name == "services" and (o.get("spec") or {})
                     .get("selector")}
    for rtype, obj in listed:
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version
        why = exclusion(obj, uids, with_selector)
        if why:
            out.excluded.append({"object": ref(obj), "reason": why})
            continue
        if rtype.name == "persistentvolumeclaims" and (obj.get("status") or {}).get("phase") == "Bound":
            out.claims.append({"namespace": namespace, "name": obj["metadata"]["name"],
                               "storageClass": (obj.get("spec") or {}).get("storageClassName"),
                               "volumeName": (obj.get("spec") or {}).get("volumeName")})
        _keep(out, obj, rtype.kind, rtype.api_version)  # last: it cleans the object (its status goes aside)


def _template_specs(obj: Json) -> list[Json]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return [spec]
    if obj.get("kind") == "CronJob":
        return [((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec") or {}]
    return [(spec.get("template") or {}).get("spec") or {}]


def _dependencies(kube: Kube, catalog: Catalog, out: Collected) -> None:
    """The cluster-scoped objects the namespaces need, each recorded once."""
    wanted: list[tuple[str, str, str]] = []  # (qualified resource, name, why)
    for obj in list(out.objects):
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        rtype = catalog.for_object(obj)
        if rtype is not None and rtype.namespaced and group not in BUILTIN_GROUPS:
            wanted.append(("customresourcedefinitions.apiextensions.k8s.io", f"{rtype.plural}.{group}",
                           f"defines {obj['kind']}"))
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        if kind == "PersistentVolumeClaim" and spec.get("storageClassName"):
            wanted.append(("storageclasses.storage.k8s.io", spec["storageClassName"], "class of a claim"))
        if kind == "RoleBinding" and (obj.get("roleRef") or {}).get("kind") == "ClusterRole":
            wanted.append(("clusterroles.rbac.authorization.k8s.io", obj["roleRef"]["name"], "named by a RoleBinding"))
        for pod_spec in _template_specs(obj) if kind in ("Pod", "Deployment", "StatefulSet", "DaemonSet",
                                                          "ReplicaSet", "Job", "CronJob") else []:
            if pod_spec.get("priorityClassName"):
                wanted.append(("priorityclasses.scheduling.k8s.io", pod_spec["priorityClassName"], "used by pods"))
    for claim in out.claims:
        if claim.get("volumeName"):
            pv = _get(kube, catalog, "persistentvolumes", claim["volumeName"])
            if pv is not None and "pv.kubernetes.io/provisioned-by" not in (pv["metadata"].get("annotations") or {}):
                wanted.append(("persistentvolumes", claim["volumeName"], "statically bound to a claim"))
    seen: set[tuple[str, str]] = set()
    for resource, name, _why in wanted:
        if (resource, name) in seen:
            continue
        seen.add((resource, name))
        dependency = _get(kube, catalog, resource, name)
        if dependency is None:
            continue
        rtype = catalog.named(resource)
        assert rtype is not None and rtype.name in RECORDED_CLUSTER_RESOURCES, resource
        before = len(out.objects)
        _keep(out, dependency, rtype.kind, rtype.api_version)
        out.cluster_scoped.append(ref(out.objects[before]))


def _get(kube: Kube, catalog: Catalog, resource: str, name: str) -> Json | None:
    rtype = catalog.named(resource)
    if rtype is None:
        return None
    try:
        obj: Json = kube.get(rtype.object_path(None, name))
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise
    return obj
